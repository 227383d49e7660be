"""The consistent-hash exchange (`x-consistent-hash`, RabbitMQ's
rabbitmq_consistent_hash_exchange plugin): which queue each key lands in, key by key, for
weighted rings built, unbound and rebound in the same order on both brokers; routing on a
header or a property; and the refusals of bad weights and arguments."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pika

from interop.scenarios import Session, scenario
from interop.transcript import Transcript

CHX = "x-consistent-hash"


def placement(t: Transcript, channel: Any, queues: list[str]) -> dict[str, str]:
    """Body -> the queue it landed in (short names), draining the queues."""
    landed: dict[str, str] = {}
    for queue in queues:
        while True:
            method, _, body = channel.basic_get(t.name(queue), auto_ack=True)
            if method is None:
                break
            landed[body.decode()] = queue
    return landed


def weighted(
    t: Transcript, channel: Any, weights: list[tuple[str, str]], arguments: Any = None
) -> str:
    exchange = t.name("chx")
    channel.exchange_declare(exchange, CHX, arguments=arguments, auto_delete=True)
    for queue, weight in weights:
        channel.queue_declare(t.name(queue), exclusive=True)
        channel.queue_bind(t.name(queue), exchange, weight)
    return exchange


@scenario("consistent-hash")
def consistent_hash_places_every_key_as_rabbitmq(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queues = ["a", "b", "c", "d", "e"]
    exchange = weighted(t, channel, [("a", "1"), ("b", "3"), ("c", "2"), ("d", "5"), ("e", "4")])
    channel.queue_bind(t.name("b"), exchange, "7")  # a second key to b: no more buckets
    for number in range(300):
        channel.basic_publish(exchange, f"key-{number}", f"key-{number}".encode())
    first = placement(t, channel, queues)
    t.add("placement", first)
    t.add("shares", {queue: list(first.values()).count(queue) for queue in queues})
    # c leaves the ring (the buckets after it move down), then comes back at its end;
    # unbinding b's second key takes b off the ring too, as the plugin does.
    channel.queue_unbind(t.name("c"), exchange, "2")
    channel.queue_bind(t.name("c"), exchange, "+6")
    channel.queue_unbind(t.name("b"), exchange, "7")
    for number in range(300):
        channel.basic_publish(exchange, f"key-{number}", f"key-{number}".encode())
    t.add("placement after unbind and rebind", placement(t, channel, queues))
    for key in ("same", "same", "same", "other", "other"):
        channel.basic_publish(exchange, key, key.encode())
    t.add("repeated keys", sorted(placement(t, channel, queues).items()))


@scenario("consistent-hash")
def consistent_hash_on_a_header_or_property(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queues = ["a", "b", "c", "d"]
    ring = [("a", "2"), ("b", "1"), ("c", "3"), ("d", "2")]
    exchange = weighted(t, channel, ring, {"hash-header": "tenant"})
    values: list[Any] = [f"tenant-{number}" for number in range(40)]
    values += [7, -3, 2**40, True, False, Decimal("1.5"), b"raw", None, ["x", 1], {"k": "v"}]
    for number, value in enumerate(values):
        props = pika.BasicProperties(headers={"tenant": value})
        channel.basic_publish(exchange, "ignored", f"h{number}".encode(), props)
    channel.basic_publish(exchange, "ignored", b"no headers")
    props = pika.BasicProperties(headers={"other": "x"})
    channel.basic_publish(exchange, "ignored", b"no such header", props)
    t.add("by header", placement(t, channel, queues))
    channel.exchange_delete(exchange)
    for name in ("message_id", "correlation_id", "timestamp"):
        exchange = t.name(f"chx-{name}")
        channel.exchange_declare(exchange, CHX, arguments={"hash-property": name})
        for queue, weight in ring:
            channel.queue_bind(t.name(queue), exchange, weight)
        for number in range(40):
            value: Any = 1_700_000_000 + number if name == "timestamp" else f"p-{number}"
            props = pika.BasicProperties(**{name: value})
            channel.basic_publish(exchange, "ignored", f"{name}-{number}".encode(), props)
        channel.basic_publish(exchange, "ignored", f"{name}-missing".encode())
        t.add(f"by {name}", placement(t, channel, queues))
        channel.exchange_delete(exchange)


@scenario("consistent-hash")
def consistent_hash_refusals(s: Session, t: Transcript) -> None:
    channel = s.channel()
    exchange, queue = t.name("chx"), t.name("a")
    channel.exchange_declare(exchange, CHX)
    channel.queue_declare(queue)
    for key in ("abc", "", " 5", "1.5", "0", "-3", "+2", "007"):
        with t.expect_error(f"bind {key!r}"):
            channel.queue_bind(queue, exchange, key)
        if channel.is_closed:
            channel = s.channel()
    for arguments in (
        {"hash-header": "h", "hash-property": "message_id"},
        {"hash-header": "h", "hash-property": "app_id"},
        {"hash-property": "app_id"},
        {"hash-property": "user_id"},
        {"hash-header": ""},
    ):
        with t.expect_error(f"declare {sorted(arguments.items())}"):
            channel.exchange_declare(t.name("chx-args"), CHX, arguments=arguments)
            channel.exchange_delete(t.name("chx-args"))
        if channel.is_closed:
            channel = s.channel()
    channel.queue_delete(queue)
    channel.exchange_delete(exchange)


@scenario("consistent-hash")
def consistent_hash_argument_types(s: Session, t: Transcript) -> None:
    channel = s.channel()
    with t.expect_error("hash-header that is not a string"):
        channel.exchange_declare(t.name("chx-int"), CHX, arguments={"hash-header": 5})
