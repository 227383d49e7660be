"""Declare, delete, bind and route in a vhost, with RabbitMQ's rules and reply texts."""

from __future__ import annotations

import pytest

from amqpd.broker.vhost import VirtualHost
from amqpd.codec.fields import LongInt
from amqpd.errors import (
    AccessRefused,
    CommandInvalid,
    FeatureNotImplemented,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from tests.support.broker_harness import message

OWNER = object()
OTHER = object()


@pytest.fixture
def vhost() -> VirtualHost:
    return VirtualHost("/")


def routed(vhost: VirtualHost, exchange: str, routing_key: str, **properties: object) -> list[str]:
    msg = message(routing_key, exchange=exchange, **properties)
    return sorted(queue.name for queue in vhost.route(vhost.exchanges[exchange], msg))


def test_standard_exchanges_exist(vhost: VirtualHost) -> None:
    expected = {
        "": "direct",
        "amq.direct": "direct",
        "amq.fanout": "fanout",
        "amq.topic": "topic",
        "amq.headers": "headers",
        "amq.match": "headers",
    }
    assert {name: x.type_name for name, x in vhost.exchanges.items()} == expected
    assert all(exchange.durable for exchange in vhost.exchanges.values())


def test_default_exchange_routes_by_queue_name(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", owner=OWNER)
    assert routed(vhost, "", "q") == ["q"]
    assert routed(vhost, "", "other") == []


@pytest.mark.parametrize(
    "operation",
    [
        lambda v: v.declare_exchange("", "direct"),
        lambda v: v.declare_exchange("", "direct", passive=True),
        lambda v: v.delete_exchange(""),
        lambda v: v.bind("", v.declare_queue("q", owner=OWNER), "q", {}),
        lambda v: v.unbind("", v.declare_queue("q", owner=OWNER), "q", {}),
        lambda v: v.bind_exchange("amq.direct", "", "k", {}),
    ],
)
def test_default_exchange_is_off_limits(vhost: VirtualHost, operation: object) -> None:
    assert callable(operation)
    with pytest.raises(AccessRefused, match="^operation not permitted on the default exchange$"):
        operation(vhost)


def test_exchange_declare_and_equivalence(vhost: VirtualHost) -> None:
    first = vhost.declare_exchange("x", "topic", durable=True)
    assert vhost.declare_exchange("x", "topic", durable=True) is first
    assert vhost.declare_exchange("x", "fanout", passive=True) is first  # passive: no checks
    with pytest.raises(PreconditionFailed) as type_error:
        vhost.declare_exchange("x", "direct", durable=True)
    assert type_error.value.detail == (
        "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'direct' but current "
        "is 'topic'"
    )
    with pytest.raises(PreconditionFailed) as durable_error:
        vhost.declare_exchange("x", "topic", durable=False)
    assert durable_error.value.detail == (
        "inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'false' but current "
        "is 'true'"
    )


def test_exchange_declare_errors(vhost: VirtualHost) -> None:
    with pytest.raises(NotFound, match="^no exchange 'nope' in vhost '/'$"):
        vhost.declare_exchange("nope", "direct", passive=True)
    with pytest.raises(CommandInvalid, match="^unknown exchange type 'nope'$"):
        vhost.declare_exchange("x", "nope")
    with pytest.raises(
        AccessRefused, match="exchange name 'amq.x' contains reserved prefix 'amq.*'"
    ):
        vhost.declare_exchange("amq.x", "direct")
    assert vhost.declare_exchange("amq.direct", "direct", durable=True).name == "amq.direct"


def test_exchange_delete(vhost: VirtualHost) -> None:
    vhost.declare_exchange("x", "fanout")
    queue = vhost.declare_queue("q", owner=OWNER)
    vhost.bind("x", queue, "", {})
    with pytest.raises(PreconditionFailed, match="exchange 'x' in vhost '/' in use"):
        vhost.delete_exchange("x", if_unused=True)
    vhost.delete_exchange("x")
    assert "x" not in vhost.exchanges
    vhost.delete_exchange("x")  # again: deleting what is not there succeeds
    with pytest.raises(
        AccessRefused, match="^deletion of system exchange 'amq.fanout' in vhost '/' not allowed$"
    ):
        vhost.delete_exchange("amq.fanout")


def test_auto_delete_exchange_goes_with_its_last_binding(vhost: VirtualHost) -> None:
    vhost.declare_exchange("x", "direct", auto_delete=True)
    queue = vhost.declare_queue("q", owner=OWNER)
    vhost.bind("x", queue, "a", {})
    vhost.bind("x", queue, "b", {})
    vhost.unbind("x", queue, "a", {})
    assert "x" in vhost.exchanges
    vhost.unbind("x", queue, "b", {})
    assert "x" not in vhost.exchanges


def test_deleting_a_queue_removes_its_bindings_and_auto_deletes_sources(vhost: VirtualHost) -> None:
    vhost.declare_exchange("x", "fanout", auto_delete=True)
    queue = vhost.declare_queue("q", owner=OWNER)
    vhost.bind("x", queue, "", {})
    vhost.bind("amq.fanout", queue, "", {})
    assert vhost.delete_queue(queue) == 0
    assert "x" not in vhost.exchanges
    assert not vhost.exchanges["amq.fanout"].bindings


def test_queue_declare_rules(vhost: VirtualHost) -> None:
    generated = vhost.declare_queue("", owner=OWNER)
    assert generated.name.startswith("amq.gen-") and len(generated.name) == len("amq.gen-") + 22
    with pytest.raises(AccessRefused, match="queue name 'amq.q' contains reserved prefix 'amq.*'"):
        vhost.declare_queue("amq.q", owner=OWNER)
    with pytest.raises(NotFound, match="^no queue 'missing' in vhost '/'$"):
        vhost.declare_queue("missing", owner=OWNER, passive=True)
    queue = vhost.declare_queue("q", owner=OWNER, durable=True, arguments={"x-max-length-foo": 1})
    assert vhost.declare_queue("q", owner=OWNER, durable=True) is queue  # unknown args not compared
    with pytest.raises(PreconditionFailed) as error:
        vhost.declare_queue("q", owner=OWNER, durable=False)
    assert error.value.detail == (
        "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but current is "
        "'true'"
    )


def test_queue_argument_equivalence_compares_known_arguments(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", owner=OWNER, arguments={"x-queue-mode": "lazy"})
    vhost.declare_queue("q", owner=OWNER, arguments={"x-queue-mode": "lazy"})
    with pytest.raises(PreconditionFailed) as error:
        vhost.declare_queue("q", owner=OWNER)
    assert error.value.detail == (
        "inequivalent arg 'x-queue-mode' for queue 'q' in vhost '/': received none but current "
        "is the value 'lazy' of type 'longstr'"
    )


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [  # RabbitMQ 3.10's reasons, verbatim
        ({"x-message-ttl": -1}, "{value_negative,-1}"),
        ({"x-message-ttl": "abc"}, '"expected integer, got longstr"'),
        ({"x-message-ttl": 1.5}, '"expected integer, got double"'),
        ({"x-expires": 0}, "{value_zero,0}"),
        ({"x-expires": -5}, "{value_negative,-5}"),
        ({"x-max-length": -5}, "{value_negative,-5}"),
        ({"x-max-length-bytes": -1}, "{value_negative,-1}"),
        ({"x-overflow": "sometimes"}, "invalid_overflow"),
        ({"x-queue-type": "foo"}, "\"unsupported queue type 'foo'\""),
        ({"x-queue-type": LongInt(1)}, "{unacceptable_type,signedint}"),
        ({"x-queue-mode": "foo"}, "\"unsupported queue mode 'foo'\""),
        ({"x-max-priority": 300}, "{max_value_exceeded,300}"),
        ({"x-max-priority": -1}, "{value_negative,-1}"),
        ({"x-single-active-consumer": "yes"}, "{unacceptable_type,longstr}"),
        ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
    ],
)
def test_invalid_queue_arguments_are_refused(
    vhost: VirtualHost, arguments: dict[str, object], reason: str
) -> None:
    with pytest.raises(PreconditionFailed) as error:
        vhost.declare_queue("q", owner=OWNER, arguments=arguments)  # type: ignore[arg-type]
    key = next(iter(arguments))
    assert error.value.detail == f"invalid arg '{key}' for queue 'q' in vhost '/': {reason}"
    assert "q" not in vhost.queues


def test_an_unimplemented_queue_type_is_refused_not_ignored(vhost: VirtualHost) -> None:
    with pytest.raises(FeatureNotImplemented, match="is not supported by this version of amqpd"):
        vhost.declare_queue("q", owner=OWNER, arguments={"x-queue-type": "quorum"})
    assert "q" not in vhost.queues


def test_quorum_only_arguments_are_refused_on_classic_queues(vhost: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed) as error:
        vhost.declare_queue("q", owner=OWNER, arguments={"x-dead-letter-strategy": "at-least-once"})
    assert error.value.detail == (
        "invalid arg 'x-dead-letter-strategy' for queue 'q' in vhost '/' of queue type "
        "rabbit_classic_queue"
    )


def test_exclusive_queue_is_locked_to_its_connection(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", owner=OWNER, exclusive=True)
    assert vhost.queue("q", OWNER).exclusive
    with pytest.raises(ResourceLocked, match="cannot obtain exclusive access to locked queue 'q'"):
        vhost.queue("q", OTHER)
    with pytest.raises(ResourceLocked):
        vhost.declare_queue("q", owner=OTHER, passive=True)
    with pytest.raises(ResourceLocked):
        vhost.declare_queue("q", owner=OTHER, exclusive=True)
    with pytest.raises(ResourceLocked):  # even its owner must redeclare it exclusive
        vhost.declare_queue("q", owner=OWNER, exclusive=False)
    # The durable flag of an exclusive queue is not compared (it never survives anyway).
    assert vhost.declare_queue("q", owner=OWNER, exclusive=True, durable=True).exclusive


def test_a_shared_queue_cannot_be_redeclared_exclusive(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", owner=OWNER)
    with pytest.raises(ResourceLocked):
        vhost.declare_queue("q", owner=OWNER, exclusive=True)


def test_queue_delete_preconditions(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", owner=OWNER)
    queue.enqueue(message("q"), 0)
    with pytest.raises(PreconditionFailed, match="queue 'q' in vhost '/' not empty"):
        vhost.delete_queue(queue, if_empty=True)
    assert vhost.delete_queue(queue) == 1
    assert "q" not in vhost.queues


def test_exchange_to_exchange_routing_visits_each_exchange_once(vhost: VirtualHost) -> None:
    vhost.declare_exchange("a", "fanout")
    vhost.declare_exchange("b", "fanout")
    queue = vhost.declare_queue("q", owner=OWNER)
    vhost.bind_exchange("a", "b", "", {})
    vhost.bind_exchange("b", "a", "", {})  # a cycle
    vhost.bind("b", queue, "", {})
    assert routed(vhost, "a", "k") == ["q"]


def test_alternate_exchange_takes_what_its_exchange_cannot_route(vhost: VirtualHost) -> None:
    vhost.declare_exchange("ae", "fanout")
    vhost.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    routed_q = vhost.declare_queue("routed", owner=OWNER)
    unrouted_q = vhost.declare_queue("unrouted", owner=OWNER)
    vhost.bind("x", routed_q, "k", {})
    vhost.bind("ae", unrouted_q, "", {})
    assert routed(vhost, "x", "k") == ["routed"]
    assert routed(vhost, "x", "other") == ["unrouted"]


def test_alternate_exchange_that_is_missing_routes_nowhere(vhost: VirtualHost) -> None:
    vhost.declare_exchange("x", "direct", arguments={"alternate-exchange": "gone"})
    assert routed(vhost, "x", "k") == []


def test_alternate_exchange_must_be_a_string(vhost: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed, match="invalid arg 'alternate-exchange'"):
        vhost.declare_exchange("x", "direct", arguments={"alternate-exchange": 5})


def test_cc_and_bcc_add_routing_keys(vhost: VirtualHost) -> None:
    for name in ("main", "copy", "blind"):
        vhost.declare_queue(name, owner=OWNER)
    assert routed(vhost, "", "main", headers={"CC": ["copy"], "BCC": ["blind"]}) == [
        "blind",
        "copy",
        "main",
    ]
    vhost.declare_exchange("t", "topic")
    vhost.bind("t", vhost.queues["copy"], "c.*", {})
    assert routed(vhost, "t", "none", headers={"CC": ["c.x"]}) == ["copy"]


def test_message_without_bcc_drops_only_bcc() -> None:
    original = message("k", headers={"CC": ["a"], "BCC": ["b"], "other": 1})
    assert original.has_bcc()
    copy = original.without_bcc()
    assert copy.headers == {"CC": ["a"], "other": 1}
    assert not copy.has_bcc()
    assert copy.body == original.body
