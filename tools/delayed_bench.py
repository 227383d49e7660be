#!/usr/bin/env python3
"""Scheduled-delivery benchmark: a million messages held by a delayed exchange.

    tools/delayed_bench.py --messages 1000000 --window-s 60 \\
        [--bench /path/to/amqp-perf/bench.py --repeats 3]

Runs amqpd from this checkout (fresh data folders, default config: fsync always).
1. Release: a durable `x-delayed-message` exchange bound to a durable queue; one publisher
   sends --messages persistent 100-byte messages with confirms (--window outstanding),
   each with `x-deliver-at-ms` spread evenly over --window-s seconds that start --lead-s
   after the first publish, in shuffled order (so publish order is not release order).
   A consumer (no-ack) records, for each message, arrival time minus x-deliver-at-ms.
   Reported: publish rate, the broker's RSS before, with everything held, and at peak,
   lateness p50 / p99 / max, early arrivals (must be 0), messages lost (must be 0).
2. Held: a second broker holds --messages messages due in a day; reported: RSS, and the
   restart time (SIGTERM, start, ready) with them held.
3. With --bench (amqp-perf's bench.py, beside its built amqp-perf): S2 against that broker
   and against a fresh empty one, interleaved; the ratio is what a million held messages
   cost S2.

The publisher and consumer are raw-socket clients (tests/support/raw_client.py for the
handshake), so that the client is not what is measured.
"""

from __future__ import annotations

import argparse
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pamqp import body as pamqp_body
from pamqp import commands, frame
from pamqp import header as pamqp_header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker_process import BrokerProcess  # noqa: E402
from tests.support.raw_client import RawClient  # noqa: E402

EXCHANGE = "bench-delayed"
QUEUE = "bench-delayed-q"
BODY = b"x" * 100
_AT_KEY = b"\x0fx-deliver-at-msl"  # the header's key, then its type tag (long long)
_FRAME_HEAD = struct.Struct(">BHI")
_I64 = struct.Struct(">q")


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def connect(broker: BrokerProcess) -> RawClient:
    client = RawClient(broker.host, broker.port, timeout_s=120)
    client.handshake()
    client.open_channel(1)
    return client


def declare(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send(
            1,
            commands.Exchange.Declare(
                exchange=EXCHANGE,
                exchange_type="x-delayed-message",
                durable=True,
                arguments={"x-delayed-type": "direct"},
            ),
        )
        client.expect(commands.Exchange.DeclareOk)
        client.send(1, commands.Queue.Declare(queue=QUEUE, durable=True))
        client.expect(commands.Queue.DeclareOk)
        client.send(1, commands.Queue.Bind(queue=QUEUE, exchange=EXCHANGE, routing_key="k"))
        client.expect(commands.Queue.BindOk)


def publish(broker: BrokerProcess, due_ms: list[int], window: int) -> float:
    """Publish one message per due time, with confirms; the rate (messages per second)."""
    client = connect(broker)
    client.send(1, commands.Confirm.Select())
    client.expect(commands.Confirm.SelectOk)
    method = frame.marshal(commands.Basic.Publish(exchange=EXCHANGE, routing_key="k"), 1)
    properties = commands.Basic.Properties(
        delivery_mode=2, headers={"x-deliver-at-ms": 0x7EDCBA9876543210}
    )
    content = bytearray(frame.marshal(pamqp_header.ContentHeader(0, len(BODY), properties), 1))
    at = bytes(content).index(_I64.pack(0x7EDCBA9876543210))
    body = frame.marshal(pamqp_body.ContentBody(BODY), 1)
    sock = client.sock
    buffer = b""
    confirmed = 0
    started = time.monotonic()
    batch: list[bytes] = []
    for sent, due in enumerate(due_ms, start=1):
        _I64.pack_into(content, at, due)
        batch += (method, bytes(content), body)
        if len(batch) >= 300 or sent == len(due_ms):
            sock.sendall(b"".join(batch))
            batch.clear()
        while sent - confirmed >= window or (sent == len(due_ms) and confirmed < sent):
            buffer += sock.recv(1 << 16)
            buffer, confirmed = _read_acks(buffer, confirmed)
    elapsed = time.monotonic() - started
    client.close()
    return len(due_ms) / elapsed


def _read_acks(buffer: bytes, confirmed: int) -> tuple[bytes, int]:
    at = 0
    while len(buffer) - at >= 7:
        kind, _, size = _FRAME_HEAD.unpack_from(buffer, at)
        if len(buffer) - at < size + 8:
            break
        if kind == 1 and buffer[at + 7 : at + 11] == b"\x00\x3c\x00\x50":  # basic.ack
            (tag,) = struct.unpack_from(">Q", buffer, at + 11)
            confirmed = max(confirmed, tag)
        elif kind == 1 and buffer[at + 7 : at + 11] == b"\x00\x3c\x00\x78":  # basic.nack
            raise SystemExit("the broker nacked a publish")
        at += size + 8
    return buffer[at:], confirmed


class Consumer(threading.Thread):
    """No-ack consumer recording arrival time minus x-deliver-at-ms, per message."""

    def __init__(self, broker: BrokerProcess, expected: int) -> None:
        super().__init__(daemon=True)
        self.client = connect(broker)
        self.client.send(1, commands.Basic.Consume(queue=QUEUE, no_ack=True))
        self.client.expect(commands.Basic.ConsumeOk)
        self.expected = expected
        self.lateness_ms: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        sock = self.client.sock
        sock.settimeout(1.0)
        buffer = b""
        late = self.lateness_ms
        while len(late) < self.expected:
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                break
            now_ms = time.time_ns() // 1_000_000
            buffer += data
            at = 0
            while len(buffer) - at >= 7:
                kind, _, size = _FRAME_HEAD.unpack_from(buffer, at)
                if len(buffer) - at < size + 8:
                    break
                if kind == 2:
                    key = buffer.find(_AT_KEY, at, at + size + 8)
                    (due,) = _I64.unpack_from(buffer, key + len(_AT_KEY))
                    late.append(now_ms - due)
                at += size + 8
            buffer = buffer[at:]
        self.done.set()


def percentile(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def release_run(work: Path, args: argparse.Namespace) -> None:
    broker = BrokerProcess(work / "release").start(60)
    try:
        assert broker.process is not None
        pid = broker.process.pid
        declare(broker)
        rss_before, _ = rss_mb(pid)
        consumer = Consumer(broker, args.messages)
        consumer.start()
        start_ms = time.time_ns() // 1_000_000 + int(args.lead_s * 1000)
        step = args.window_s * 1000 / args.messages
        due = [start_ms + int(i * step) for i in range(args.messages)]
        random.Random(1).shuffle(due)
        rate = publish(broker, due, args.window)
        published_ms = time.time_ns() // 1_000_000
        rss_held, _ = rss_mb(pid)
        print(f"publish: {args.messages} messages at {rate:,.0f} msg/s (confirmed)")
        if published_ms > start_ms:
            print(
                f"  WARNING: publishing ended {published_ms - start_ms} ms after the first due time"
            )
        consumer.done.wait(args.lead_s + args.window_s + 120)
        _, rss_peak = rss_mb(pid)
        late = consumer.lateness_ms
        print(
            f"RSS: {rss_before:.0f} MB before, {rss_held:.0f} MB holding them all, "
            f"{rss_peak:.0f} MB peak"
        )
        print(f"released: {len(late)} of {args.messages}; early: {sum(1 for v in late if v < 0)}")
        if late:
            print(
                f"lateness: p50 {percentile(late, 0.5)} ms, p99 {percentile(late, 0.99)} ms, "
                f"max {max(late)} ms"
            )
    finally:
        broker.stop(60)


def held_run(work: Path, args: argparse.Namespace) -> BrokerProcess:
    broker = BrokerProcess(work / "held").start(60)
    assert broker.process is not None
    declare(broker)
    rss_before, _ = rss_mb(broker.process.pid)
    day_ms = time.time_ns() // 1_000_000 + 86_400_000
    due = [day_ms + i for i in range(args.messages)]
    random.Random(2).shuffle(due)
    rate = publish(broker, due, args.window)
    rss_held, _ = rss_mb(broker.process.pid)
    print(
        f"held for a day: {args.messages} published at {rate:,.0f} msg/s; "
        f"RSS {rss_before:.0f} MB before, {rss_held:.0f} MB holding them"
    )
    started = time.monotonic()
    broker.restart(15, start_timeout_s=600)
    print(
        f"restart with them held: ready in {time.monotonic() - started:.1f} s; "
        f"{broker.wait_for(r'delayed exchange .*held.*').group(0)}"
    )
    assert broker.process is not None
    print(f"  RSS after the restart: {rss_mb(broker.process.pid)[0]:.0f} MB")
    return broker


def s2_effect(work: Path, held: BrokerProcess, args: argparse.Namespace) -> None:
    empty = BrokerProcess(work / "empty").start(60)
    try:
        assert held.process is not None and empty.process is not None
        command = [
            sys.executable,
            args.bench,
            "--only",
            "S2",
            "--repeats",
            str(args.repeats),
            "--duration",
            str(args.duration),
            "--target",
            f"amqpd-empty={empty.url},{empty.process.pid}",
            "--target",
            f"amqpd-1M-held={held.url},{held.process.pid}",
        ]
        print("$", " ".join(command))
        subprocess.run(command, check=False)
    finally:
        empty.stop(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--lead-s", type=float, default=120.0)
    parser.add_argument("--window", type=int, default=5000, help="publishes awaiting confirm")
    parser.add_argument("--bench", help="amqp-perf's bench.py: measure S2 with them held")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--skip-release", action="store_true")
    parser.add_argument("--skip-held", action="store_true", help="release part only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="delayed-bench-"))
    try:
        if not args.skip_release:
            release_run(work, args)
        if not args.skip_held:
            held = held_run(work, args)
            try:
                if args.bench:
                    s2_effect(work, held, args)
            finally:
                held.stop(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
