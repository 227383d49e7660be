"""Stream queues over AMQP 0-9-1 (x-queue-type stream, as RabbitMQ 3.10 serves them):
declaring, the offsets a consumer starts from, the x-stream-offset header, credit, and the
operations a stream refuses."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pika

from interop.scenarios import Session, scenario
from interop.transcript import Transcript

WAIT_S = 10.0
STREAM = {"x-queue-type": "stream"}


def declare_stream(t: Transcript, channel: Any, base: str, **arguments: Any) -> str:
    queue = t.name(base)
    channel.queue_declare(queue, durable=True, arguments={**STREAM, **arguments})
    return queue


def publish_each(channel: Any, queue: str, count: int, start: int = 0) -> None:
    """One confirmed publish at a time: each is its own chunk on RabbitMQ, so "last" means
    the last message on both brokers."""
    for number in range(start, start + count):
        channel.basic_publish(
            "", queue, f"m{number}".encode(), pika.BasicProperties(headers={"n": number})
        )


def read(
    t: Transcript,
    s: Session,
    queue: str,
    label: str,
    expected: int,
    prefetch: int = 50,
    **arguments: Any,
) -> None:
    """Consume on a new channel with `arguments`, acking, and record what arrives: the
    `expected` deliveries, then whatever else comes within a round trip."""
    channel = s.channel()
    channel.basic_qos(prefetch_count=prefetch)
    received: list[tuple[Any, Any, bytes]] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        received.append((method, properties, body))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message, arguments=arguments)
    deadline = time.monotonic() + WAIT_S
    while len(received) < expected and time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.02)
    channel.connection.process_data_events(time_limit=0.2)
    for method, properties, body in received:
        t.message(label, method, properties, body)
    t.add(label, "count", len(received))
    channel.close()


@scenario("streams")
def stream_declare_rules(s: Session, t: Transcript) -> None:
    for label, flags, arguments in (
        ("non-durable", {"durable": False}, {}),
        ("exclusive", {"durable": True, "exclusive": True}, {}),
        ("auto-delete", {"durable": True, "auto_delete": True}, {}),
        ("ttl", {"durable": True}, {"x-message-ttl": 1000}),
        ("max-length", {"durable": True}, {"x-max-length": 10}),
        ("dead-letter", {"durable": True}, {"x-dead-letter-exchange": "x"}),
        ("priority", {"durable": True}, {"x-max-priority": 3}),
        ("single-active", {"durable": True}, {"x-single-active-consumer": True}),
    ):
        with t.expect_error(label):
            s.channel().queue_declare(t.name("refused"), arguments={**STREAM, **arguments}, **flags)
    channel = s.channel(confirm=True)
    queue = declare_stream(t, channel, "s", **{"x-max-age": "1D", "x-max-length-bytes": 10_000_000})
    publish_each(channel, queue, 3)
    ok = channel.queue_declare(queue, passive=True).method
    t.add("passive", ok.message_count, ok.consumer_count)
    with t.expect_error("redeclare without arguments"):
        s.channel().queue_declare(queue, durable=True)


@scenario("streams")
def stream_offsets(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queue = declare_stream(t, channel, "s")
    publish_each(channel, queue, 5)
    read(t, s, queue, "first", 5, **{"x-stream-offset": "first"})
    read(t, s, queue, "last", 1, **{"x-stream-offset": "last"})
    read(t, s, queue, "offset 3", 2, **{"x-stream-offset": 3})
    read(t, s, queue, "negative", 5, **{"x-stream-offset": -5})
    read(t, s, queue, "next", 0, **{"x-stream-offset": "next"})
    read(t, s, queue, "default", 0)
    read(t, s, queue, "past the end", 0, **{"x-stream-offset": 99})
    an_hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    read(t, s, queue, "timestamp", 5, **{"x-stream-offset": an_hour_ago})
    read(t, s, queue, "interval", 5, **{"x-stream-offset": "1h"})


@scenario("streams")
def stream_consumers_each_read_everything(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queue = declare_stream(t, channel, "s")
    publish_each(channel, queue, 4)
    channel.basic_publish("", queue, b"no headers")
    for reader in ("one", "two"):
        read(t, s, queue, reader, 5, **{"x-stream-offset": "first"})


@scenario("streams")
def stream_credit_comes_back_with_acks(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queue = declare_stream(t, channel, "s")
    publish_each(channel, queue, 6)
    reader = s.channel()
    reader.basic_qos(prefetch_count=2)
    received: list[Any] = []
    reader.basic_consume(
        queue, lambda ch, m, p, b: received.append((m, b)), arguments={"x-stream-offset": 0}
    )
    deadline = time.monotonic() + WAIT_S
    while len(received) < 2 and time.monotonic() < deadline:
        reader.connection.process_data_events(time_limit=0.02)
    reader.connection.process_data_events(time_limit=0.2)
    t.add("before ack", [body for _, body in received])
    reader.basic_ack(received[-1][0].delivery_tag, multiple=True)
    while len(received) < 4 and time.monotonic() < deadline:
        reader.connection.process_data_events(time_limit=0.02)
    reader.connection.process_data_events(time_limit=0.2)
    t.add("after ack", [body for _, body in received])


@scenario("streams")
def stream_refusals(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queue = declare_stream(t, channel, "s")
    publish_each(channel, queue, 1)
    with t.expect_error("consume without prefetch"):
        no_qos = s.channel()
        no_qos.basic_consume(queue, lambda *_: None)
        no_qos.connection.process_data_events(time_limit=0.5)
        no_qos.basic_qos(prefetch_count=1)
    with t.expect_error("auto-ack"):
        auto = s.channel()
        auto.basic_qos(prefetch_count=1)
        auto.basic_consume(queue, lambda *_: None, auto_ack=True)
        auto.connection.process_data_events(time_limit=0.5)
        auto.basic_qos(prefetch_count=1)
    with t.expect_error("get"):
        s.channel().basic_get(queue)
    with t.expect_error("purge"):
        s.channel().queue_purge(queue)
    with t.expect_error("nack"):
        nacking = s.channel()
        nacking.basic_qos(prefetch_count=1)
        received: list[Any] = []
        nacking.basic_consume(
            queue, lambda ch, m, p, b: received.append(m), arguments={"x-stream-offset": 0}
        )
        deadline = time.monotonic() + WAIT_S
        while not received and time.monotonic() < deadline:
            nacking.connection.process_data_events(time_limit=0.02)
        nacking.basic_nack(received[0].delivery_tag, requeue=True)
        nacking.connection.process_data_events(time_limit=0.5)
        nacking.basic_qos(prefetch_count=1)
    deleted = s.channel().queue_delete(queue).method
    t.add("deleted", deleted.message_count)
