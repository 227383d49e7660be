"""TTL, length limits, dead-lettering, the delivery limit, x-expires and single active
consumers in the broker domain, with the clock moved by hand and logs in memory."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.channel import Channel
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.queue import Queue
from amqpd.broker.timers import Timers
from amqpd.broker.vhost import BrokerServices, VirtualHost
from amqpd.codec.fields import FieldTable
from tests.support.broker_harness import Client, RecordingSink, header
from tests.support.memory_log import MemoryLog, MemoryStorage

PERSISTENT = {"delivery_mode": 2}
DLX = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


class World:
    """A vhost with a hand-driven clock, one client and one channel."""

    def __init__(self, queue_bytes_max: int = 1 << 30, with_storage: bool = False) -> None:
        self.clock = Clock()
        self.timers = Timers(self.clock)
        self.storage = MemoryStorage() if with_storage else None
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

    def declare(self, name: str, durable: bool = False, **arguments: Any) -> Queue:
        table: FieldTable = dict(arguments)
        return self.vhost.declare_queue(name, owner=None, durable=durable, arguments=table)

    def publish(self, routing_key: str, body: bytes, **properties: Any) -> None:
        self.channel.publish(
            "", routing_key, False, False, header(body, **properties), body, None, self.clock()
        )

    def advance(self, ms: int) -> None:
        self.clock.now_ms += ms
        self.timers.run_due()

    def bodies(self, queue: str) -> list[bytes]:
        out = []
        while (got := self.channel.get(queue, no_ack=True)) is not None:
            out.append(got[2].body)
        return out

    def deaths(self, queue: str) -> list[tuple[str, str, int]]:
        out = []
        while (got := self.channel.get(queue, no_ack=True)) is not None:
            death = got[2].headers["x-death"][0]  # type: ignore[index]
            out.append((got[2].body.decode(), death["reason"], death["count"]))  # type: ignore[index,call-overload]
        return out


@pytest.fixture
def world() -> World:
    return World()


def test_queue_ttl_expires_at_the_deadline_not_before(world: World) -> None:
    world.declare("dlq")
    world.declare("q", **{"x-message-ttl": 100}, **DLX)
    world.publish("q", b"a")
    world.advance(99)
    assert world.vhost.queues["q"].message_count == 1
    world.advance(1)
    assert world.vhost.queues["q"].message_count == 0
    assert world.deaths("dlq") == [("a", "expired", 1)]


def test_an_own_expiration_expires_wherever_the_message_is(world: World) -> None:
    world.declare("dlq")
    world.declare("q", **DLX)
    world.publish("q", b"long", expiration="10000")
    world.publish("q", b"short", expiration="50")
    world.publish("q", b"none")
    world.advance(50)
    assert world.deaths("dlq") == [("short", "expired", 1)]
    assert world.bodies("q") == [b"long", b"none"]
    # Passing the expired entry on the way out neither delivers nor dead-letters it again.
    assert world.deaths("dlq") == []
    assert world.vhost.queues["q"].message_count == 0


def test_expiry_behind_the_head_of_a_paged_queue() -> None:
    # Too little memory for more than a message or two: the rest is only in the log.
    world = World(queue_bytes_max=600, with_storage=True)
    world.declare("dlq")
    world.declare("q", **DLX)
    for index in range(5):
        world.publish("q", f"keep{index}".encode(), expiration="100000")
    world.publish("q", b"short", expiration="10")
    queue = world.vhost.queues["q"]
    assert queue.log is not None  # paged out
    world.advance(10)
    assert world.deaths("dlq") == [("short", "expired", 1)]
    assert queue.message_count == 5
    assert world.bodies("q") == [f"keep{index}".encode() for index in range(5)]


def test_a_deadline_read_back_from_the_log_counts_from_when_it_was_written() -> None:
    world = World(with_storage=True)
    world.declare("q", durable=True, **{"x-message-ttl": 1000})
    world.publish("q", b"old", **PERSISTENT)
    log = world.vhost.queues["q"].log
    assert isinstance(log, MemoryLog)
    # A restart 600 ms later: a new broker over the same log.
    later = World(with_storage=True)
    later.clock.now_ms = world.clock.now_ms + 600
    later.vhost._add_queue("q", True, False, None, False, {"x-message-ttl": 1000}, [log])
    assert later.vhost.queues["q"].message_count == 1
    later.clock.now_ms += 400  # 1000 ms after it was written: expired
    assert later.channel.get("q", no_ack=True) is None


def test_after_a_restart_an_own_expiration_behind_the_head_still_expires_on_time() -> None:
    world = World(with_storage=True)
    world.declare("q", durable=True, **DLX)
    for index in range(3000):  # more than one scan batch before it
        world.publish("q", b"keep%d" % index, **PERSISTENT)
    world.publish("q", b"short", expiration="500", **PERSISTENT)
    world.publish("q", b"after", **PERSISTENT)
    log = world.vhost.queues["q"].log
    assert isinstance(log, MemoryLog)
    later = World(with_storage=True)  # a restart 100 ms later, over the same log
    later.clock.now_ms = world.clock.now_ms + 100
    later.declare("dlq")
    later.vhost._add_queue("q", True, False, None, False, DLX, [log])
    queue = later.vhost.queues["q"]
    assert queue.message_count == 3002
    for _ in range(3):  # the scan goes a batch per wake-up
        later.advance(0)
    later.advance(399)
    assert later.deaths("dlq") == []
    later.advance(1)
    assert later.deaths("dlq") == [("short", "expired", 1)]
    assert queue.message_count == 3001
    assert log.live()[-1] == 3001 and 3000 not in log.live()


def test_drop_head_keeps_the_newest(world: World) -> None:
    world.declare("dlq")
    world.declare("q", **{"x-max-length": 2}, **DLX)
    for body in (b"1", b"2", b"3"):
        world.publish("q", body)
    assert world.bodies("q") == [b"2", b"3"]
    assert world.deaths("dlq") == [("1", "maxlen", 1)]


def test_reject_publish_nacks_in_order_with_earlier_confirms() -> None:
    world = World(with_storage=True)
    world.declare("q", durable=True, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    world.channel.select_confirms()
    world.publish("q", b"waits for the disk", **PERSISTENT)
    world.publish("q", b"refused", **PERSISTENT)
    # The nack must not overtake the ack of the message before it.
    assert (world.sink.confirms, world.sink.nacks) == ([], [])
    log = world.vhost.queues["q"].log
    assert isinstance(log, MemoryLog)
    log.make_durable()
    world.vhost.durability.advanced()
    assert (world.sink.confirms, world.sink.nacks) == ([1], [2])


def test_a_dead_lettered_message_leaves_its_durable_queue_once_the_copy_is_durable() -> None:
    world = World(with_storage=True)
    world.declare("dlq", durable=True)
    world.declare("q", durable=True, **DLX)
    world.publish("q", b"m", **PERSISTENT)
    source = world.vhost.queues["q"].log
    target = world.vhost.queues["dlq"].log
    assert isinstance(source, MemoryLog) and isinstance(target, MemoryLog)
    source.make_durable()
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    world.channel.reject(got[0], requeue=False)
    assert target.live() == [0]
    assert source.live() == [0]  # the copy is not durable yet: a crash now loses nothing
    target.make_durable()
    world.vhost.durability.advanced()
    assert source.live() == []


def test_delivery_limit_counts_returns(world: World) -> None:
    world.declare("dlq")
    world.declare("q", **{"x-delivery-limit": 2}, **DLX)
    world.publish("q", b"poison")
    counts = []
    for _ in range(3):
        got = world.channel.get("q", no_ack=False)
        assert got is not None
        counts.append(got[2].headers.get("x-delivery-count"))
        world.channel.nack(got[0], multiple=False, requeue=True)
    assert counts == [None, 1, 2]
    assert world.vhost.queues["q"].message_count == 0
    assert world.deaths("dlq") == [("poison", "delivery_limit", 1)]


def test_x_expires_deletes_only_an_unused_queue(world: World) -> None:
    world.declare("q", **{"x-expires": 1000})
    consumer = world.channel.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    world.advance(5000)
    assert "q" in world.vhost.queues  # it has a consumer
    world.channel.cancel(consumer.tag)
    world.advance(999)
    assert "q" in world.vhost.queues
    world.advance(1)
    assert "q" not in world.vhost.queues


def test_single_active_consumer_fails_over_in_registration_order(world: World) -> None:
    world.declare("q", **{"x-single-active-consumer": True})
    sinks: dict[str, RecordingSink] = {}
    channels: dict[str, Channel] = {}
    for number, (tag, priority) in enumerate([("first", 0), ("second", 10), ("third", 5)], 2):
        channel, sink = world.client.channel(number)
        channels[tag], sinks[tag] = channel, sink
        consumer = channel.consume(
            "q", tag, no_ack=True, exclusive=False, arguments={"x-priority": priority}
        )
        channel.start(consumer)
    world.publish("q", b"1")
    world.publish("q", b"2")
    channels["first"].cancel("first")
    world.publish("q", b"3")
    assert [sinks[tag].bodies() for tag in ("first", "second", "third")] == [
        [b"1", b"2"],
        [b"3"],
        [],
    ]


def test_a_consumer_holding_a_delivery_too_long_is_cancelled_and_its_messages_requeued(
    world: World,
) -> None:
    world.declare("q", **{"x-consumer-timeout": 1000})
    world.publish("q", b"held")
    world.publish("q", b"next")
    channel, sink = world.client.channel(2)
    channel.qos(0, 1, False)
    slow = channel.consume("q", "slow", no_ack=False, exclusive=False, arguments={})
    channel.start(slow)
    other = channel.consume("q", "other", no_ack=False, exclusive=False, arguments={})
    channel.start(other)
    assert [(d.consumer_tag, d.body) for d in sink.take()] == [
        ("slow", b"held"),
        ("other", b"next"),
    ]
    channel.ack(2, multiple=False)  # "other" keeps up
    world.advance(999)
    assert sink.cancelled == []
    world.advance(1)
    assert sink.cancelled == ["slow"]
    # Requeued, redelivered to the consumer that is left on the same channel.
    assert [(d.consumer_tag, d.body, d.redelivered) for d in sink.take()] == [
        ("other", b"held", True)
    ]
    assert sink.failures == []


def test_without_cancel_notify_a_consumer_timeout_closes_the_channel_with_406() -> None:
    world = World()
    client = Client(world.vhost, cancel_notify=False)
    channel, sink = client.channel()
    world.declare("q")
    world.publish("q", b"held")
    consumer = channel.consume(
        "q", "c", no_ack=False, exclusive=False, arguments={"x-consumer-timeout": 500}
    )
    channel.start(consumer)
    world.advance(500)
    [failure] = sink.failures
    assert failure.reply_code == 406
    assert "delivery acknowledgement on channel 1 timed out" in failure.reply_text


def test_a_consumer_that_acks_in_time_is_left_alone(world: World) -> None:
    world.declare("q", **{"x-consumer-timeout": 1000})
    consumer = world.channel.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    world.channel.start(consumer)
    for _ in range(5):
        world.publish("q", b"m")
        world.advance(600)
        world.channel.ack(0, multiple=True)
    world.advance(5000)
    assert world.sink.cancelled == []
    assert world.vhost.queues["q"].consumer_count == 1


def test_a_restart_counts_as_a_return_against_the_delivery_limit() -> None:
    world = World(with_storage=True)
    world.declare("dlq")
    world.declare("q", durable=True, **{"x-delivery-limit": 1}, **DLX)
    world.publish("q", b"poison", **PERSISTENT)
    world.publish("q", b"fine", **PERSISTENT)
    got = world.channel.get("q", no_ack=False)
    assert got is not None
    world.channel.nack(got[0], multiple=False, requeue=True)  # one return: within the limit
    again = world.channel.get("q", no_ack=False)
    assert again is not None and again[2].body == b"poison"  # held at the "crash"
    log = world.vhost.queues["q"].log
    assert isinstance(log, MemoryLog)
    later = World(with_storage=True)
    later.declare("dlq")
    later.vhost._add_queue("q", True, False, None, False, {"x-delivery-limit": 1, **DLX}, [log])
    assert later.bodies("q") == [b"fine"]
    assert later.deaths("dlq") == [("poison", "delivery_limit", 1)]
    assert log.live() == []  # both gone from the log: one consumed, one dead-lettered
