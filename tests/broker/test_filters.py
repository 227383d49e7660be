"""Tag filtering for consumers of classic queues (x-stream-filter): who gets what, what
stays, paging, requeue, priorities, single active consumer, expiry, purge and the scan
budget, in the broker domain with the clock moved by hand and logs in memory."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.arguments import validate_consumer_arguments
from amqpd.broker.channel import Channel
from amqpd.broker.filters import SCAN_ENTRIES_MAX, ConsumerFilter, message_tag
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.message import Message
from amqpd.broker.queue import Queue
from amqpd.broker.timers import Timers
from amqpd.broker.vhost import BrokerServices, VirtualHost
from amqpd.codec.fields import FieldTable
from amqpd.errors import PreconditionFailed
from tests.support.broker_harness import Client, RecordingSink, header
from tests.support.memory_log import FakeRecord, MemoryLog, MemoryStorage

PERSISTENT = {"delivery_mode": 2}


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


class World:
    """A vhost with a hand-driven clock and one client; channels made on demand."""

    def __init__(self, queue_bytes_max: int = 1 << 30) -> None:
        self.clock = Clock()
        self.timers = Timers(self.clock)
        self.storage = MemoryStorage()
        self.vhost = VirtualHost(
            "/",
            BrokerServices(
                storage=self.storage,
                memory=MemoryBudget(queue_bytes_max, 1 << 30),
                timers=self.timers,
            ),
        )
        self.client = Client(self.vhost)
        self.channel, self.sink = self.client.channel()
        self._channels = 1

    def declare(self, name: str = "q", durable: bool = False, **arguments: Any) -> Queue:
        table: FieldTable = dict(arguments)
        return self.vhost.declare_queue(name, owner=None, durable=durable, arguments=table)

    def new_channel(self, prefetch: int = 0) -> tuple[Channel, RecordingSink]:
        self._channels += 1
        channel, sink = self.client.channel(self._channels)
        channel.qos(0, prefetch, False)
        return channel, sink

    def consume(
        self,
        channel: Channel,
        tag: str,
        queue: str = "q",
        no_ack: bool = False,
        **arguments: Any,
    ) -> None:
        table: FieldTable = dict(arguments)
        channel.start(channel.consume(queue, tag, no_ack=no_ack, exclusive=False, arguments=table))

    def publish(self, body: bytes, tag: str | None = None, queue: str = "q", **props: Any) -> None:
        if tag is not None:
            props["headers"] = {**props.get("headers", {}), "x-stream-filter-value": tag}
        self.channel.publish(
            "", queue, False, False, header(body, **props), body, None, self.clock()
        )

    def advance(self, ms: int) -> None:
        self.clock.now_ms += ms
        self.timers.run_due()


def tagged(world: World, tags: str) -> None:
    """Publish one message per character: body '<n><tag>', tag the character ('.' none)."""
    for number, tag in enumerate(tags):
        world.publish(b"%d%s" % (number, tag.encode()), None if tag == "." else tag)


def bodies(sink: RecordingSink) -> list[bytes]:
    return [delivery.body for delivery in sink.deliveries]


# ------------------------------------------------------------------ the filter itself


def test_a_filter_is_a_string_or_an_array_and_match_unfiltered_is_optional() -> None:
    assert ConsumerFilter.from_arguments({}) is None
    assert ConsumerFilter.from_arguments({"x-stream-filter": "a"}) == ConsumerFilter(
        frozenset({"a"})
    )
    both = ConsumerFilter.from_arguments(
        {"x-stream-filter": ["a", "b"], "x-stream-match-unfiltered": True}
    )
    assert both == ConsumerFilter(frozenset({"a", "b"}), match_unfiltered=True)
    assert both.accepts("a") and both.accepts("b") and both.accepts(None)
    assert not both.accepts("c")
    assert not ConsumerFilter(frozenset({"a"})).accepts(None)


def test_tags_are_read_only_when_the_header_bytes_hold_the_key() -> None:
    untagged = Message("", "q", header(b"x", headers={"other": "a"}), b"x")
    assert message_tag(untagged) is None
    assert untagged._properties is None  # nothing decoded to know
    no_headers = Message("", "q", header(b"x"), b"x")
    assert message_tag(no_headers) is None
    tagged_message = Message("", "q", header(b"x", headers={"x-stream-filter-value": "t"}), b"x")
    assert message_tag(tagged_message) == "t"
    not_a_string = Message("", "q", header(b"x", headers={"x-stream-filter-value": 7}), b"x")
    assert message_tag(not_a_string) is None


def test_a_stored_record_is_decoded_only_when_it_may_carry_a_tag() -> None:
    consumer_filter = ConsumerFilter(frozenset({"a"}), match_unfiltered=True)
    plain = Message("", "q", header(b"x"), b"x").stored_form()
    assert consumer_filter.accepts_record(plain) == (True, None)
    with_tag = Message("", "q", header(b"x", headers={"x-stream-filter-value": "b"}), b"x")
    accepted, decoded = consumer_filter.accepts_record(with_tag.stored_form())
    assert not accepted and decoded is not None and decoded.body == b"x"


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"x-stream-filter": 1}, "{unacceptable_type,long}"),
        ({"x-stream-filter": []}, "{empty_list}"),
        ({"x-stream-filter": ["a", 1]}, '"expected a list of strings, got long in it"'),
        ({"x-stream-filter": "a", "x-stream-match-unfiltered": "yes"}, None),
    ],
)
def test_bad_filter_arguments_are_406(arguments: FieldTable, reason: str | None) -> None:
    key = "x-stream-match-unfiltered" if reason is None else "x-stream-filter"
    expected = reason or "{unacceptable_type,longstr}"
    with pytest.raises(PreconditionFailed) as raised:
        validate_consumer_arguments(arguments, "q", "/")
    assert str(raised.value) == f"invalid arg '{key}' for queue 'q' in vhost '/': {expected}"


def test_good_filter_arguments_pass() -> None:
    validate_consumer_arguments(
        {"x-stream-filter": ["a"], "x-stream-match-unfiltered": True}, "q", "/"
    )
    validate_consumer_arguments({"x-stream-match-unfiltered": False}, "q", "/")


# ------------------------------------------------------------------------- dispatch


def test_each_filtered_consumer_gets_exactly_its_messages_in_order() -> None:
    world = World()
    queue = world.declare()
    tagged(world, "abab.ca")
    a_channel, a_sink = world.new_channel()
    b_channel, b_sink = world.new_channel()
    world.consume(a_channel, "a", **{"x-stream-filter": "a"})
    world.consume(b_channel, "b", **{"x-stream-filter": ["b", "z"]})
    assert bodies(a_sink) == [b"0a", b"2a", b"6a"]
    assert bodies(b_sink) == [b"1b", b"3b"]
    assert queue.message_count == 2  # "4." and "5c": nobody wants them, they stay
    tagged(world, "ba")  # new ones go straight to whoever matches
    assert bodies(a_sink)[-1] == b"1a" and bodies(b_sink)[-1] == b"0b"
    everything, sink = world.new_channel()
    world.consume(everything, "all")
    assert bodies(sink) == [b"4.", b"5c"]
    assert queue.message_count == 0


def test_match_unfiltered_takes_untagged_messages_too() -> None:
    world = World()
    world.declare()
    tagged(world, "a.b.")
    channel, sink = world.new_channel()
    world.consume(channel, "a", **{"x-stream-filter": "a", "x-stream-match-unfiltered": True})
    assert bodies(sink) == [b"0a", b"1.", b"3."]


def test_filtered_and_unfiltered_consumers_take_turns() -> None:
    """The unfiltered consumer takes the head in its turn, whatever its tag."""
    world = World()
    world.declare()
    a_channel, a_sink = world.new_channel(prefetch=10)
    all_channel, all_sink = world.new_channel(prefetch=10)
    world.consume(a_channel, "a", **{"x-stream-filter": "a"})
    world.consume(all_channel, "all")
    tagged(world, "aabb")
    assert bodies(a_sink) == [b"0a"]  # its turn: the first message
    assert bodies(all_sink) == [b"1a", b"2b", b"3b"]  # a had no "b" to take: it made way


def test_prefetch_holds_and_an_ack_brings_the_next_match() -> None:
    world = World()
    queue = world.declare()
    tagged(world, "baba")
    channel, sink = world.new_channel(prefetch=1)
    world.consume(channel, "a", **{"x-stream-filter": "a"})
    assert bodies(sink) == [b"1a"]
    channel.ack(sink.deliveries[-1].delivery_tag, False)
    assert bodies(sink) == [b"1a", b"3a"]
    assert queue.message_count == 2 and queue.unacked_count == 1


def test_a_requeued_message_goes_back_to_its_place_and_to_a_consumer_that_matches() -> None:
    world = World()
    queue = world.declare()
    tagged(world, "aab")
    first, first_sink = world.new_channel(prefetch=1)
    world.consume(first, "first", **{"x-stream-filter": "a"})
    assert bodies(first_sink) == [b"0a"]
    second, second_sink = world.new_channel(prefetch=5)
    world.consume(second, "second", **{"x-stream-filter": "b"})
    assert bodies(second_sink) == [b"2b"]
    second.nack(second_sink.deliveries[0].delivery_tag, False, True)  # back, and again to it
    assert [(d.body, d.redelivered) for d in second_sink.deliveries] == [
        (b"2b", False),
        (b"2b", True),
    ]
    first.nack(first_sink.deliveries[0].delivery_tag, False, True)  # back before "1a"
    assert [(d.body, d.redelivered) for d in first_sink.deliveries] == [
        (b"0a", False),
        (b"0a", True),
    ]
    first.ack(first_sink.deliveries[-1].delivery_tag, False)
    assert bodies(first_sink)[-1] == b"1a"
    assert queue.message_count == 0


def test_a_high_priority_filtered_consumer_does_not_block_lower_ones() -> None:
    world = World()
    world.declare()
    high, high_sink = world.new_channel(prefetch=10)
    low, low_sink = world.new_channel(prefetch=10)
    world.consume(high, "high", **{"x-stream-filter": "a", "x-priority": 5})
    world.consume(low, "low")
    tagged(world, "abab")
    assert bodies(high_sink) == [b"0a", b"2a"]
    assert bodies(low_sink) == [b"1b", b"3b"]


def test_priority_levels_are_served_highest_first_within_the_filter() -> None:
    world = World()
    world.declare(**{"x-max-priority": 5})
    world.publish(b"low-a", "a", priority=1)
    world.publish(b"high-b", "b", priority=5)
    world.publish(b"high-a", "a", priority=5)
    channel, sink = world.new_channel()
    world.consume(channel, "a", **{"x-stream-filter": "a"})
    assert bodies(sink) == [b"high-a", b"low-a"]


def test_with_a_single_active_consumer_only_the_active_one_receives() -> None:
    world = World()
    queue = world.declare(**{"x-single-active-consumer": True})
    tagged(world, "ab")
    active, active_sink = world.new_channel()
    standby, standby_sink = world.new_channel()
    world.consume(active, "active", **{"x-stream-filter": "a"})
    world.consume(standby, "standby")
    assert bodies(active_sink) == [b"0a"]
    assert bodies(standby_sink) == []  # "1b" waits for an active consumer that takes it
    assert queue.message_count == 1
    active.cancel("active")
    assert bodies(standby_sink) == [b"1b"]


def test_basic_get_takes_the_head_whatever_its_tag() -> None:
    world = World()
    world.declare()
    tagged(world, "ba")
    channel, sink = world.new_channel(prefetch=1)
    world.consume(channel, "a", **{"x-stream-filter": "b"})
    got = world.channel.get("q", no_ack=True)
    assert bodies(sink) == [b"0b"] and got is not None and got[2].body == b"1a"


def test_the_consumer_timeout_requeues_to_a_matching_consumer() -> None:
    world = World()
    world.declare()
    tagged(world, "a")
    slow, slow_sink = world.new_channel()
    world.consume(slow, "slow", **{"x-stream-filter": "a", "x-consumer-timeout": 1000})
    other, other_sink = world.new_channel(prefetch=1)
    world.consume(other, "other", **{"x-stream-filter": "a"})
    assert bodies(slow_sink) == [b"0a"] and bodies(other_sink) == []
    world.advance(1001)
    assert slow_sink.cancelled == ["slow"]
    assert [(d.body, d.redelivered) for d in other_sink.deliveries] == [(b"0a", True)]


def test_expired_messages_met_by_a_filter_are_dead_lettered_and_counted_out() -> None:
    world = World()
    world.declare("dlq")
    queue = world.declare(**{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    world.publish(b"stale-a", "a", expiration="100")
    world.publish(b"b", "b")
    world.publish(b"fresh-a", "a")
    world.clock.now_ms += 200  # no timer run yet: the filter meets the expired one first
    channel, sink = world.new_channel()
    world.consume(channel, "a", **{"x-stream-filter": "a"})
    assert bodies(sink) == [b"fresh-a"]
    assert queue.message_count == 1
    assert world.vhost.queues["dlq"].message_count == 1


def test_expiry_in_place_after_a_filtered_take_keeps_the_counts() -> None:
    world = World()
    queue = world.declare(**{"x-message-ttl": 1000})
    tagged(world, "bab")
    channel, sink = world.new_channel()
    world.consume(channel, "a", **{"x-stream-filter": "a"})
    assert bodies(sink) == [b"1a"]
    channel.nack(sink.deliveries[0].delivery_tag, False, True)  # requeued past the head
    assert queue.message_count == 2
    channel.cancel("a")
    channel.nack(sink.deliveries[1].delivery_tag, False, True)
    assert queue.message_count == 3
    world.advance(1001)
    assert queue.message_count == 0
    assert queue.memory_bytes == 0
    assert world.vhost.services.memory.total_bytes == 0


# --------------------------------------------------------------------- deep backlogs


def deep_world(durable: bool = True) -> tuple[World, Queue, MemoryLog]:
    world = World(queue_bytes_max=1)  # nothing held in memory: everything on disk
    queue = world.declare(durable=durable)
    return world, queue, world.storage.partitions[queue.key][0] if durable else MemoryLog()


def test_a_deep_backlog_on_disk_is_filtered_and_the_log_acked_right() -> None:
    world, queue, log = deep_world()
    for number in range(600):
        tag = "a" if number % 3 == 0 else "b"
        world.publish(b"%d" % number, tag, **PERSISTENT)
    assert queue.memory_bytes == 0 and len(log.live()) == 600
    a_channel, a_sink = world.new_channel(prefetch=50)
    world.consume(a_channel, "a", **{"x-stream-filter": "a"})
    assert bodies(a_sink) == [b"%d" % n for n in range(0, 150, 3)]
    assert queue.message_count == 550 and queue.unacked_count == 50
    assert log.delivered_below <= 1  # taken out of order: the watermark stays
    while a_sink.deliveries and len(a_sink.deliveries) < 200:
        a_channel.ack(a_sink.deliveries[-1].delivery_tag, True)
    assert bodies(a_sink) == [b"%d" % n for n in range(0, 600, 3)]
    a_channel.ack(a_sink.deliveries[-1].delivery_tag, True)
    assert queue.message_count == 400
    assert len(log.live()) == 400
    assert queue._lanes[0].lifted == set()  # acked: the log's reads skip them now
    rest, rest_sink = world.new_channel()
    world.consume(rest, "rest", no_ack=True)
    assert bodies(rest_sink) == [b"%d" % n for n in range(600) if n % 3]
    assert log.live() == [] and queue.message_count == 0


def test_unacked_lifted_messages_are_not_read_again_nor_purged() -> None:
    world, queue, log = deep_world()
    for number in range(10):
        world.publish(b"%d" % number, "a" if number == 5 else "b", **PERSISTENT)
    a_channel, a_sink = world.new_channel()
    world.consume(a_channel, "a", **{"x-stream-filter": "a"})
    assert bodies(a_sink) == [b"5"]
    rest, rest_sink = world.new_channel()
    world.consume(rest, "rest", no_ack=True)
    assert bodies(rest_sink) == [b"%d" % n for n in range(10) if n != 5]
    assert log.live() == [5] and queue.message_count == 0
    a_channel.nack(a_sink.deliveries[0].delivery_tag, False, True)
    assert queue.message_count == 0 and bodies(a_sink) == [b"5", b"5"]
    rest.cancel("rest")
    world.publish(b"late", "b", **PERSISTENT)
    world.publish(b"later", "b", **PERSISTENT)
    assert queue.purge() == 2
    assert log.live() == [5]  # still held by the filtered consumer
    a_channel.ack(a_sink.deliveries[-1].delivery_tag, False)
    assert log.live() == []


def test_a_scan_stops_at_its_budget_and_goes_on_at_the_next_wake_up() -> None:
    world, queue, log = deep_world()
    backlog = 3 * SCAN_ENTRIES_MAX
    for number in range(backlog):
        world.publish(b"%d" % number, "b", **PERSISTENT)
    world.publish(b"wanted", "a", **PERSISTENT)
    records_read = 0
    read = log.read

    def counting_read(
        offset: int, max_records: int = 256, max_bytes: int | None = None
    ) -> list[FakeRecord]:
        nonlocal records_read
        found = read(offset, max_records, max_bytes)
        records_read += len(found)
        return found

    log.read = counting_read  # type: ignore[method-assign]
    channel, sink = world.new_channel()
    world.consume(channel, "a", **{"x-stream-filter": "a"})
    assert sink.deliveries == [] and records_read <= SCAN_ENTRIES_MAX
    assert world.timers.next_deadline_ms is not None  # asked to go on
    while not sink.deliveries:
        world.advance(0)
    assert bodies(sink) == [b"wanted"]
    # Each record was looked at once, not once per wake-up.
    assert records_read <= backlog + 1 + SCAN_ENTRIES_MAX // 8
    assert queue.message_count == backlog


def test_a_deep_transient_backlog_paged_out_is_filtered() -> None:
    world = World(queue_bytes_max=2 * Message("", "q", header(b"00"), b"00").memory_bytes + 100)
    queue = world.declare()
    tagged(world, "ab" * 20)
    assert queue.log is not None  # paged out to a transient log
    channel, sink = world.new_channel()
    world.consume(channel, "b", no_ack=True, **{"x-stream-filter": "b"})
    assert bodies(sink) == [b"%db" % n for n in range(1, 40, 2)]
    rest, rest_sink = world.new_channel()
    world.consume(rest, "rest", no_ack=True)
    assert bodies(rest_sink) == [b"%da" % n for n in range(0, 40, 2)]
    assert queue.message_count == 0 and queue.memory_bytes == 0


def test_a_purge_leaves_what_a_filtered_consumer_took_from_the_log() -> None:
    world, queue, log = deep_world()
    for number in range(10):
        world.publish(b"%d" % number, "a" if number in (5, 7) else "b", **PERSISTENT)
    channel, sink = world.new_channel()
    world.consume(channel, "a", **{"x-stream-filter": "a"})
    assert bodies(sink) == [b"5", b"7"]
    assert queue.purge() == 8
    assert log.live() == [5, 7] and queue.message_count == 0
    channel.nack(sink.deliveries[0].delivery_tag, False, True)  # 5 comes back, and out again
    assert bodies(sink) == [b"5", b"7", b"5"] and queue.message_count == 0
    channel.ack(0, multiple=True)
    assert log.live() == []


def test_a_requeued_message_past_the_head_expires_in_place_with_the_right_counts() -> None:
    world = World()
    queue = world.declare()
    world.publish(b"0b", "b")
    world.publish(b"1a", "a", expiration="1000")
    world.publish(b"2b", "b")
    channel, sink = world.new_channel()
    world.consume(channel, "a", **{"x-stream-filter": "a"})
    assert bodies(sink) == [b"1a"]
    channel.cancel("a")
    channel.nack(sink.deliveries[0].delivery_tag, False, True)  # to the heap, past the head
    memory = world.vhost.services.memory.total_bytes
    world.advance(1001)  # its own deadline: expired where it lies (in the requeued heap)
    assert queue.message_count == 2
    assert world.vhost.services.memory.total_bytes == memory  # the run was not charged
    everything, rest = world.new_channel()
    world.consume(everything, "all", no_ack=True)
    assert bodies(rest) == [b"0b", b"2b"]
    assert queue.memory_bytes == 0 and world.vhost.services.memory.total_bytes == 0
