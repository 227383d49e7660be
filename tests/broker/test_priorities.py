"""Priority queues (x-max-priority) in the broker domain: order, requeue, limits, expiry,
paging and recovery, with logs in memory. The expected orders are RabbitMQ 3.10's."""

from __future__ import annotations

import pytest

from amqpd.broker.queue import queue_key
from amqpd.errors import PreconditionFailed
from tests.broker.test_delivery_semantics import DLX, PERSISTENT, World, world

__all__ = ["world"]  # the fixture


def publish_all(
    world: World, queue: str, priorities: list[int | None], **properties: object
) -> None:
    for index, priority in enumerate(priorities):
        extra = dict(properties)
        if priority is not None:
            extra["priority"] = priority
        world.publish(queue, f"{index}:{priority}".encode(), **extra)


def test_highest_priority_first_fifo_within_a_level_and_above_the_maximum_counts_as_it() -> None:
    world = World()
    world.declare("q", **{"x-max-priority": 3})
    publish_all(world, "q", [None, 1, 5, 3, 0, 2, 3, None, 200])
    assert world.bodies("q") == [
        b"2:5",
        b"3:3",
        b"6:3",
        b"8:200",
        b"5:2",
        b"1:1",
        b"0:None",
        b"4:0",
        b"7:None",
    ]


def test_a_requeued_message_goes_back_to_its_place_in_its_level() -> None:
    world = World()
    world.declare("q", **{"x-max-priority": 2})
    publish_all(world, "q", [0, 2, 1, 2])
    taken = [world.channel.get("q", no_ack=False) for _ in range(3)]
    assert [got[2].body for got in taken if got is not None] == [b"1:2", b"3:2", b"2:1"]
    world.channel.recover(requeue=True)
    got = [world.channel.get("q", no_ack=True) for _ in range(4)]
    assert [(item[2].body, item[1]) for item in got if item is not None] == [
        (b"1:2", True),
        (b"3:2", True),
        (b"2:1", True),
        (b"0:0", False),
    ]


def test_max_length_drops_the_head_of_the_highest_level() -> None:
    world = World()
    world.declare("q", **{"x-max-priority": 3, "x-max-length": 3})
    publish_all(world, "q", [1, 3, 0, 2, 0])
    assert world.bodies("q") == [b"0:1", b"2:0", b"4:0"]


def test_queue_ttl_expires_the_heads_of_every_level() -> None:
    world = World()
    world.declare("dlq")
    world.declare("q", **{"x-max-priority": 2, "x-message-ttl": 100}, **DLX)
    publish_all(world, "q", [0, 2])
    world.advance(50)
    publish_all(world, "q", [1])
    world.advance(50)
    assert sorted(world.deaths("dlq")) == [("0:0", "expired", 1), ("1:2", "expired", 1)]
    assert world.bodies("q") == [b"0:1"]


def test_a_waiting_consumer_gets_a_message_at_once_whatever_its_priority() -> None:
    world = World()
    world.declare("q", **{"x-max-priority": 5})
    world.channel.qos(0, 1, global_=False)
    consumer = world.channel.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    world.channel.start(consumer)
    publish_all(world, "q", [0, 5, 1])
    # The first went straight out; then the prefetch is full and the rest wait by priority.
    world.channel.ack(1, multiple=False)
    world.channel.ack(2, multiple=False)
    assert [delivery.body for delivery in world.sink.deliveries] == [b"0:0", b"1:5", b"2:1"]


def test_a_paged_priority_queue_keeps_the_order() -> None:
    # Room in memory for a message or two: the rest goes to a partition per level.
    world = World(queue_bytes_max=600, with_storage=True)
    world.declare("q", **{"x-max-priority": 2})
    priorities = [index % 3 for index in range(30)]
    publish_all(world, "q", priorities)
    assert len(world.storage.partitions[queue_key("/", "q")]) == 3  # type: ignore[union-attr]
    expected = [
        f"{index}:{priority}".encode()
        for priority in (2, 1, 0)
        for index, level in enumerate(priorities)
        if level == priority
    ]
    assert world.bodies("q") == expected


def test_a_durable_priority_queue_comes_back_in_order_after_a_restart() -> None:
    world = World(with_storage=True)
    world.declare("q", durable=True, **{"x-max-priority": 2})
    publish_all(world, "q", [0, 1, 2, 1, 0], **PERSISTENT)
    assert world.storage is not None
    logs = world.storage.partitions[queue_key("/", "q")]
    assert [len(log.live()) for log in logs] == [2, 2, 1]
    first = world.channel.get("q", no_ack=False)
    assert first is not None and first[2].body == b"2:2"  # delivered, never acked: a crash
    later = World(with_storage=True)
    later.vhost._add_queue("q", True, False, None, False, {"x-max-priority": 2}, logs)
    assert later.vhost.queues["q"].message_count == 5
    got = []
    while (item := later.channel.get("q", no_ack=True)) is not None:
        got.append((item[2].body, item[1]))
    assert got == [
        (b"2:2", True),
        (b"1:1", False),
        (b"3:1", False),
        (b"0:0", False),
        (b"4:0", False),
    ]
    assert [log.live() for log in logs] == [[], [], []]


@pytest.mark.parametrize("value", [0, 1, 255])
def test_max_priority_from_0_to_255_is_accepted(world: World, value: int) -> None:
    world.declare("q", **{"x-max-priority": value})
    publish_all(world, "q", [0, 9])
    # 0 makes a queue without priorities (RabbitMQ accepts it): plain FIFO.
    assert world.bodies("q") == ([b"1:9", b"0:0"] if value else [b"0:0", b"1:9"])


def test_max_priority_is_compared_on_redeclare(world: World) -> None:
    world.declare("q", **{"x-max-priority": 3})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-max-priority'"):
        world.declare("q", **{"x-max-priority": 4})
