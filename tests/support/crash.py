"""Crash test: kill -9 the real broker at random moments while it takes persistent
messages with confirms and delivers them with acks; then check that nothing confirmed
was lost and that every duplicate arrived flagged redelivered.

    python -m tests.support.crash --cycles 300 --seed 7      # the long run
    (tests/server/test_crash.py runs a few cycles in the default test run)

Each cycle starts amqpd on the same data folder, runs a publisher (persistent messages,
publisher confirms) and a consumer (prefetch, manual acks) on their own connections,
SIGKILLs the broker after a random delay, and records what was confirmed and what was
received. At the end the broker is started once more and the queue drained.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pika
import pika.exceptions

from tests.support.broker_process import BrokerProcess

QUEUE = "crash-test"
PERSISTENT = pika.BasicProperties(delivery_mode=2)
CLIENT_ERRORS = (pika.exceptions.AMQPError, OSError)


@attrs.define
class Ledger:
    """What the clients saw, across every cycle."""

    next_id: int = 0
    confirmed: set[int] = attrs.field(factory=set)
    received: list[tuple[int, bool]] = attrs.field(factory=list)  # (id, redelivered)
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def problems(self) -> list[str]:
        seen: dict[int, int] = {}
        problems = []
        for message_id, redelivered in self.received:
            seen[message_id] = seen.get(message_id, 0) + 1
            if seen[message_id] > 1 and not redelivered:
                problems.append(f"message {message_id} came again without redelivered=true")
        lost = sorted(self.confirmed - set(seen))
        if lost:
            problems.append(f"{len(lost)} confirmed message(s) never arrived: {lost[:20]}")
        return problems


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close a client connection whatever state the broker left it in."""
    if connection is None:
        return
    with contextlib.suppress(Exception):
        connection.close()
    with contextlib.suppress(Exception):
        connection._impl._transport._sock.close()  # a broker killed under it


def publish(url: str, ledger: Ledger, stop: threading.Event) -> None:
    connection = None
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.confirm_delivery()
        while not stop.is_set():
            with ledger.lock:
                message_id = ledger.next_id
                ledger.next_id += 1
            channel.basic_publish("", QUEUE, str(message_id).encode(), PERSISTENT)
            with ledger.lock:  # basic_publish returned: the broker confirmed it
                ledger.confirmed.add(message_id)
    except CLIENT_ERRORS:
        return  # the broker was killed
    finally:
        close_quietly(connection)


def consume(url: str, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    connection = None
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=50)
        for method, _, body in channel.consume(QUEUE, inactivity_timeout=0.1):
            if stop.is_set():
                return
            if method is None:
                continue
            with ledger.lock:
                ledger.received.append((int(body), method.redelivered))
            if rng.random() < 0.9:  # leave some unacked when the broker dies
                channel.basic_ack(method.delivery_tag, multiple=rng.random() < 0.5)
    except CLIENT_ERRORS:
        return
    finally:
        close_quietly(connection)


def declare(url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    connection.channel().queue_declare(QUEUE, durable=True)
    connection.close()


def drain(url: str, ledger: Ledger) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    while True:
        method, _, body = channel.basic_get(QUEUE, auto_ack=True)
        if method is None:
            break
        ledger.received.append((int(body), method.redelivered))
    connection.close()


@contextmanager
def running(data_dir: Path, extra_args: list[str]) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(data_dir, extra_args).start(timeout_s=60)
    try:
        yield broker
    finally:
        broker.kill()


def run(cycles: int, seed: int, data_dir: Path, extra_args: list[str] | None = None) -> Ledger:
    rng = random.Random(seed)
    ledger = Ledger()
    args = extra_args or []
    for _ in range(cycles):
        with running(data_dir, args) as broker:
            declare(broker.url)
            stop = threading.Event()
            threads = [
                threading.Thread(target=publish, args=(broker.url, ledger, stop)),
                threading.Thread(target=consume, args=(broker.url, ledger, stop, rng)),
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.2, 1.0))  # the crash comes at a random moment
            broker.kill()
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    with running(data_dir, args) as broker:
        declare(broker.url)
        drain(broker.url, ledger)
    return ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fsync", default="always", help="the broker's fsync policy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "amqpd.yaml"
        config.write_text(
            f"listeners: [{{bind: 127.0.0.1, port: 0}}]\nstorage: {{fsync: {args.fsync}}}\n"
        )
        started = time.monotonic()
        ledger = run(args.cycles, args.seed, Path(directory) / "data", ["--config", str(config)])
        problems = ledger.problems()
        print(
            f"{args.cycles} cycles in {time.monotonic() - started:.0f} s: "
            f"{len(ledger.confirmed)} confirmed, {len(ledger.received)} deliveries, "
            f"{len(ledger.received) - len({i for i, _ in ledger.received})} duplicates"
        )
        for problem in problems:
            print("PROBLEM:", problem)
        raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
