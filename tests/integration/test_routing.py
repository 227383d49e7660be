"""Routing with pika: direct, fanout, topic and headers exchanges, CC/BCC, mandatory returns.

Each test binds one queue per binding under test, publishes with publisher confirms (so
routing has finished when basic_publish returns), then reads every queue with basic.get.
Expected behaviour is RabbitMQ 3.10's, checked by running these tests against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import Cleanup, drain, wait_until

pytestmark = pytest.mark.timeout(30)


def bind_queues(
    channel: BlockingChannel,
    cleanup: Cleanup,
    exchange: str,
    bindings: Sequence[tuple[str, str, Mapping[str, Any] | None]],
) -> list[str]:
    """Declare one queue per `(label, routing_key, arguments)` binding; return queue names."""
    queues = []
    for label, routing_key, arguments in bindings:
        queue = cleanup.queue(f"{exchange}.{label}")
        channel.queue_declare(queue)
        channel.queue_bind(queue, exchange, routing_key=routing_key, arguments=arguments)
        queues.append(queue)
    return queues


def received(channel: BlockingChannel, queues: Sequence[str]) -> list[list[bytes]]:
    return [drain(channel, queue) for queue in queues]


def assert_routed(got: Mapping[str, list[Any]], expected: Mapping[str, list[Any]]) -> None:
    """Compare per binding, listing only the bindings that differ."""
    wrong = {
        label: {"got": got.get(label), "expected": expected[label]}
        for label in expected
        if got.get(label) != expected[label]
    }
    assert not wrong, f"bindings routed differently: {wrong}"


def test_direct_routes_on_exact_key(channel: BlockingChannel, name: str, cleanup: Cleanup) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    a, a_too, b = bind_queues(
        channel, cleanup, name, [("a", "key.a", None), ("a2", "key.a", None), ("b", "key.b", None)]
    )
    # A second binding of the same queue with another key delivers once per message.
    channel.queue_bind(b, name, routing_key="key.b2")
    channel.confirm_delivery()
    channel.basic_publish(name, "key.a", b"1")
    channel.basic_publish(name, "key.b", b"2")
    channel.basic_publish(name, "key.b2", b"3")
    channel.basic_publish(name, "KEY.A", b"case matters")
    channel.basic_publish(name, "key.*", b"no wildcards")
    assert received(channel, [a, a_too, b]) == [[b"1"], [b"1"], [b"2", b"3"]]


def test_same_binding_twice_delivers_once(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    (queue,) = bind_queues(channel, cleanup, name, [("q", "k", None)])
    channel.queue_bind(queue, name, routing_key="k")
    channel.confirm_delivery()
    channel.basic_publish(name, "k", b"once")
    assert drain(channel, queue) == [b"once"]


def test_fanout_ignores_routing_key(channel: BlockingChannel, name: str, cleanup: Cleanup) -> None:
    channel.exchange_declare(cleanup.exchange(name), "fanout")
    queues = bind_queues(channel, cleanup, name, [("a", "", None), ("b", "whatever", None)])
    channel.confirm_delivery()
    channel.basic_publish(name, "anything", b"1")
    channel.basic_publish(name, "", b"2")
    assert received(channel, queues) == [[b"1", b"2"], [b"1", b"2"]]


ROUTING_KEYS = [
    "a",
    "a.b",
    "a.x",
    "a.x.b",
    "a.x.y.b",
    "a.b.c",
    "a..b",
    "a.",
    ".b",
    "b",
    "",
    "x.a.b",
]

# pattern -> the routing keys above that it matches. An empty routing key has no words: "#"
# and "" match it, "*" and "#.*" do not; "a..b" has an empty middle word that "*" matches.
TOPIC_MATCHES: dict[str, list[str]] = {
    "a.*": ["a.b", "a.x", "a."],
    "a.*.b": ["a.x.b", "a..b"],
    "#": ROUTING_KEYS,
    "a.#": ["a", "a.b", "a.x", "a.x.b", "a.x.y.b", "a.b.c", "a..b", "a."],
    "a.#.b": ["a.b", "a.x.b", "a.x.y.b", "a..b"],
    "#.b": ["a.b", "a.x.b", "a.x.y.b", "a..b", ".b", "b", "x.a.b"],
    "a.b": ["a.b"],
    "*.*": ["a.b", "a.x", "a.", ".b"],
    "a..b": ["a..b"],
    "#.*": [key for key in ROUTING_KEYS if key],
    "": [""],
    "*": ["a", "b"],
    "#.#": ROUTING_KEYS,
    "#.a.#": ["a", "a.b", "a.x", "a.x.b", "a.x.y.b", "a.b.c", "a..b", "a.", "x.a.b"],
}


def test_topic_wildcards(channel: BlockingChannel, name: str, cleanup: Cleanup) -> None:
    channel.exchange_declare(cleanup.exchange(name), "topic")
    patterns = list(TOPIC_MATCHES)
    queues = bind_queues(
        channel,
        cleanup,
        name,
        [(f"p{index}", pattern, None) for index, pattern in enumerate(patterns)],
    )
    channel.confirm_delivery()
    for routing_key in ROUTING_KEYS:
        channel.basic_publish(name, routing_key, routing_key.encode())
    got = {
        f"pattern {pattern!r}": [body.decode() for body in bodies]
        for pattern, bodies in zip(patterns, received(channel, queues), strict=True)
    }
    expected = {f"pattern {pattern!r}": keys for pattern, keys in TOPIC_MATCHES.items()}
    assert_routed(got, expected)


HEADERS_MESSAGES: dict[str, dict[str, Any] | None] = {
    "both": {"format": "pdf", "type": "report"},
    "format": {"format": "pdf"},
    "format_and_tag": {"format": "pdf", "x-tag": "t"},
    "tag": {"x-tag": "t"},
    "wrong_value": {"format": "doc", "type": "report"},
    "int": {"n": 1},
    "int_as_string": {"n": "1"},
    "none": None,
}

# binding arguments -> the messages above that it matches. "all"/"any" ignore x-* keys in
# the binding, "all-with-x"/"any-with-x" (RabbitMQ 3.10+) compare them too; a void (None)
# binding value only asks for the header to be present.
HEADERS_MATCHES: list[tuple[dict[str, Any], list[str]]] = [
    ({"x-match": "all", "format": "pdf", "type": "report"}, ["both"]),
    (
        {"x-match": "any", "format": "pdf", "type": "report"},
        ["both", "format", "format_and_tag", "wrong_value"],
    ),
    ({"format": "pdf", "type": "report"}, ["both"]),
    ({"x-match": "all", "format": "pdf", "x-tag": "t"}, ["both", "format", "format_and_tag"]),
    ({"x-match": "any", "x-tag": "t"}, []),
    ({"x-match": "all-with-x", "format": "pdf", "x-tag": "t"}, ["format_and_tag"]),
    ({"x-match": "any-with-x", "x-tag": "t"}, ["format_and_tag", "tag"]),
    ({"x-match": "all", "n": 1}, ["int"]),
    ({"x-match": "all"}, list(HEADERS_MESSAGES)),
    ({"x-match": "any"}, []),
    ({"x-match": "all", "format": None}, ["both", "format", "format_and_tag", "wrong_value"]),
    ({"x-match": "any", "type": None, "n": None}, ["both", "wrong_value", "int", "int_as_string"]),
]


def test_headers_exchange_matching(channel: BlockingChannel, name: str, cleanup: Cleanup) -> None:
    channel.exchange_declare(cleanup.exchange(name), "headers")
    queues = bind_queues(
        channel,
        cleanup,
        name,
        [(f"b{index}", "", arguments) for index, (arguments, _) in enumerate(HEADERS_MATCHES)],
    )
    channel.confirm_delivery()
    for label, headers in HEADERS_MESSAGES.items():
        channel.basic_publish(
            name, "ignored", label.encode(), pika.BasicProperties(headers=headers)
        )
    got = {
        f"binding {arguments!r}": [body.decode() for body in bodies]
        for (arguments, _), bodies in zip(HEADERS_MATCHES, received(channel, queues), strict=True)
    }
    expected = {f"binding {arguments!r}": labels for arguments, labels in HEADERS_MATCHES}
    assert_routed(got, expected)


def test_cc_and_bcc_headers(channel: BlockingChannel, name: str, cleanup: Cleanup) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    main, cc, bcc, other = bind_queues(
        channel,
        cleanup,
        name,
        [
            ("main", "k.main", None),
            ("cc", "k.cc", None),
            ("bcc", "k.bcc", None),
            ("other", "k.other", None),
        ],
    )
    channel.confirm_delivery()
    headers = {"CC": ["k.cc"], "BCC": ["k.bcc"], "keep": "me"}
    channel.basic_publish(name, "k.main", b"copied", pika.BasicProperties(headers=headers))
    seen: dict[str, tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes]] = {}
    for queue in (main, cc, bcc):
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None, f"nothing routed to {queue}"
        seen[queue] = (method, properties, body)
    assert drain(channel, other) == []
    for method, properties, body in seen.values():
        assert body == b"copied"
        assert method.routing_key == "k.main"
        # CC stays visible to consumers; BCC is stripped from every copy.
        assert properties.headers == {"CC": ["k.cc"], "keep": "me"}


def test_cc_header_routes_through_topic(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "topic")
    first, second = bind_queues(
        channel, cleanup, name, [("first", "a.*", None), ("second", "b.#", None)]
    )
    channel.confirm_delivery()
    channel.basic_publish(
        name, "a.1", b"both", pika.BasicProperties(headers={"CC": ["b.2.3", "a.2"]})
    )
    # One copy per queue even though two keys match `first`.
    assert received(channel, [first, second]) == [[b"both"], [b"both"]]


def test_cc_header_on_the_default_exchange(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    first, second = cleanup.queue(f"{name}.1"), cleanup.queue(f"{name}.2")
    channel.queue_declare(first)
    channel.queue_declare(second)
    channel.confirm_delivery()
    channel.basic_publish("", first, b"cc", pika.BasicProperties(headers={"CC": [second]}))
    assert received(channel, [first, second]) == [[b"cc"], [b"cc"]]


def test_mandatory_unroutable_is_returned_before_the_ack(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    returned: list[tuple[pika.spec.Basic.Return, pika.BasicProperties, bytes]] = []
    channel.add_on_return_callback(
        lambda _channel, method, properties, body: returned.append((method, properties, body))
    )
    channel.confirm_delivery()
    # pika raises UnroutableError only if basic.return arrived before basic.ack.
    with pytest.raises(pika.exceptions.UnroutableError) as caught:
        channel.basic_publish(
            name,
            "nowhere",
            b"bounced",
            pika.BasicProperties(message_id="m-1", headers={"h": 1}),
            mandatory=True,
        )
    (message,) = caught.value.messages
    assert message.method.reply_code == 312
    assert message.method.reply_text == "NO_ROUTE"
    assert message.method.exchange == name
    assert message.method.routing_key == "nowhere"
    assert message.body == b"bounced"
    assert message.properties.message_id == "m-1"
    assert message.properties.headers == {"h": 1}
    wait_until(connection, lambda: bool(returned), what="on_return callback")
    method, _, body = returned[0]
    assert (method.reply_code, method.reply_text, body) == (312, "NO_ROUTE", b"bounced")
    # The channel is still usable and routable messages are simply acked.
    (queue,) = bind_queues(channel, cleanup, name, [("q", "somewhere", None)])
    channel.basic_publish(name, "somewhere", b"kept", mandatory=True)
    assert drain(channel, queue) == [b"kept"]


def test_non_mandatory_unroutable_is_dropped_and_acked(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "fanout")
    channel.confirm_delivery()
    channel.basic_publish(name, "", b"dropped")


def test_mandatory_return_without_confirms(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    returned: list[pika.spec.Basic.Return] = []
    channel.add_on_return_callback(lambda _ch, method, _props, _body: returned.append(method))
    channel.basic_publish("", name, b"no such queue", mandatory=True)
    wait_until(connection, lambda: bool(returned), what="basic.return")
    assert (returned[0].reply_code, returned[0].reply_text) == (312, "NO_ROUTE")
    assert (returned[0].exchange, returned[0].routing_key) == ("", name)
