"""Retry with backoff: a nacked or rejected message waits the delay for its attempt before
it is ready again (x-retry-delays, or x-retry-backoff-ms doubling up to
x-retry-backoff-max-ms), with x-delivery-count, and is dead-lettered past the delivery
limit. Other returns (recover, a closed channel) and queues without a schedule requeue at
once, as RabbitMQ does."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.errors import PreconditionFailed
from tests.broker.test_delivery_semantics import DLX, World, world

__all__ = ["world"]  # the fixture


def nack_and_wait(world: World, queue: str) -> list[int]:
    """Nack the next message each time it comes back; the waits it was given."""
    waits = []
    while True:
        got = world.channel.get(queue, no_ack=False)
        if got is None:
            return waits
        world.channel.nack(got[0], multiple=False, requeue=True)
        waited = 0
        while world.vhost.queues[queue].message_count == 0:
            if world.vhost.queues[queue].retrying_count == 0:
                return waits  # dead-lettered
            world.advance(10)
            waited += 10
        waits.append(waited)


def test_a_retry_schedule_by_attempt_whose_last_delay_repeats(world: World) -> None:
    world.declare("q", **{"x-retry-delays": [100, 500]})
    world.publish("q", b"m")
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    world.channel.nack(got[0], multiple=False, requeue=True)
    queue = world.vhost.queues["q"]
    assert (queue.message_count, queue.retrying_count) == (0, 1)
    world.advance(99)
    assert world.channel.get("q", no_ack=False) is None
    world.advance(1)
    again = world.channel.get("q", no_ack=False)
    assert again is not None
    assert again[1] is True  # redelivered
    assert again[2].headers["x-delivery-count"] == 1
    world.channel.reject(again[0], requeue=True)
    world.advance(499)
    assert queue.message_count == 0
    world.advance(1)
    assert queue.message_count == 1


def test_exponential_backoff_up_to_its_cap(world: World) -> None:
    world.declare("q", **{"x-retry-backoff-ms": 100, "x-retry-backoff-max-ms": 300})
    world.publish("q", b"m")
    waits = []
    for _ in range(4):
        got = world.channel.get("q", no_ack=False)
        assert got is not None
        world.channel.nack(got[0], multiple=False, requeue=True)
        waited = 0
        while world.vhost.queues["q"].message_count == 0:
            world.advance(10)
            waited += 10
        waits.append(waited)
    assert waits == [100, 200, 300, 300]


def test_past_the_delivery_limit_it_is_dead_lettered_not_retried(world: World) -> None:
    world.declare("dlq")
    world.declare("q", **{"x-retry-delays": [50], "x-delivery-limit": 2}, **DLX)
    world.publish("q", b"poison")
    assert nack_and_wait(world, "q") == [50, 50]
    assert world.deaths("dlq") == [("poison", "delivery_limit", 1)]


def test_the_retried_message_keeps_its_place_before_later_ones(world: World) -> None:
    world.declare("q", **{"x-retry-delays": [100]})
    world.publish("q", b"first")
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    world.channel.nack(got[0], multiple=False, requeue=True)
    world.publish("q", b"second")
    world.advance(100)
    assert world.bodies("q") == [b"first", b"second"]


@pytest.mark.parametrize("how", ["recover", "close"])
def test_returns_that_are_not_a_consumers_verdict_requeue_at_once(world: World, how: str) -> None:
    world.declare("q", **{"x-retry-delays": [10_000]})
    world.publish("q", b"m")
    assert world.channel.get("q", no_ack=False) is not None
    if how == "recover":
        world.channel.recover(requeue=True)
    else:
        world.channel.close()
    assert world.vhost.queues["q"].message_count == 1


def test_without_a_schedule_a_nack_requeues_at_once_without_x_delivery_count(
    world: World,
) -> None:
    world.declare("q")
    world.publish("q", b"m")
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    world.channel.nack(got[0], multiple=False, requeue=True)
    again = world.channel.get("q", no_ack=True)
    assert again is not None and again[1] is True
    assert "x-delivery-count" not in again[2].headers


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"x-retry-delays": 5}, "{unacceptable_type,long}"),
        ({"x-retry-delays": []}, "{empty_list}"),
        ({"x-retry-delays": [10, -1]}, "{value_negative,-1}"),
        ({"x-retry-delays": [10, "x"]}, "expected a list of integers"),
        ({"x-retry-backoff-ms": 0}, "{value_zero,0}"),
        (
            {"x-retry-delays": [1], "x-retry-backoff-ms": 5},
            "x_retry_delays_and_x_retry_backoff_ms_exclude_each_other",
        ),
        ({"x-retry-backoff-max-ms": 5}, "max_but_no_x_retry_backoff_ms_defined"),
    ],
)
def test_bad_retry_arguments_are_406(world: World, arguments: dict[str, Any], reason: str) -> None:
    with pytest.raises(PreconditionFailed) as error:
        world.declare("q", **arguments)
    assert reason in str(error.value)
