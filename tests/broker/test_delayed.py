"""The delayed-message exchange in the broker, on a hand-driven clock: x-delay and
x-deliver-at-ms, release in due order whatever the publish order, routing through the
bindings of release time, confirms, the log behind held messages, restarts and deletes."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.definitions import decode
from amqpd.broker.delayed import delayed_key
from amqpd.broker.exchanges import DelayedExchange
from amqpd.broker.queue import KIND_TRANSIENT
from amqpd.broker.timers import Timers
from amqpd.broker.vhost import BrokerServices, VirtualHost
from amqpd.codec.fields import LongInt
from amqpd.errors import PreconditionFailed
from tests.broker.test_delivery_semantics import Clock
from tests.support.broker_harness import Client, consume, header
from tests.support.memory_log import MemoryDefinitions, MemoryLog, MemoryStorage

DELAYED_DIRECT = {"x-delayed-type": "direct"}
PERSISTENT = {"delivery_mode": 2}


class Delayed:
    """A vhost with storage and a definitions journal, a hand-driven clock, one channel."""

    def __init__(
        self,
        storage: MemoryStorage | None = None,
        definitions: MemoryDefinitions | None = None,
        clock: Clock | None = None,
        delay_ms_max: int = 86_400_000,
    ) -> None:
        self.clock = clock or Clock()
        self.timers = Timers(self.clock)
        self.storage = storage if storage is not None else MemoryStorage()
        self.definitions = definitions if definitions is not None else MemoryDefinitions()
        self.vhost = VirtualHost(
            "/",
            BrokerServices(
                storage=self.storage,
                definitions=self.definitions,
                timers=self.timers,
                delay_ms_max=delay_ms_max,
            ),
        )
        self.client = Client(self.vhost)
        self.channel, self.sink = self.client.channel()

    def setup(self, durable: bool = True, exchange_type: str = "direct") -> None:
        """Exchange `dx` (delayed) bound to queue `q` with key `k`."""
        self.vhost.declare_exchange(
            "dx", "x-delayed-message", durable=durable, arguments={"x-delayed-type": exchange_type}
        )
        queue = self.vhost.declare_queue("q", owner=None, durable=durable)
        self.vhost.bind("dx", queue, "k", {})

    def publish(self, body: bytes, key: str = "k", mandatory: bool = False, **headers: Any) -> None:
        properties: dict[str, Any] = dict(PERSISTENT)
        if headers:
            properties["headers"] = headers
        self.channel.publish(
            "dx", key, mandatory, False, header(body, **properties), body, None, self.clock()
        )

    def advance(self, ms: int) -> None:
        self.clock.now_ms += ms
        self.timers.run_due()

    def bodies(self, queue: str = "q") -> list[bytes]:
        out = []
        while (got := self.channel.get(queue, no_ack=True)) is not None:
            out.append(got[2].body)
        return out

    @property
    def held(self) -> int:
        exchange = self.vhost.exchanges["dx"]
        assert isinstance(exchange, DelayedExchange) and exchange.pending is not None
        return exchange.pending.pending_count

    @property
    def log(self) -> MemoryLog:
        return self.storage.logs[delayed_key("/", "dx")]


@pytest.fixture
def delayed() -> Delayed:
    world = Delayed()
    world.setup()
    return world


def test_each_message_is_released_at_its_time_whatever_the_publish_order(
    delayed: Delayed,
) -> None:
    for delay in (300, 100, 200):
        delayed.publish(b"%d" % delay, **{"x-delay": delay})
    assert delayed.held == 3
    delayed.advance(99)
    assert delayed.bodies() == []
    delayed.advance(1)
    assert delayed.bodies() == [b"100"]
    delayed.advance(100)
    assert delayed.bodies() == [b"200"]
    delayed.advance(99)
    assert delayed.bodies() == []
    delayed.advance(1)
    assert delayed.bodies() == [b"300"]
    assert delayed.held == 0


def test_without_a_delay_a_message_routes_at_once(delayed: Delayed) -> None:
    delayed.publish(b"none")
    delayed.publish(b"zero", **{"x-delay": 0})
    delayed.publish(b"negative", **{"x-delay": -5})
    delayed.publish(b"past", **{"x-deliver-at-ms": delayed.clock() - 1})
    assert delayed.bodies() == [b"none", b"zero", b"negative", b"past"]
    assert delayed.held == 0


def test_deliver_at_an_absolute_time_wins_over_x_delay(delayed: Delayed) -> None:
    delayed.publish(b"at", **{"x-deliver-at-ms": delayed.clock() + 5_000, "x-delay": 10})
    delayed.advance(4_999)
    assert delayed.bodies() == []
    delayed.advance(1)
    assert delayed.bodies() == [b"at"]


def test_the_plugins_value_types_for_x_delay(delayed: Delayed) -> None:
    delayed.publish(b"string", **{"x-delay": "100"})
    delayed.publish(b"float", **{"x-delay": 100.9})
    delayed.publish(b"short", **{"x-delay": LongInt(100)})
    delayed.advance(99)
    assert delayed.bodies() == []
    delayed.advance(1)
    assert delayed.bodies() == [b"string", b"float", b"short"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"x-delay": "soon"}, "must be a number of milliseconds"),
        ({"x-delay": True}, "must be a number of milliseconds"),
        ({"x-delay": 86_400_001}, "over the maximum of 86400000 ms"),
        ({"x-deliver-at-ms": "tomorrow"}, "must be an integer (epoch milliseconds)"),
    ],
)
def test_a_bad_delay_is_refused_with_406(
    delayed: Delayed, headers: dict[str, Any], reason: str
) -> None:
    with pytest.raises(PreconditionFailed, match=reason.replace("(", r"\(").replace(")", r"\)")):
        delayed.publish(b"bad", **headers)
    assert delayed.held == 0


def test_released_messages_carry_x_delay_negated_and_their_other_headers(
    delayed: Delayed,
) -> None:
    delayed.publish(b"m", **{"x-delay": 250, "trace": "abc"})
    delayed.advance(250)
    got = delayed.channel.get("q", no_ack=True)
    assert got is not None
    headers = got[2].headers
    assert headers["x-delay"] == -250
    assert headers["trace"] == "abc"


def test_routing_follows_the_bindings_at_release_time(delayed: Delayed) -> None:
    delayed.publish(b"later", key="late", **{"x-delay": 100})
    other = delayed.vhost.declare_queue("other", owner=None)
    delayed.vhost.bind("dx", other, "late", {})
    delayed.advance(100)
    assert delayed.bodies("other") == [b"later"]


def test_the_delayed_type_routes_topic_patterns() -> None:
    world = Delayed()
    world.setup(exchange_type="topic")
    queue = world.vhost.declare_queue("t", owner=None)
    world.vhost.bind("dx", queue, "orders.*", {})
    world.publish(b"o", key="orders.created", **{"x-delay": 10})
    world.publish(b"x", key="users.created", **{"x-delay": 10})
    world.advance(10)
    assert world.bodies("t") == [b"o"]


def test_declare_needs_a_known_delayed_type_and_redeclares_must_match() -> None:
    world = Delayed()
    for arguments in ({}, {"x-delayed-type": "nope"}, {"x-delayed-type": "x-delayed-message"}):
        with pytest.raises(PreconditionFailed, match="'x-delayed-type' must be an existing"):
            world.vhost.declare_exchange("dx", "x-delayed-message", arguments=arguments)
    assert "dx" not in world.vhost.exchanges
    world.vhost.declare_exchange("dx", "x-delayed-message", arguments=DELAYED_DIRECT)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-delayed-type'"):
        world.vhost.declare_exchange(
            "dx", "x-delayed-message", arguments={"x-delayed-type": "fanout"}
        )


def test_a_mandatory_message_that_could_route_nowhere_is_returned_not_held(
    delayed: Delayed,
) -> None:
    delayed.publish(b"lost", key="nobody", mandatory=True, **{"x-delay": 100})
    assert [(code, message.body) for code, _, message in delayed.sink.returns] == [(312, b"lost")]
    assert delayed.held == 0
    delayed.publish(b"kept", mandatory=True, **{"x-delay": 100})
    assert len(delayed.sink.returns) == 1
    assert delayed.held == 1


def test_a_confirm_waits_for_the_held_record_to_be_durable(delayed: Delayed) -> None:
    delayed.channel.select_confirms()
    delayed.publish(b"p", **{"x-delay": 100})
    assert delayed.sink.confirms == []
    delayed.log.make_durable()
    delayed.vhost.durability.advanced()
    assert delayed.sink.confirms == [1]
    # A transient message is confirmed at once and never waited for.
    delayed.channel.publish(
        "dx", "k", False, False, header(b"t", headers={"x-delay": 100}), b"t", None, 0
    )
    assert delayed.sink.confirms == [1, 2]


def test_the_held_record_is_acked_once_its_copies_are_durable(delayed: Delayed) -> None:
    delayed.publish(b"p", **{"x-delay": 100})
    delayed.advance(100)
    assert delayed.log.live() == [0]  # the queue's copy is not durable yet
    delayed.storage.logs["/\x00q"].make_durable()
    delayed.vhost.durability.advanced()
    assert delayed.log.live() == []


def test_an_exchange_bound_to_a_delayed_exchange_gets_it_delayed(delayed: Delayed) -> None:
    delayed.vhost.declare_exchange("front", "fanout")
    delayed.vhost.bind_exchange("front", "dx", "", {})
    delayed.channel.publish(
        "front",
        "k",
        False,
        False,
        header(b"e2e", headers={"x-delay": 50}),
        b"e2e",
        None,
        delayed.clock(),
    )
    assert delayed.bodies() == []
    delayed.advance(50)
    assert delayed.bodies() == [b"e2e"]


def test_held_messages_survive_a_restart_and_overdue_ones_go_at_once(
    delayed: Delayed,
) -> None:
    delayed.publish(b"late", **{"x-delay": 60_000})
    delayed.publish(b"early", **{"x-delay": 1_000})
    delayed.publish(b"middle", **{"x-delay": 5_000})
    delayed.channel.publish(
        "dx",
        "k",
        False,
        False,
        header(b"t", headers={"x-delay": 1_000}),
        b"t",
        None,
        delayed.clock(),
    )  # transient: gone after a restart
    delayed.log.make_durable()
    # Down for ten seconds: the store drops transient records when it recovers.
    log = delayed.log
    log.acked.update(o for o, record in log.records.items() if record.kind == KIND_TRANSIENT)
    clock = delayed.clock
    clock.now_ms += 10_000
    restarted = Delayed(delayed.storage, MemoryDefinitions(), clock)
    problems = restarted.vhost.restore(
        [decode(value) for value in delayed.definitions.entries.values()],
        lambda key: delayed.storage.partitions.get(key),
    )
    assert problems == []
    assert restarted.held == 3
    restarted.advance(0)
    # Overdue: at once, in the order published.
    assert restarted.bodies() == [b"early", b"middle"]
    restarted.advance(49_999)
    assert restarted.bodies() == []
    restarted.advance(1)
    assert restarted.bodies() == [b"late"]


def test_deleting_the_exchange_drops_what_it_holds(delayed: Delayed) -> None:
    delayed.publish(b"p", **{"x-delay": 100})
    delayed.vhost.delete_exchange("dx")
    assert delayed_key("/", "dx") in delayed.storage.deleted
    delayed.advance(100)
    assert delayed.bodies() == []


def test_a_backlog_due_at_once_goes_out_in_batches() -> None:
    world = Delayed()
    world.setup(durable=False)
    consume(world.channel, "q", no_ack=True)
    for number in range(1_500):
        world.publish(b"%d" % number, **{"x-delay": 100})
    world.clock.now_ms += 100
    world.timers.run_due()
    assert len(world.sink.deliveries) == 512  # one batch; the next waits for a later wake
    world.timers.run_due()
    world.timers.run_due()
    assert [d.body for d in world.sink.deliveries] == [b"%d" % n for n in range(1_500)]


def test_a_dead_letter_exchange_that_delays_makes_a_retry_loop(delayed: Delayed) -> None:
    # The common pattern: rejected messages wait in a delayed exchange, then go back.
    delayed.vhost.declare_queue(
        "work",
        owner=None,
        arguments={"x-dead-letter-exchange": "dx", "x-dead-letter-routing-key": "k"},
    )
    for body, delay in ((b"wait", 500), (b"bad", "never")):
        delayed.channel.publish(
            "",
            "work",
            False,
            False,
            header(body, headers={"x-delay": delay}),
            body,
            None,
            delayed.clock(),
        )
    for _ in range(2):
        got = delayed.channel.get("work", no_ack=False)
        assert got is not None
        delayed.channel.reject(got[0], requeue=False)
    # A delay that is no number cannot stop a dead-lettering: that copy goes at once.
    assert delayed.bodies() == [b"bad"]
    delayed.advance(500)
    assert delayed.bodies() == [b"wait"]


def test_bcc_routes_a_held_message_when_released_and_is_not_delivered(
    delayed: Delayed,
) -> None:
    other = delayed.vhost.declare_queue("other", owner=None)
    delayed.vhost.bind("dx", other, "secret", {})
    delayed.publish(b"m", **{"x-delay": 100, "BCC": ["secret"]})
    delayed.advance(100)
    for queue in ("q", "other"):
        got = delayed.channel.get(queue, no_ack=True)
        assert got is not None, queue
        assert "BCC" not in got[2].headers
