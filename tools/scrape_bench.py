#!/usr/bin/env python3
"""Prometheus scrape time with many queues: starts `amqpd` (a subprocess, as deployed),
declares the queues on one pika channel (one message in every tenth), then scrapes each
path over HTTP several times and prints the median and worst time and the size.

    tools/scrape_bench.py [--queues 10000] [--scrapes 7] [--prometheus-client]

`--prometheus-client` also times prometheus_client (generate_latest on a registry whose
collector yields the same per-queue families) against amqpd's hand formatting, in this
process, on the same 10,000 rows: the reason amqpd does not use it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.system import free_port
from tests.support.broker_process import BrokerProcess

PATHS = (
    "/metrics",
    "/metrics/per-object",
    "/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count",
)


def declare(url: str, queues: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for index in range(queues):
        channel.queue_declare(f"bench-{index:05d}")
        if index % 10 == 0:
            channel.basic_publish("", f"bench-{index:05d}", b"x")
    connection.close()


def scrape(base: str, path: str, scrapes: int, gzipped: bool) -> tuple[list[float], int, int]:
    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    times: list[float] = []
    size = wire = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(scrapes):
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            times.append(time.perf_counter() - started)
            response.raise_for_status()
            size = len(response.content)
            wire = int(response.headers.get("content-length", size))
    return times, size, wire


def compare_prometheus_client(rows: int, rounds: int) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector

    names = [f"bench-{index:05d}" for index in range(rows)]
    values = list(range(rows))
    gauges = ("ready", "unacked", "messages", "consumers")
    counters = ("published", "delivered_ack", "delivered", "get_ack", "get", "redelivered", "acked")

    class Queues(Collector):
        def collect(self) -> Iterator[Metric]:
            for name in gauges:
                family = GaugeMetricFamily(f"q_{name}", "help", labels=("vhost", "queue"))
                for queue, value in zip(names, values, strict=True):
                    family.add_metric(("/", queue), value)
                yield family
            for name in counters:
                counter = CounterMetricFamily(f"q_{name}", "help", labels=("vhost", "queue"))
                for queue, value in zip(names, values, strict=True):
                    counter.add_metric(("/", queue), value)
                yield counter

    registry = CollectorRegistry()
    registry.register(Queues())

    def by_hand() -> bytes:
        out: list[str] = []
        labels = [f'{{vhost="/",queue="{queue}"}}' for queue in names]
        for name in (*gauges, *counters):
            out.append(f"# TYPE q_{name} gauge\n# HELP q_{name} help\n")
            out.append(
                "".join(
                    [
                        f"q_{name}{label} {value}\n"
                        for label, value in zip(labels, values, strict=True)
                    ]
                )
            )
        return "".join(out).encode()

    for title, make in (
        ("prometheus_client", lambda: generate_latest(registry)),
        ("by hand", by_hand),
    ):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            make()
            times.append(time.perf_counter() - started)
        print(
            f"{title}: {rows} queues x 11 families: median {statistics.median(times) * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=7)
    parser.add_argument("--prometheus-client", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        broker = BrokerProcess(Path(data_dir), ["--management-port", str(port)]).start()
        try:
            started = time.perf_counter()
            declare(broker.url, args.queues)
            print(f"declared {args.queues} queues in {time.perf_counter() - started:.1f} s")
            base = f"http://127.0.0.1:{port}"
            for path in PATHS:
                for gzipped in (False, True):
                    times, size, wire = scrape(base, path, args.scrapes, gzipped)
                    encoding = "gzip" if gzipped else "identity"
                    print(
                        f"{path} ({encoding}): median {statistics.median(times) * 1000:.0f} ms, "
                        f"worst {max(times) * 1000:.0f} ms, {size} bytes ({wire} on the wire)"
                    )
        finally:
            broker.stop()
    if args.prometheus_client:
        compare_prometheus_client(args.queues, 5)


if __name__ == "__main__":
    main()
