#!/usr/bin/env python3
"""Deep-backlog benchmark: fill a durable queue with millions of persistent messages, then
report the broker's memory, its restart (recovery) time and the drain rate, beside the
rates of shallow queues; for amqpd and, if named, for RabbitMQ in the same run.

    tools/backlog_bench.py --perf /path/to/amqp-perf --messages 10000000 \\
        [--rabbitmq amqp://guest:guest@127.0.0.1:5680/%2f]

Uses amqp-perf (../shared/tools/amqp-perf, built with `make`) for the load, and runs
amqpd from this checkout. For each broker:
  1. fill: one producer, persistent 100-byte messages, confirms (1000 outstanding);
  2. the broker's RSS and peak RSS with the backlog in place;
  3. restart (amqpd: SIGTERM and start again; RabbitMQ: `rabbitmqctl stop`, then
     `rabbitmq-server -detached` on the URL's port): time until the queue answers a
     passive declare with the whole backlog;
  4. drain the deep queue for --drain-s seconds: the median per-second consume rate
     (the first second and the one the queue ran dry in left out), RSS meanwhile;
  5. a shallow queue in flow: one producer and one consumer together for 10 s,
     persistent messages with confirms, the queue near empty throughout.
amqpd also gets a shallow drain: a fresh broker that keeps --shallow-messages in memory,
drained the same way as the deep queue.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker_process import BrokerProcess  # noqa: E402

QUEUE = "backlog"
FLOW_QUEUE = "backlog-flow"


def perf(
    binary: Path, url: str, *args: str, queue: str = QUEUE, progress: bool = False
) -> dict[str, str]:
    """Run amqp-perf; its summary line as a dict. With progress, also "con_steady": the
    median per-second consume rate, leaving out the first second (connecting) and the
    last ones (the queue ran dry), so a short drain is measured while it is busy."""
    reporting = ["-i", "1"] if progress else ["-i", "0", "--quiet"]
    result = subprocess.run(
        [str(binary), "-h", url, "-u", queue, "-s", "100", *reporting, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    values = dict(pair.split("=", 1) for pair in last.split() if "=" in pair)
    if result.returncode not in (0,) or values.get("errors", "0") != "0":
        print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"amqp-perf failed ({result.returncode})")
    if progress:
        rates = [float(m) for m in re.findall(r"con\s+(\d+) msg/s", result.stderr)]
        while rates and rates[-1] == 0:
            rates.pop()
        busy = rates[1:-1]  # the last non-zero second is the one the queue ran dry in
        if not busy:
            raise SystemExit("the drain was too short to measure: use more messages")
        values["con_steady"] = str(statistics.median(busy))
    return values


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss / 1024, peak / 1024


def queue_depth(url: str, queue: str) -> int | None:
    """The queue's message count, or None while the broker does not answer."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError:
        return None
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    except pika.exceptions.AMQPError:
        return None
    finally:
        if connection.is_open:
            connection.close()


def delete_queue(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    connection.channel().queue_delete(queue)
    connection.close()


class Amqpd:
    name = "amqpd"

    def __init__(self, work: Path) -> None:
        config = work / "amqpd.yaml"
        config.write_text("listeners: [{bind: 127.0.0.1, port: 0}]\nlog_level: info\n")
        self.data_dir = work / "deep"
        self.process = BrokerProcess(self.data_dir, ["--config", str(config)]).start()

    @property
    def url(self) -> str:
        return self.process.url

    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.data_dir.rglob("*") if f.is_file())

    def restart(self) -> str:
        assert self.process.restart(start_timeout_s=1800) == 0
        lines = self.process.lines
        return next((line for line in lines if "recovered" in line and "queue" in line), "")

    def stop(self) -> None:
        self.process.stop()


class RabbitMQ:
    name = "rabbitmq"

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = urlparse(url).port or 5672
        delete_queue(url, QUEUE)

    def pid(self) -> int:
        return int(subprocess.check_output(["pgrep", "-f", "beam.smp"]).split()[0])

    def disk_bytes(self) -> int:
        mnesia = Path("/var/lib/rabbitmq/mnesia")
        return sum(f.stat().st_size for f in mnesia.rglob("*") if f.is_file())

    def restart(self) -> str:
        subprocess.run(["rabbitmqctl", "stop"], check=True, capture_output=True)
        env = {**os.environ, "RABBITMQ_NODE_PORT": str(self.port)}
        subprocess.run(["rabbitmq-server", "-detached"], check=True, env=env)
        return ""

    def stop(self) -> None:
        delete_queue(self.url, QUEUE)


def measure(broker: Amqpd | RabbitMQ, args: argparse.Namespace) -> dict[str, float]:
    name = broker.name
    started = time.monotonic()
    perf(
        args.perf, broker.url,
        "-x", "1", "--pub-only", "-C", str(args.messages), "-z", "0",
        "-c", "1000", "-f", "persistent", "--declare", "--durable",
    )  # fmt: skip
    fill_s = time.monotonic() - started
    rss, peak = rss_mb(broker.pid())
    print(
        f"{name} fill: {args.messages} messages in {fill_s:.0f} s = "
        f"{args.messages / fill_s:,.0f} msg/s; RSS {rss:.0f} MB, peak {peak:.0f} MB; "
        f"on disk {broker.disk_bytes() / 1e9:.2f} GB"
    )
    results = {"fill": args.messages / fill_s, "fill_rss": rss}

    restart_started = time.monotonic()
    recovered = broker.restart()
    while queue_depth(broker.url, QUEUE) != args.messages:
        if time.monotonic() - restart_started > 1800:
            raise SystemExit(f"{name} did not recover the backlog within 30 minutes")
        time.sleep(0.5)
    restart_s = time.monotonic() - restart_started
    rss, peak = rss_mb(broker.pid())
    print(f"{name} restart: backlog served after {restart_s:.1f} s; {recovered.split(': ')[-1]}")
    print(f"{name} after restart: RSS {rss:.0f} MB, peak {peak:.0f} MB")
    results["restart_s"] = restart_s

    drained = perf(
        args.perf, broker.url,
        "-y", "1", "--con-only", "-z", str(args.drain_s), "-q", "1000", "-A", "100",
        "--drain-timeout", "1", progress=True,
    )  # fmt: skip
    rss, peak = rss_mb(broker.pid())
    results["drain"] = float(drained["con_steady"])
    print(
        f"{name} deep drain: {results['drain']:,.0f} msg/s (median second of "
        f"{args.drain_s:.0f} s); RSS {rss:.0f} MB, peak {peak:.0f} MB"
    )

    flow = perf(
        args.perf, broker.url,
        "-x", "1", "-y", "1", "-z", "10", "-c", "1000", "-q", "1000", "-A", "100",
        "-f", "persistent", "--declare", "--durable", "--delete",
        queue=FLOW_QUEUE, progress=True,
    )  # fmt: skip
    results["flow"] = float(flow["con_steady"])
    print(
        f"{name} shallow queue in flow (publishing and consuming together): "
        f"{results['flow']:,.0f} msg/s; deep drain / flow = "
        f"{results['drain'] / results['flow']:.2f}"
    )
    broker.stop()
    return results


def shallow_drain(args: argparse.Namespace) -> float:
    """amqpd draining a backlog it holds in memory."""
    config = args.work / "shallow.yaml"
    config.write_text(
        "listeners: [{bind: 127.0.0.1, port: 0}]\n"
        "limits: {queue_memory_bytes_max: 8000000000, memory_bytes_max: 8000000000}\n"
    )
    shallow = BrokerProcess(args.work / "shallow", ["--config", str(config)]).start()
    perf(
        args.perf, shallow.url,
        "-x", "1", "--pub-only", "-C", str(args.shallow_messages), "-z", "0",
        "-c", "1000", "-f", "persistent", "--declare", "--durable",
    )  # fmt: skip
    drained = perf(
        args.perf, shallow.url,
        "-y", "1", "--con-only", "-z", "10", "-q", "1000", "-A", "100",
        "--drain-timeout", "1", progress=True,
    )  # fmt: skip
    shallow.stop()
    return float(drained["con_steady"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf", type=Path, required=True, help="the amqp-perf binary")
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--shallow-messages", type=int, default=1_000_000)
    parser.add_argument("--drain-s", type=float, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/amqpd-backlog"))
    parser.add_argument("--rabbitmq", help="a RabbitMQ to measure too (its URL)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)

    amqpd = measure(Amqpd(args.work), args)
    shallow = shallow_drain(args)
    print(
        f"amqpd shallow drain (all in memory): {shallow:,.0f} msg/s; "
        f"deep drain / shallow drain = {amqpd['drain'] / shallow:.2f}"
    )
    if args.rabbitmq:
        rabbitmq = measure(RabbitMQ(args.rabbitmq), args)
        for key, label in [
            ("fill", "fill msg/s"),
            ("fill_rss", "RSS with the backlog, MB"),
            ("restart_s", "restart s"),
            ("drain", "deep drain msg/s"),
            ("flow", "shallow flow msg/s"),
        ]:
            print(
                f"{label}: amqpd {amqpd[key]:,.1f}, rabbitmq {rabbitmq[key]:,.1f} "
                f"(amqpd / rabbitmq = {amqpd[key] / rabbitmq[key]:.2f})"
            )


if __name__ == "__main__":
    main()
