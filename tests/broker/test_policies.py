"""Policies in the broker domain: which one applies, how it combines with arguments
(RabbitMQ's rules), and what changing the policies does to queues already there."""

from __future__ import annotations

import re

import pytest

from amqpd.broker.policies import Policy, choose, queue_arguments
from tests.broker.test_delivery_semantics import DLX, World, world
from tests.support.broker_harness import header

__all__ = ["world"]  # the fixture


def policy(
    name: str, pattern: str, apply_to: str = "all", priority: int = 0, **definition: str | int
) -> Policy:
    return Policy(
        name,
        re.compile(pattern),
        {key.replace("_", "-"): value for key, value in definition.items()},
        apply_to,
        priority,
    )


def test_the_highest_priority_match_applies_alone_and_ties_go_to_the_first_name() -> None:
    low = policy("low", "^orders", max_length=1)
    high = policy("high", "orders", priority=5, message_ttl=10)
    other = policy("other", "^payments")
    assert choose([low, high, other], "queue", "orders.new") is high
    assert choose([low, high, other], "queue", "new.orders") is high  # unanchored search
    assert choose([low, other], "queue", "orders.new") is low
    assert choose([other], "queue", "orders.new") is None
    b, a = policy("b", "."), policy("a", ".")
    assert choose([b, a], "queue", "q") is a


def test_apply_to_limits_a_policy_to_queues_or_exchanges() -> None:
    queues = policy("q", ".", apply_to="queues")
    exchanges = policy("x", ".", apply_to="exchanges")
    assert choose([queues, exchanges], "queue", "name") is queues
    assert choose([queues, exchanges], "exchange", "name") is exchanges


def test_limits_take_the_lower_value_and_other_keys_the_argument() -> None:
    applied = policy(
        "p",
        ".",
        message_ttl=1000,
        max_length=5,
        expires=60_000,
        dead_letter_exchange="from-policy",
        overflow="reject-publish",
        delivery_limit=3,
    )
    arguments = {
        "x-message-ttl": 50,
        "x-max-length": 10,
        "x-dead-letter-exchange": "from-argument",
    }
    assert queue_arguments(arguments, applied) == {
        "x-message-ttl": 50,
        "x-max-length": 5,
        "x-expires": 60_000,
        "x-dead-letter-exchange": "from-argument",
        "x-overflow": "reject-publish",
        "x-delivery-limit": 3,
    }


def test_a_new_queue_takes_its_policy(world: World) -> None:
    world.declare("dlq")
    world.vhost.set_policies([policy("ttl", "^q$", message_ttl=100, **_dlx())])
    world.declare("q")
    world.publish("q", b"a")
    world.advance(100)
    assert world.deaths("dlq") == [("a", "expired", 1)]


def test_a_policy_set_later_trims_an_existing_queue_to_its_max_length(world: World) -> None:
    world.declare("dlq")
    world.declare("q")
    for body in (b"1", b"2", b"3"):
        world.publish("q", body)
    world.vhost.set_policies([policy("cap", "^q$", max_length=1, **_dlx())])
    assert world.deaths("dlq") == [("1", "maxlen", 1), ("2", "maxlen", 1)]
    world.publish("q", b"4")
    assert world.bodies("q") == [b"4"]


def test_a_byte_limit_set_later_counts_what_is_already_there_even_on_disk() -> None:
    world = World(queue_bytes_max=600, with_storage=True)  # most of it paged out
    world.declare("q")
    for index in range(10):
        world.publish("q", b"%03d" % index)  # 3 bytes each: 30 bytes
    world.vhost.set_policies([policy("bytes", "^q$", max_length_bytes=9)])
    assert world.vhost.queues["q"].message_count == 3
    assert world.bodies("q") == [b"007", b"008", b"009"]


def test_a_shorter_ttl_later_expires_new_messages_behind_old_ones(world: World) -> None:
    world.declare("dlq")
    world.vhost.set_policies([policy("ttl", "^q$", message_ttl=10_000, **_dlx())])
    world.declare("q")
    world.publish("q", b"old")
    world.vhost.set_policies([policy("ttl", "^q$", message_ttl=10, **_dlx())])
    world.publish("q", b"new")
    world.advance(10)
    assert world.deaths("dlq") == [("new", "expired", 1)]
    assert world.vhost.queues["q"].message_count == 1  # the old one keeps its deadline


def test_removing_a_policy_lifts_its_limits(world: World) -> None:
    world.vhost.set_policies([policy("cap", "^q$", max_length=1)])
    world.declare("q")
    world.vhost.set_policies([])
    for body in (b"1", b"2"):
        world.publish("q", body)
    assert world.bodies("q") == [b"1", b"2"]


def test_a_queue_argument_keeps_its_say_against_a_looser_policy(world: World) -> None:
    world.vhost.set_policies([policy("cap", "^q$", max_length=5)])
    world.declare("q", **{"x-max-length": 1})
    for body in (b"1", b"2"):
        world.publish("q", body)
    assert world.bodies("q") == [b"2"]


def test_expires_from_a_policy_deletes_an_unused_queue(world: World) -> None:
    world.declare("q")
    world.vhost.set_policies([policy("gc", "^q$", expires=1000)])
    world.advance(999)
    assert "q" in world.vhost.queues
    world.advance(1)
    assert "q" not in world.vhost.queues


def test_delivery_limit_from_a_policy(world: World) -> None:
    world.declare("dlq")
    world.vhost.set_policies([policy("poison", "^q$", delivery_limit=0, **_dlx())])
    world.declare("q")
    world.publish("q", b"poison")
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    world.channel.nack(got[0], multiple=False, requeue=True)
    assert world.deaths("dlq") == [("poison", "delivery_limit", 1)]


def test_alternate_exchange_from_a_policy_unless_the_exchange_names_its_own(
    world: World,
) -> None:
    world.vhost.declare_exchange("ae", "fanout")
    world.vhost.declare_exchange("own-ae", "fanout")
    for queue, exchange in (("caught", "ae"), ("own", "own-ae")):
        world.vhost.bind(exchange, world.declare(queue), "", {})
    world.vhost.set_policies([policy("ae", "^in", apply_to="exchanges", alternate_exchange="ae")])
    world.vhost.declare_exchange("in.plain", "direct")
    world.vhost.declare_exchange("in.own", "direct", arguments={"alternate-exchange": "own-ae"})
    for exchange in ("in.plain", "in.own"):
        world.channel.publish(
            exchange, "nowhere", False, False, header(b"x"), b"x", None, world.clock()
        )
    assert world.bodies("caught") == [b"x"]
    assert world.bodies("own") == [b"x"]


@pytest.mark.parametrize("apply_to", ["queues", "all"])
def test_a_policy_for_queues_leaves_exchanges_alone(world: World, apply_to: str) -> None:
    world.vhost.set_policies([policy("p", ".", apply_to=apply_to, alternate_exchange="ae")])
    exchange = world.vhost.declare_exchange("x", "direct")
    assert (exchange.alternate_exchange == "ae") is (apply_to == "all")


def _dlx() -> dict[str, str]:
    return {
        "dead_letter_exchange": DLX["x-dead-letter-exchange"],
        "dead_letter_routing_key": DLX["x-dead-letter-routing-key"],
    }


def test_retry_backoff_from_a_policy(world: World) -> None:
    world.vhost.set_policies([policy("retry", "^q$", retry_backoff_ms=100)])
    world.declare("q")
    world.publish("q", b"m")
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    world.channel.nack(got[0], multiple=False, requeue=True)
    assert world.vhost.queues["q"].retrying_count == 1
    world.advance(100)
    assert world.vhost.queues["q"].message_count == 1
