"""Partitioned queues (x-partitions) in the broker domain: the partition of a key, the
assignment of partitions to consumers, hand-over only once the old owner has settled,
order per key, basic.get, limits, TTL, retries and recovery; clock moved by hand."""

from __future__ import annotations

import zlib
from collections import defaultdict

import pytest

from amqpd.broker.channel import Channel
from amqpd.broker.message import Message
from amqpd.broker.partitions import PartitionedQueue, assign, partition_key, partition_of
from amqpd.broker.queue import queue_key
from amqpd.errors import PreconditionFailed
from tests.broker.test_delivery_semantics import DLX, PERSISTENT, World
from tests.support.broker_harness import RecordingSink, header


def key_in(partition: int, count: int, skip: int = 0) -> str:
    """A routing key of `partition` (the `skip`-th such key)."""
    found = 0
    for index in range(10_000):
        key = f"key-{index}"
        if partition_of(key.encode(), count) == partition:
            if found == skip:
                return key
            found += 1
    raise AssertionError("no key found")


def send(world: World, key: str, body: str, **properties: object) -> None:
    """Publish `body` to "q" through the default exchange (whose routing key is the
    queue's name), keyed by the x-partition-key header."""
    world.publish("q", body.encode(), headers={"x-partition-key": key}, **properties)


def declare(world: World, partitions: int, **arguments: object) -> PartitionedQueue:
    queue = world.declare("q", **{"x-partitions": partitions}, **arguments)  # type: ignore[arg-type]
    assert isinstance(queue, PartitionedQueue)
    return queue


def consume(
    world: World, number: int, tag: str, prefetch: int = 0
) -> tuple[Channel, RecordingSink]:
    channel, sink = world.client.channel(number)
    channel.qos(0, prefetch, global_=False)
    channel.start(channel.consume("q", tag, no_ack=False, exclusive=False, arguments={}))
    return channel, sink


def bodies(sink: RecordingSink) -> list[bytes]:
    return [delivery.body for delivery in sink.deliveries]


def tags(sink: RecordingSink) -> list[int]:
    return [delivery.delivery_tag for delivery in sink.deliveries]


# ------------------------------------------------------------------ keys


def test_the_partition_is_crc32_of_the_key_modulo_the_count() -> None:
    # Fixed numbers: a change of hash would move every key of every durable queue.
    assert zlib.crc32(b"order-42") == 1_475_806_942
    assert partition_of(b"order-42", 16) == 1_475_806_942 % 16
    assert partition_of(b"", 7) == 0
    assert partition_of("ключ".encode(), 1) == 0


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        (None, b"rk"),
        ({"x-partition-key": "customer-7"}, b"customer-7"),
        ({"x-partition-key": "ключ"}, "ключ".encode()),
        ({"x-partition-key": 42}, b"42"),
        ({"x-partition-key": b"raw"}, b"raw"),
        ({"x-partition-key": True}, b"rk"),  # neither text nor a number: the routing key
        ({"x-partition-key": {"a": 1}}, b"rk"),
        ({"other": "x"}, b"rk"),
    ],
)
def test_the_key_is_the_header_when_it_has_text_else_the_routing_key(
    headers: dict[str, object] | None, key: bytes
) -> None:
    message = Message("", "rk", header(b"m", headers=headers), b"m")
    assert partition_key(message) == key


# ------------------------------------------------------------ assignment


def test_assignment_is_balanced_and_the_earlier_consumers_take_the_extra() -> None:
    assert assign(5, ["a", "b"], [None] * 5) == ["a", "a", "a", "b", "b"]
    assert assign(4, [], ["a"] * 4) == [None] * 4
    assert assign(2, ["a", "b", "c"], [None] * 2) == ["a", "b"]


def test_assignment_is_sticky_moving_only_what_the_balance_needs() -> None:
    current = assign(6, ["a", "b"], [None] * 6)
    joined = assign(6, ["a", "b", "c"], current)
    moved = [p for p in range(6) if joined[p] != current[p]]
    assert len(moved) == 2 and {joined[p] for p in moved} == {"c"}
    left = assign(6, ["a", "c"], joined)
    assert [p for p in range(6) if left[p] != joined[p]] == [
        p for p in range(6) if joined[p] == "b"
    ]
    assert sorted(left.count(name) for name in ("a", "c")) == [3, 3]


# -------------------------------------------------------------- delivery


def test_each_consumer_gets_whole_keys_in_order() -> None:
    world = World()
    queue = declare(world, 8)
    sinks = [consume(world, number, f"c{number}", prefetch=5)[1] for number in (1, 2, 3)]
    channels = [world.client.connection.channels[number] for number in (1, 2, 3)]
    keys = [f"user-{index}" for index in range(20)]
    seen: dict[int, list[bytes]] = defaultdict(list)
    for round_ in range(10):
        for key in keys:
            world.publish("q", f"{key}:{round_}".encode(), headers={"x-partition-key": key})
            for channel, sink in zip(channels, sinks, strict=True):
                if sink.deliveries:  # ack as they come
                    channel.ack(sink.deliveries[-1].delivery_tag, multiple=True)
                    seen[id(sink)].extend(bodies(sink))
                    sink.deliveries.clear()
    owner_of: dict[str, int] = {}
    for index, sink in enumerate(sinks):
        per_key: dict[str, list[int]] = defaultdict(list)
        for body in seen[id(sink)]:
            key, number = body.decode().split(":")
            per_key[key].append(int(number))
            assert owner_of.setdefault(key, index) == index  # a key has one consumer
        assert all(numbers == sorted(numbers) for numbers in per_key.values())
    assert len(owner_of) == 20 and sum(len(seen[id(sink)]) for sink in sinks) == 200
    assert queue.message_count == 0 and queue.unacked_count == 0
    assert sorted(len(queue.partitions_of(c)) for c in queue.consumers) == [2, 3, 3]


def test_a_partition_moves_to_a_new_consumer_only_once_the_old_one_settled() -> None:
    world = World()
    declare(world, 2)
    first, first_sink = consume(world, 1, "a")
    keys = [key_in(0, 2), key_in(1, 2)]
    for index in range(3):
        for key in keys:
            send(world, key, f"{key}:{index}")
    assert len(first_sink.deliveries) == 6  # it owns both partitions
    _, second_sink = consume(world, 2, "b")
    queue = world.vhost.queues["q"]
    assert isinstance(queue, PartitionedQueue)
    moved = queue.partitions_of(queue.consumers[1])
    assert len(moved) == 1
    moved_key = keys[moved[0]]
    send(world, moved_key, f"{moved_key}:3")
    # "a" still holds messages of the moved partition: nothing of it goes to "b" yet.
    assert second_sink.deliveries == []
    held = [d for d in first_sink.deliveries if d.body.startswith(moved_key.encode())]
    first.ack(held[0].delivery_tag, multiple=False)
    first.ack(held[1].delivery_tag, multiple=False)
    assert second_sink.deliveries == []
    first.ack(held[2].delivery_tag, multiple=False)
    assert bodies(second_sink) == [f"{moved_key}:3".encode()]


def test_a_cancelled_consumers_requeued_message_goes_first_to_the_next_owner() -> None:
    world = World()
    declare(world, 1)  # one partition: one FIFO, one active consumer
    first, first_sink = consume(world, 1, "a", prefetch=2)
    _, second_sink = consume(world, 2, "b", prefetch=10)
    for index in range(5):
        world.publish("q", f"m{index}".encode())
    assert bodies(first_sink) == [b"m0", b"m1"] and second_sink.deliveries == []
    first.ack(1, multiple=False)
    assert bodies(first_sink) == [b"m0", b"m1", b"m2"]
    first.cancel("a")
    assert second_sink.deliveries == []  # "a" still holds m1 and m2
    first.nack(3, multiple=False, requeue=True)  # m2 back to its place
    assert second_sink.deliveries == []
    first.nack(2, multiple=False, requeue=True)  # m1: now nothing is held
    assert [(d.body, d.redelivered) for d in second_sink.deliveries] == [
        (b"m1", True),
        (b"m2", True),
        (b"m3", False),
        (b"m4", False),
    ]


def test_a_closed_channel_hands_its_partitions_over_in_order() -> None:
    world = World()
    declare(world, 4)
    first, first_sink = consume(world, 1, "a", prefetch=3)
    key = key_in(2, 4)
    for index in range(6):
        world.publish("q", f"{index}".encode(), headers={"x-partition-key": key})
    assert bodies(first_sink) == [b"0", b"1", b"2"]
    _, second_sink = consume(world, 2, "b")
    assert second_sink.deliveries == []  # partition 2 may have moved, but "a" holds 0-2
    first.close()
    assert bodies(second_sink) == [b"0", b"1", b"2", b"3", b"4", b"5"]


def test_a_consumer_timeout_moves_its_partitions_after_returning_its_messages() -> None:
    world = World()
    declare(world, 1, **{"x-consumer-timeout": 1000})
    _, first_sink = consume(world, 1, "a", prefetch=1)
    _, second_sink = consume(world, 2, "b")
    world.publish("q", b"one")
    world.publish("q", b"two")
    assert bodies(first_sink) == [b"one"]
    world.advance(1000)
    assert first_sink.cancelled == ["a"]
    assert [(d.body, d.redelivered) for d in second_sink.deliveries] == [
        (b"one", True),
        (b"two", False),
    ]


def test_basic_get_takes_only_from_partitions_nobody_holds() -> None:
    world = World()
    declare(world, 2)
    keys = [key_in(0, 2), key_in(1, 2)]
    for key in keys:
        send(world, key, f"{key}:0")
        send(world, key, f"{key}:1")
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    first_key = got[2].body.decode().split(":")[0]
    other = world.channel.get("q", no_ack=False)
    assert other is not None and not other[2].body.decode().startswith(first_key)
    assert world.channel.get("q", no_ack=False) is None  # both partitions are held
    world.channel.ack(got[0], multiple=False)
    again = world.channel.get("q", no_ack=True)
    assert again is not None and again[2].body == f"{first_key}:1".encode()


def test_basic_get_does_not_take_from_a_consumers_partition_it_holds() -> None:
    world = World()
    declare(world, 1)
    _, sink = consume(world, 2, "a", prefetch=1)
    world.publish("q", b"m0")
    world.publish("q", b"m1")
    assert bodies(sink) == [b"m0"]
    assert world.channel.get("q", no_ack=True) is None  # m1 must follow m0


def test_a_settled_basic_get_lets_the_owner_go_on() -> None:
    world = World()
    declare(world, 1)
    world.publish("q", b"m0")
    world.publish("q", b"m1")
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    _, sink = consume(world, 2, "a")
    assert sink.deliveries == []
    world.channel.ack(got[0], multiple=False)
    assert bodies(sink) == [b"m1"]


def test_a_message_waiting_out_a_retry_delay_holds_its_partition() -> None:
    world = World()
    declare(world, 1, **{"x-retry-delays": [100]})
    channel, sink = consume(world, 2, "a")
    world.publish("q", b"m0")
    world.publish("q", b"m1")
    assert bodies(sink) == [b"m0", b"m1"]
    channel.nack(1, multiple=False, requeue=True)
    channel.ack(2, multiple=False)
    world.publish("q", b"m2")
    assert bodies(sink) == [b"m0", b"m1"]  # m2 waits behind m0
    world.advance(100)
    assert bodies(sink)[2:] == [b"m0", b"m2"]


# ---------------------------------------------------- the classic features


def test_length_limits_count_over_all_partitions_and_drop_heads_in_turn() -> None:
    world = World()
    world.declare("dlq")
    declare(world, 2, **{"x-max-length": 2}, **DLX)
    keys = [key_in(0, 2), key_in(1, 2)]
    send(world, keys[0], f"{keys[0]}:0")
    send(world, keys[0], f"{keys[0]}:1")
    send(world, keys[1], f"{keys[1]}:0")
    send(world, keys[1], f"{keys[1]}:1")
    assert world.vhost.queues["q"].message_count == 2
    # The heads of the partitions in turn: the oldest of each key went.
    assert sorted(body for body, _, _ in world.deaths("dlq")) == [
        f"{keys[0]}:0",
        f"{keys[1]}:0",
    ]
    assert sorted(world.bodies("q")) == sorted([f"{keys[0]}:1".encode(), f"{keys[1]}:1".encode()])


def test_ttl_expires_in_every_partition() -> None:
    world = World()
    world.declare("dlq")
    declare(world, 4, **{"x-message-ttl": 100}, **DLX)
    for index in range(8):
        world.publish("q", f"{index}".encode(), headers={"x-partition-key": index})
    world.advance(100)
    assert world.vhost.queues["q"].message_count == 0
    assert sorted(body for body, _, _ in world.deaths("dlq")) == [str(i) for i in range(8)]


def test_ttl_zero_reaches_a_waiting_owner() -> None:
    world = World()
    declare(world, 2, **{"x-message-ttl": 0})
    _, sink = consume(world, 2, "a")
    world.publish("q", b"now")
    assert bodies(sink) == [b"now"]


def test_purge_empties_every_partition() -> None:
    world = World()
    queue = declare(world, 3)
    for index in range(9):
        world.publish("q", b"m", headers={"x-partition-key": index})
    assert world.channel.purge("q") == 9
    assert queue.message_count == 0 and world.bodies("q") == []


def test_a_durable_partitioned_queue_keeps_its_partitions_after_a_restart() -> None:
    world = World(with_storage=True)
    declare(world, 4, durable=True)
    keys = [key_in(partition, 4) for partition in range(4)]
    for index in range(3):
        for key in keys:
            send(world, key, f"{key}:{index}", **PERSISTENT)
    assert world.storage is not None
    logs = world.storage.partitions[queue_key("/", "q")]
    assert [len(log.live()) for log in logs] == [3, 3, 3, 3]
    later = World(with_storage=True)
    later.vhost._add_queue("q", True, False, None, False, {"x-partitions": 4}, logs)
    recovered = later.vhost.queues["q"]
    assert isinstance(recovered, PartitionedQueue) and recovered.message_count == 12
    _, sink = consume(later, 2, "a")
    per_key: dict[str, list[str]] = defaultdict(list)
    for body in bodies(sink):
        key, number = body.decode().split(":")
        per_key[key].append(number)
    assert per_key == {key: ["0", "1", "2"] for key in keys}
    # The same key goes on in the same partition.
    send(later, keys[3], f"{keys[3]}:3", **PERSISTENT)
    assert len(logs[3].live()) == 4


# -------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("4", '"expected integer, got longstr"'),
        (0, "{value_zero,0}"),
        (-1, "{value_negative,-1}"),
        (1025, "{max_value_exceeded,1025}"),
    ],
)
def test_bad_partition_counts_are_refused(value: object, reason: str) -> None:
    world = World()
    with pytest.raises(PreconditionFailed) as raised:
        world.declare("q", **{"x-partitions": value})
    assert str(raised.value) == (f"invalid arg 'x-partitions' for queue 'q' in vhost '/': {reason}")


def test_partitions_and_priorities_exclude_each_other() -> None:
    world = World()
    with pytest.raises(PreconditionFailed, match="x_partitions_and_x_max_priority"):
        world.declare("q", **{"x-partitions": 4, "x-max-priority": 3})


def test_partitions_are_compared_on_redeclare() -> None:
    world = World()
    declare(world, 4)
    declare(world, 4)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-partitions'"):
        world.declare("q", **{"x-partitions": 5})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-partitions'"):
        world.declare("q")


@pytest.mark.parametrize("count", [1, 1024])
def test_one_to_1024_partitions_are_accepted(count: int) -> None:
    world = World()
    queue = declare(world, count)
    assert queue.partition_count == count
