#!/usr/bin/env python3
"""S2 (1P/1C, 1 KB transient, confirms<=100, prefetch 100, multi-ack 10) on a plain
queue, on a queue with x-message-ttl, x-max-length and a dead-letter exchange, and on a
priority queue (x-max-priority 10), runs interleaved against one amqpd; prints the median
consume rates and their ratios to the plain queue's.

    tools/limits_bench.py --perf /path/to/amqp-perf [--repeats 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker_process import BrokerProcess  # noqa: E402

LIMITED = {
    "x-message-ttl": 60_000,
    "x-max-length": 1_000_000,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": "limits-dlq",
}


def run(perf: Path, url: str, queue: str, duration: float) -> float:
    out = subprocess.run(
        [str(perf), "--uri", url, "-z", str(duration), "-u", queue, "-i", "0", "--quiet",
         "-x", "1", "-y", "1", "-s", "1024", "-c", "100", "-q", "100", "-A", "10"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    return float(fields["con_rate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        broker = BrokerProcess(Path(data)).start()
        try:
            with pika.BlockingConnection(pika.URLParameters(broker.url)) as connection:
                channel = connection.channel()
                channel.queue_declare("limits-dlq")
                channel.queue_declare("limits-plain")
                channel.queue_declare("limits-set", arguments=LIMITED)
                channel.queue_declare("limits-priority", arguments={"x-max-priority": 10})
            rates: dict[str, list[float]] = {
                "limits-plain": [],
                "limits-set": [],
                "limits-priority": [],
            }
            for _ in range(args.repeats):
                for queue, got in rates.items():
                    got.append(run(args.perf, broker.url, queue, args.duration))
        finally:
            broker.stop()
    plain = statistics.median(rates["limits-plain"])
    print(f"S2 plain queue: {plain:,.0f} msg/s {rates['limits-plain']}")
    for queue, label in (
        ("limits-set", "TTL + max-length + DLX"),
        ("limits-priority", "x-max-priority 10"),
    ):
        median = statistics.median(rates[queue])
        print(f"S2 {label}: {median:,.0f} msg/s {rates[queue]}, ratio {median / plain:.3f}")


if __name__ == "__main__":
    main()
