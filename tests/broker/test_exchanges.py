"""Exchange types route as RabbitMQ's do: direct, fanout, topic (trie) and headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.broker.binding import Binding
from amqpd.broker.exchanges import (
    DirectExchange,
    FanoutExchange,
    HeadersExchange,
    TopicExchange,
)
from amqpd.broker.exchanges.headers import headers_match
from amqpd.broker.queue import Queue
from amqpd.codec.fields import LongInt, ShortShortInt
from amqpd.errors import PreconditionFailed
from tests.support.broker_harness import message


def queues(*names: str) -> list[Queue]:
    return [Queue(name, "/") for name in names]


def routed(exchange: object, routing_key: str = "", **properties: object) -> set[str]:
    assert hasattr(exchange, "route")
    msg = message(routing_key, **properties)
    return {destination.name for destination in exchange.route(msg, [routing_key])}


def test_direct_routes_on_equal_key_only() -> None:
    exchange = DirectExchange("d", "/")
    q1, q2 = queues("q1", "q2")
    exchange.add_binding(Binding("d", q1, "a", {}))
    exchange.add_binding(Binding("d", q2, "b", {}))
    assert routed(exchange, "a") == {"q1"}
    assert routed(exchange, "b") == {"q2"}
    assert routed(exchange, "c") == set()


def test_direct_binding_twice_with_other_key_then_unbinding_one_keeps_the_other() -> None:
    exchange = DirectExchange("d", "/")
    (q1,) = queues("q1")
    first = Binding("d", q1, "a", {})
    second = Binding("d", q1, "a", {"x-tag": 1})  # same key, other arguments: another binding
    assert exchange.add_binding(first)
    assert exchange.add_binding(second)
    assert not exchange.add_binding(Binding("d", q1, "a", {}))  # identical: not added again
    exchange.remove_binding(first.key)
    assert routed(exchange, "a") == {"q1"}
    exchange.remove_binding(second.key)
    assert routed(exchange, "a") == set()


def test_fanout_ignores_the_routing_key() -> None:
    exchange = FanoutExchange("f", "/")
    for queue in queues("q1", "q2"):
        exchange.add_binding(Binding("f", queue, "anything", {}))
    assert routed(exchange, "whatever") == {"q1", "q2"}


TOPIC_CASES = [
    ("*.orange.*", "quick.orange.rabbit", True),
    ("*.orange.*", "quick.orange.male.rabbit", False),
    ("*.*.rabbit", "lazy.pink.rabbit", True),
    ("lazy.#", "lazy", True),
    ("lazy.#", "lazy.orange.male.rabbit", True),
    ("lazy.#", "lazier", False),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("*", "", False),  # the empty key has no words at all
    ("#.*", "", False),
    ("#.#", "", True),
    ("*", ".", False),  # "." is two empty words
    ("*.*", ".", True),
    ("*", "a.b", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y.c", False),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
    ("#.#", "a", True),
    ("#.a.#", "a", True),
    ("#.a.#", "b.a.c", True),
    ("#.a.#", "b.c", False),
    ("a.*", "a", False),
    ("a.#", "a.", True),
    ("", "", True),
    ("", "a", False),
]


@pytest.mark.parametrize(("binding_key", "routing_key", "matches"), TOPIC_CASES)
def test_topic_wildcards(binding_key: str, routing_key: str, matches: bool) -> None:
    exchange = TopicExchange("t", "/")
    (queue,) = queues("q")
    exchange.add_binding(Binding("t", queue, binding_key, {}))
    assert routed(exchange, routing_key) == ({"q"} if matches else set())


def split(key: str) -> list[str]:
    return key.split(".") if key else []


def _brute_force(pattern: list[str], words: list[str]) -> bool:
    """The topic rules read directly off the words, independent of the trie."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_brute_force(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _brute_force(rest, words[1:])


words = st.sampled_from(["a", "b", ""])
binding_words = st.sampled_from(["a", "b", "", "*", "#"])


@given(
    bindings=st.lists(st.lists(binding_words, min_size=0, max_size=5), min_size=1, max_size=6),
    routing_key=st.lists(words, min_size=0, max_size=6),
)
def test_topic_trie_agrees_with_brute_force(
    bindings: list[list[str]], routing_key: list[str]
) -> None:
    exchange = TopicExchange("t", "/")
    targets = queues(*[f"q{index}" for index in range(len(bindings))])
    for queue, binding in zip(targets, bindings, strict=True):
        exchange.add_binding(Binding("t", queue, ".".join(binding), {}))
    key = ".".join(routing_key)
    expected = {
        queue.name
        for queue, binding in zip(targets, bindings, strict=True)
        if _brute_force(split(".".join(binding)), split(key))
    }
    assert routed(exchange, key) == expected
    # Removing every binding leaves an empty trie that matches nothing.
    for queue, binding in zip(targets, bindings, strict=True):
        exchange.remove_binding(Binding("t", queue, ".".join(binding), {}).key)
    assert routed(exchange, key) == set()
    assert not exchange._root.children


def test_topic_cache_is_invalidated_by_new_bindings() -> None:
    exchange = TopicExchange("t", "/")
    q1, q2 = queues("q1", "q2")
    exchange.add_binding(Binding("t", q1, "a.*", {}))
    assert routed(exchange, "a.b") == {"q1"}
    exchange.add_binding(Binding("t", q2, "#", {}))
    assert routed(exchange, "a.b") == {"q1", "q2"}


@pytest.mark.parametrize(
    ("arguments", "headers", "matches"),
    [
        ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
        ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
        ({"a": 1}, {"a": 1}, True),  # x-match defaults to all
        ({"x-match": "any", "a": 1, "b": "x"}, {"b": "x"}, True),
        ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2, "b": "y"}, False),
        ({"x-match": "all"}, {}, True),  # nothing to match: all succeeds
        ({"x-match": "any"}, {"a": 1}, False),  # nothing to match: any fails
        ({"x-match": "all", "x-k": 1, "a": 1}, {"a": 1}, True),  # x- keys ignored
        ({"x-match": "all-with-x", "x-k": 1, "a": 1}, {"a": 1}, False),
        ({"x-match": "all-with-x", "x-k": 1, "a": 1}, {"a": 1, "x-k": 1}, True),
        ({"x-match": "any", "x-k": 1}, {"x-k": 1}, False),
        ({"x-match": "any-with-x", "x-k": 1}, {"x-k": 1}, True),
        ({"x-match": "all", "a": None}, {"a": "anything"}, True),  # void: presence only
        ({"x-match": "all", "a": None}, {}, False),
        ({"a": LongInt(5)}, {"a": ShortShortInt(5)}, True),  # integer widths compare by value
        ({"a": 5}, {"a": 5.0}, False),  # int and double are different type classes
        ({"a": "1"}, {"a": 1}, False),
        ({"a": True}, {"a": 1}, False),
    ],
)
def test_headers_match(
    arguments: dict[str, object], headers: dict[str, object], matches: bool
) -> None:
    assert headers_match(arguments, headers) is matches  # type: ignore[arg-type]


def test_headers_exchange_routes_on_message_headers() -> None:
    exchange = HeadersExchange("h", "/")
    q1, q2 = queues("q1", "q2")
    exchange.add_binding(Binding("h", q1, "", {"x-match": "any", "type": "a"}))
    exchange.add_binding(Binding("h", q2, "", {"x-match": "all", "type": "a", "size": 2}))
    assert routed(exchange, headers={"type": "a", "size": 2}) == {"q1", "q2"}
    assert routed(exchange, headers={"type": "a"}) == {"q1"}
    assert routed(exchange) == set()  # a message without headers


def test_headers_exchange_refuses_unknown_x_match() -> None:
    exchange = HeadersExchange("h", "/")
    with pytest.raises(PreconditionFailed) as value_error:
        exchange.validate_binding("", {"x-match": "some"})
    assert value_error.value.detail == (
        'Invalid x-match field value <<"some">>; expected all, any, all-with-x, or any-with-x'
    )
    with pytest.raises(PreconditionFailed) as type_error:
        exchange.validate_binding("", {"x-match": LongInt(1)})
    assert type_error.value.detail == (
        "Invalid x-match field type signedint (value 1); expected longstr"
    )
