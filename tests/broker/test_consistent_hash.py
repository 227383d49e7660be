"""The consistent-hash exchange's ring and routing, as RabbitMQ 3.10's plugin keeps them:
buckets in binding order, one ring entry per destination, removal closes the gap, and the
destination is the bucket's owner for the jump hash of phash2 of the value."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.broker.binding import Binding
from amqpd.broker.exchanges import EXCHANGE_TYPES, ConsistentHashExchange
from amqpd.broker.exchanges.consistent_hash import erlang_field, weight_of
from amqpd.broker.exchanges.erlang_hash import UNDEFINED, jump_consistent_hash, phash2
from amqpd.broker.queue import Queue
from amqpd.codec.fields import FieldTable, LongInt
from amqpd.errors import PreconditionFailed
from tests.support.broker_harness import message


def ring_of(exchange: ConsistentHashExchange) -> list[tuple[str, int]]:
    return [(destination.name, weight) for destination, weight in exchange.ring]


def bound(arguments: FieldTable | None = None, **weights: str) -> ConsistentHashExchange:
    exchange = ConsistentHashExchange("x", "/", arguments=arguments)
    for name, weight in weights.items():
        exchange.add_binding(Binding("x", Queue(name, "/"), weight, {}))
    return exchange


def queue_named(exchange: ConsistentHashExchange, name: str) -> Queue:
    for destination, _ in exchange.ring:
        if destination.name == name:
            assert isinstance(destination, Queue)
            return destination
    raise KeyError(name)


def expected_owner(ring: list[tuple[str, int]], value: object) -> str:
    """The plugin's pick, from its bucket map: bucket i belongs to the i-th bucket's queue."""
    buckets = [name for name, weight in ring for _ in range(weight)]
    return buckets[jump_consistent_hash(phash2(value), len(buckets))]  # type: ignore[arg-type]


def routed(
    exchange: ConsistentHashExchange, routing_key: str = "", **properties: object
) -> list[str]:
    return [d.name for d in exchange.route(message(routing_key, **properties), [routing_key])]


def test_the_type_is_registered() -> None:
    assert EXCHANGE_TYPES["x-consistent-hash"] is ConsistentHashExchange


@pytest.mark.parametrize(
    ("key", "weight"), [("1", 1), ("+3", 3), ("007", 7), ("1000000000", 1000000000)]
)
def test_weights_erlang_reads_as_positive_integers(key: str, weight: int) -> None:
    assert weight_of(key) == weight


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("abc", 'The binding key must be an integer: <<"abc">>'),
        ("", "The binding key must be an integer: <<>>"),
        (" 5", 'The binding key must be an integer: <<" 5">>'),
        ("1.5", 'The binding key must be an integer: <<"1.5">>'),
        ("1_0", 'The binding key must be an integer: <<"1_0">>'),
        ("0", "The binding key must be greater than 0"),
        ("-1", "The binding key must be greater than 0"),
    ],
)
def test_other_binding_keys_are_refused_in_the_plugins_words(key: str, text: str) -> None:
    with pytest.raises(PreconditionFailed) as raised:
        bound().validate_binding(key, {})
    assert raised.value.detail == text


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        (
            {"hash-header": "h", "hash-property": "message_id"},
            "hash-header and hash-property are mutually exclusive",
        ),
        (
            {"hash-header": "h", "hash-property": "app_id"},
            "hash-header and hash-property are mutually exclusive",
        ),
        ({"hash-property": "app_id"}, "Unsupported property: app_id"),
        (
            {"hash-header": LongInt(5)},
            "invalid arg 'hash-header' for exchange type x-consistent-hash: expected longstr, "
            "got signedint",
        ),
        (
            {"hash-property": None},
            "invalid arg 'hash-property' for exchange type x-consistent-hash: expected "
            "longstr, got void",
        ),
    ],
)
def test_arguments_the_plugin_refuses(arguments: FieldTable, text: str) -> None:
    with pytest.raises(PreconditionFailed) as raised:
        ConsistentHashExchange.validate_arguments(arguments)
    assert raised.value.detail == text


def test_buckets_go_in_binding_order_and_a_second_key_to_a_queue_adds_none() -> None:
    # As RabbitMQ 3.10's ring_state showed for these bindings: qc 0, qa 1-3, qb 4-5.
    exchange = bound(qc="1", qa="3", qb="2")
    exchange.add_binding(Binding("x", queue_named(exchange, "qa"), "5", {}))
    assert ring_of(exchange) == [("qc", 1), ("qa", 3), ("qb", 2)]
    assert len(exchange.bindings) == 4


def test_removing_a_binding_closes_the_gap_and_rebinding_appends() -> None:
    exchange = bound(a="2", b="3", c="1")
    b = queue_named(exchange, "b")
    exchange.remove_binding(Binding("x", b, "3", {}).key)
    assert ring_of(exchange) == [("a", 2), ("c", 1)]
    exchange.add_binding(Binding("x", b, "4", {}))
    assert ring_of(exchange) == [("a", 2), ("c", 1), ("b", 4)]


def test_removing_either_of_two_bindings_to_a_queue_takes_it_off_the_ring() -> None:
    exchange = bound(a="1", b="2")
    a = queue_named(exchange, "a")
    exchange.add_binding(Binding("x", a, "7", {}))
    exchange.remove_binding(Binding("x", a, "7", {}).key)
    assert ring_of(exchange) == [("b", 2)]
    assert routed(exchange, "anything") == ["b"]


def test_no_bindings_route_nowhere_and_one_bucket_takes_everything() -> None:
    assert routed(bound(), "k") == []
    exchange = bound(only="1")
    assert {name for key in range(20) for name in routed(exchange, f"k{key}")} == {"only"}


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_the_routing_key_picks_the_bucket_the_plugin_picks(routing_key: str) -> None:
    exchange = bound(a="1", b="5", c="2", d="3")
    owner = expected_owner(ring_of(exchange), routing_key.encode())
    assert routed(exchange, routing_key) == [owner]


def test_cc_keys_are_not_hashed() -> None:
    exchange = bound(a="1", b="1", c="1", d="1")
    msg = message("first", headers={"CC": ["second"]})
    chosen = [d.name for d in exchange.route(msg, ["first", "second"])]
    assert chosen == [expected_owner(ring_of(exchange), b"first")]


@given(st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans()))
def test_a_header_is_hashed_as_its_typed_value(value: object) -> None:
    exchange = bound({"hash-header": "shard"}, a="2", b="2", c="3")
    owner = expected_owner(ring_of(exchange), erlang_field(value))  # type: ignore[arg-type]
    assert routed(exchange, "ignored", headers={"shard": value}) == [owner]


def test_a_message_without_the_header_or_property_is_hashed_as_undefined() -> None:
    by_header = bound({"hash-header": "shard"}, a="1", b="1", c="1", d="1", e="1")
    owner = expected_owner(ring_of(by_header), UNDEFINED)
    assert routed(by_header, "k1") == routed(by_header, "k2", headers={"x": 1}) == [owner]
    by_id = bound({"hash-property": "message_id"}, a="1", b="1", c="1", d="1", e="1")
    assert routed(by_id, "k") == [owner]


@pytest.mark.parametrize(
    ("property_name", "value", "hashed"),
    [
        ("message_id", "id-42", b"id-42"),
        ("correlation_id", "corr-7", b"corr-7"),
        ("timestamp", 1700000000, b"1700000000"),
    ],
)
def test_a_property_is_hashed_as_a_binary(property_name: str, value: object, hashed: bytes) -> None:
    exchange = bound({"hash-property": property_name}, a="3", b="1", c="2", d="2")
    owner = expected_owner(ring_of(exchange), hashed)
    assert routed(exchange, "ignored", **{property_name: value}) == [owner]
