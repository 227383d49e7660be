"""The consistent-hash exchange (`x-consistent-hash`) with pika, as code written for
RabbitMQ's plugin uses it: weights as binding keys, routing on the routing key, a header
or a property, and the plugin's refusals. Placements are checked against the plugin's
algorithm (broker.exchanges.erlang_hash, itself checked against RabbitMQ's values)."""

from __future__ import annotations

import os

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from amqpd.broker.exchanges.consistent_hash import erlang_field
from amqpd.broker.exchanges.erlang_hash import UNDEFINED, Term, jump_consistent_hash, phash2
from amqpd.codec.fields import LongInt
from tests.integration.helpers import Cleanup, drain, round_trip

pytestmark = pytest.mark.timeout(60)

KEYS = 2000


def ring(
    channel: BlockingChannel,
    cleanup: Cleanup,
    name: str,
    weights: dict[str, int],
    arguments: dict[str, object] | None = None,
) -> tuple[str, list[str]]:
    """A consistent-hash exchange bound to fresh queues with these weights, in order; also
    returns the owner of each bucket (the plugin's bucket map)."""
    exchange = cleanup.exchange(f"{name}-chx")
    channel.exchange_declare(exchange, "x-consistent-hash", arguments=arguments)
    buckets: list[str] = []
    for queue, weight in weights.items():
        channel.queue_declare(cleanup.queue(f"{name}-{queue}"))
        channel.queue_bind(f"{name}-{queue}", exchange, str(weight))
        buckets += [queue] * weight
    return exchange, buckets


def owner(buckets: list[str], value: Term) -> str:
    return buckets[jump_consistent_hash(phash2(value), len(buckets))]


def landed(channel: BlockingChannel, name: str, queues: list[str]) -> dict[str, list[bytes]]:
    round_trip(channel)
    return {queue: drain(channel, f"{name}-{queue}") for queue in queues}


def test_keys_spread_by_weight_each_where_the_plugin_puts_it(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    weights = {"a": 1, "b": 2, "c": 3, "d": 4}
    exchange, buckets = ring(channel, cleanup, name, weights)
    channel.confirm_delivery()
    for number in range(KEYS):
        channel.basic_publish(exchange, f"order-{number}", b"order-%d" % number)
    got = landed(channel, name, list(weights))
    assert sum(len(bodies) for bodies in got.values()) == KEYS
    total = sum(weights.values())
    for queue, weight in weights.items():
        share = len(got[queue]) / KEYS
        assert abs(share - weight / total) < 0.04, (queue, share)
        for body in got[queue]:
            assert owner(buckets, body) == queue


def test_the_same_key_always_reaches_the_same_queue(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange, buckets = ring(channel, cleanup, name, {"a": 5, "b": 5, "c": 5})
    for _ in range(10):
        for key in ("user-1", "user-2", "user-3", "user-4"):
            channel.basic_publish(exchange, key, key.encode())
    got = landed(channel, name, ["a", "b", "c"])
    for queue, bodies in got.items():
        for body in bodies:
            assert owner(buckets, body) == queue
    assert sorted(body for bodies in got.values() for body in bodies) == sorted(
        [b"user-1", b"user-2", b"user-3", b"user-4"] * 10
    )


def test_hash_header_routes_on_the_typed_header_value(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange, buckets = ring(
        channel, cleanup, name, {"a": 1, "b": 1, "c": 1, "d": 1}, {"hash-header": "tenant"}
    )
    # As pika encodes them: an int that fits 32 bits as I, a larger one as l, a bool as t.
    values: list[object] = ["acme", "globex", LongInt(7), 2**40, True, "initech"]
    for number, value in enumerate(values):
        props = pika.BasicProperties(headers={"tenant": value})
        channel.basic_publish(exchange, "same-key", b"%d" % number, props)
    channel.basic_publish(exchange, "same-key", b"none")
    got = landed(channel, name, ["a", "b", "c", "d"])
    where = {body: queue for queue, bodies in got.items() for body in bodies}
    for number, value in enumerate(values):
        assert where[b"%d" % number] == owner(buckets, erlang_field(value)), value  # type: ignore[arg-type]
    assert where[b"none"] == owner(buckets, UNDEFINED)
    assert len(set(where.values())) > 1  # the header, not the routing key, decided


@pytest.mark.parametrize(
    ("property_name", "values"),
    [
        ("message_id", ["m-1", "m-2", "m-3", "m-4", "m-5", "m-6"]),
        ("correlation_id", ["c-1", "c-2", "c-3", "c-4", "c-5", "c-6"]),
        ("timestamp", [1, 1700000000, 1700000001, 42, 99, 123456]),
    ],
)
def test_hash_property_routes_on_the_property(
    channel: BlockingChannel, name: str, cleanup: Cleanup, property_name: str, values: list
) -> None:
    exchange, buckets = ring(
        channel, cleanup, name, {"a": 2, "b": 1, "c": 3}, {"hash-property": property_name}
    )
    for value in values:
        props = pika.BasicProperties(**{property_name: value})
        channel.basic_publish(exchange, "same-key", str(value).encode(), props)
    got = landed(channel, name, ["a", "b", "c"])
    where = {body: queue for queue, bodies in got.items() for body in bodies}
    assert {body: owner(buckets, body) for body in where} == where
    assert len(where) == len(values)


def test_unbinding_closes_the_ring_and_rebinding_appends(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange, _ = ring(channel, cleanup, name, {"a": 2, "b": 3, "c": 1})
    channel.queue_unbind(f"{name}-b", exchange, "3")
    channel.queue_bind(f"{name}-b", exchange, "4")
    buckets = ["a"] * 2 + ["c"] + ["b"] * 4
    for number in range(200):
        channel.basic_publish(exchange, f"k{number}", b"k%d" % number)
    got = landed(channel, name, ["a", "b", "c"])
    for queue, bodies in got.items():
        for body in bodies:
            assert owner(buckets, body) == queue


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("abc", 'PRECONDITION_FAILED - The binding key must be an integer: <<"abc">>'),
        ("", "PRECONDITION_FAILED - The binding key must be an integer: <<>>"),
        ("0", "PRECONDITION_FAILED - The binding key must be greater than 0"),
        ("-2", "PRECONDITION_FAILED - The binding key must be greater than 0"),
    ],
)
def test_a_bad_weight_closes_the_channel_with_406(
    connection: BlockingConnection, name: str, cleanup: Cleanup, key: str, text: str
) -> None:
    channel = connection.channel()
    exchange, _ = ring(channel, cleanup, name, {"a": 1})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_bind(f"{name}-a", exchange, key)
    assert (closed.value.reply_code, closed.value.reply_text) == (406, text)
    assert connection.is_open


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        (
            {"hash-header": "h", "hash-property": "message_id"},
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive",
        ),
        ({"hash-property": "app_id"}, "PRECONDITION_FAILED - Unsupported property: app_id"),
        pytest.param(
            {"hash-header": 5},
            "PRECONDITION_FAILED - invalid arg 'hash-header' for exchange type "
            "x-consistent-hash: expected longstr, got signedint",
            marks=pytest.mark.skipif(
                bool(os.environ.get("AMQP_URL")),
                reason="amqpd refuses it; RabbitMQ's plugin crashes (541 INTERNAL_ERROR)",
            ),
        ),
    ],
)
def test_bad_arguments_close_the_channel_with_406(
    connection: BlockingConnection, name: str, cleanup: Cleanup, arguments: dict, text: str
) -> None:
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.exchange_declare(
            cleanup.exchange(f"{name}-chx"), "x-consistent-hash", arguments=arguments
        )
    assert (closed.value.reply_code, closed.value.reply_text) == (406, text)
