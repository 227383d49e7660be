#!/usr/bin/env python3
"""Deep-backlog benchmark: fill a durable queue with millions of persistent messages, then
report the broker's memory, its restart (recovery) time and the drain rate, beside the
drain rate of a queue held in memory.

    tools/backlog_bench.py --perf /path/to/amqp-perf --messages 10000000 --work /tmp/backlog

Uses amqp-perf (../shared/tools/amqp-perf, built with `make`) for the load, and runs
amqpd from this checkout. Steps:
  1. fill: one producer, persistent 100-byte messages, confirms (1000 outstanding);
  2. the broker's RSS and peak RSS with the backlog in place;
  3. restart (SIGTERM, start again): time to the ready line, recovery as logged;
  4. drain the deep queue for --drain-s seconds: the median per-second consume rate, and
     RSS meanwhile;
  5. a shallow reference: a fresh broker that keeps --shallow-messages in memory,
     drained the same way (rates only from the seconds in which the queue was not empty);
  6. a shallow queue in flow: one producer and one consumer together for 10 s, persistent
     messages with confirms, the queue near empty throughout.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker_process import BrokerProcess  # noqa: E402

QUEUE = "backlog"


def perf(binary: Path, url: str, *args: str, progress: bool = False) -> dict[str, str]:
    """Run amqp-perf; its summary line as a dict. With progress, also "con_steady": the
    median per-second consume rate, leaving out the first second (connecting) and the
    last ones (the queue ran dry), so a short drain is measured while it is busy."""
    reporting = ["-i", "1"] if progress else ["-i", "0", "--quiet"]
    result = subprocess.run(
        [str(binary), "-h", url, "-u", QUEUE, "-s", "100", *reporting, *args],
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


def fill(binary: Path, broker: BrokerProcess, count: int) -> dict[str, str]:
    return perf(
        binary,
        broker.url,
        "-x", "1", "--pub-only", "-C", str(count), "-z", "0",
        "-c", "1000", "-f", "persistent", "--declare", "--durable",
    )  # fmt: skip


def drain(binary: Path, broker: BrokerProcess, seconds: float) -> dict[str, str]:
    return perf(
        binary,
        broker.url,
        "-y", "1", "--con-only", "-z", str(seconds), "-q", "1000", "-A", "100",
        "--drain-timeout", "1", progress=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf", type=Path, required=True, help="the amqp-perf binary")
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--shallow-messages", type=int, default=1_000_000)
    parser.add_argument("--drain-s", type=float, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/amqpd-backlog"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    config = args.work / "amqpd.yaml"
    config.write_text("listeners: [{bind: 127.0.0.1, port: 0}]\nlog_level: info\n")

    deep = BrokerProcess(args.work / "deep", ["--config", str(config)]).start()
    assert deep.process is not None
    started = time.monotonic()
    filled = fill(args.perf, deep, args.messages)
    fill_s = time.monotonic() - started
    rss, peak = rss_mb(deep.process.pid)
    print(
        f"fill: {args.messages} messages in {fill_s:.0f} s = {args.messages / fill_s:,.0f} msg/s "
        f"(amqp-perf pub_rate {filled.get('pub_rate')}); "
        f"broker RSS {rss:.0f} MB, peak {peak:.0f} MB"
    )
    disk = sum(f.stat().st_size for f in (args.work / "deep").rglob("*") if f.is_file())
    print(f"on disk: {disk / 1e9:.2f} GB")

    deep.signal(15)
    assert deep.stop() == 0
    restart_started = time.monotonic()
    deep.lines.clear()
    deep._stopping = False
    deep.start(timeout_s=600)
    restart_s = time.monotonic() - restart_started
    recovered = next((line for line in deep.lines if "recovered" in line and "queue" in line), "")
    assert deep.process is not None
    rss, peak = rss_mb(deep.process.pid)
    print(f"restart: ready after {restart_s:.1f} s; {recovered.split(': ', 1)[-1]}")
    print(f"after restart: RSS {rss:.0f} MB, peak {peak:.0f} MB")

    drained = drain(args.perf, deep, args.drain_s)
    rss, peak = rss_mb(deep.process.pid)
    print(
        f"deep drain: {float(drained['con_steady']):,.0f} msg/s "
        f"(median second of {args.drain_s:.0f} s); "
        f"RSS {rss:.0f} MB, peak {peak:.0f} MB"
    )
    deep.stop()

    shallow_config = args.work / "shallow.yaml"
    shallow_config.write_text(
        "listeners: [{bind: 127.0.0.1, port: 0}]\n"
        "limits: {queue_memory_bytes_max: 8000000000, memory_bytes_max: 8000000000}\n"
    )
    shallow = BrokerProcess(args.work / "shallow", ["--config", str(shallow_config)]).start()
    fill(args.perf, shallow, args.shallow_messages)
    shallow_drained = drain(args.perf, shallow, min(args.drain_s, 10))
    shallow.stop()
    deep_rate = float(drained["con_steady"])
    shallow_rate = float(shallow_drained["con_steady"])
    print(
        f"shallow drain (all in memory): {shallow_rate:,.0f} msg/s; "
        f"deep/shallow = {deep_rate / shallow_rate:.2f}"
    )

    flowing = BrokerProcess(args.work / "flowing", ["--config", str(config)]).start()
    flow = perf(
        args.perf,
        flowing.url,
        "-x", "1", "-y", "1", "-z", "10", "-c", "1000", "-q", "1000", "-A", "100",
        "-f", "persistent", "--declare", "--durable", progress=True,
    )  # fmt: skip
    flowing.stop()
    flow_rate = float(flow["con_steady"])
    print(
        f"shallow queue in flow (publishing and consuming together): {flow_rate:,.0f} msg/s; "
        f"deep/flow = {deep_rate / flow_rate:.2f}"
    )


if __name__ == "__main__":
    main()
