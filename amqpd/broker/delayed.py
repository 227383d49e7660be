"""The messages a delayed-message exchange holds until their time, and their release.

Each held message is a record in the exchange's own log (durable for a durable exchange),
stamped with its release time; a TimingWheel indexes the offsets by that time, so the
broker keeps some 16 bytes per held message and the bodies stay on disk. When messages
come due (a batch per wake-up, in due order) each is read back, its x-delay negated, and
routed through the exchange's bindings as they are then. Its record is acked once the
copies routed are durable: a crash in between routes it again after the restart, never
loses it.

Persistent messages held by a durable exchange survive restarts and kill -9; at start the
log is read through to rebuild the index, and messages whose time passed while the
broker was down are released at once, in publish order. Transient messages are dropped by
the store at recovery, as a durable queue drops them. Without storage (unit tests) the
messages are held in memory.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from amqpd.broker.durability import DeferredAcks
from amqpd.broker.exchanges.delayed import DelayedExchange, release_at_ms, released
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog, QueueStorage
from amqpd.broker.queue import KIND_PERSISTENT, KIND_TRANSIENT, Durability
from amqpd.broker.timers import Timers
from amqpd.broker.timing_wheel import TimingWheel

log = logging.getLogger("amqpd.delayed")

# Messages released per wake-up: a backlog that came due at once (after downtime, say)
# goes out in batches, between which connections get the event loop.
RELEASE_BATCH_MAX: Final = 512
RECOVERY_READ_RECORDS: Final = 4096

# (exchange, message, now_ms) -> what the copies routed wait on to be durable
Release = Callable[[DelayedExchange, Message, int], list[Durability]]


def delayed_key(vhost: str, name: str) -> str:
    """The store name of a delayed exchange's log (queue keys have one NUL, this two)."""
    return f"{vhost}\x00{name}\x00delayed"


class DelayedMessages:
    __slots__ = (
        "_deferred_acks",
        "_held",
        "_log",
        "_next_offset",
        "_release",
        "_storage",
        "_timer_at_ms",
        "_timers",
        "_wheel",
        "delay_ms_max",
        "deleted",
        "exchange",
        "name",
    )

    def __init__(
        self,
        exchange: DelayedExchange,
        *,
        release: Release,
        timers: Timers,
        deferred_acks: DeferredAcks,
        delay_ms_max: int,
        storage: QueueStorage | None = None,
        recovered: MessageLog | None = None,
    ) -> None:
        self.exchange = exchange
        self.name = exchange.name
        self.delay_ms_max = delay_ms_max
        self._release = release
        self._timers = timers
        self._deferred_acks = deferred_acks
        self._storage = storage
        self._log = recovered
        self._held: dict[int, Message] = {}  # without storage
        self._next_offset = 0
        self._wheel = TimingWheel()
        self._timer_at_ms: int | None = None
        self.deleted = False
        if recovered is not None:
            self._index_recovered(recovered)

    def __repr__(self) -> str:
        return f"<DelayedMessages of {self.exchange!r}: {len(self._wheel)} pending>"

    @property
    def key(self) -> str:
        return delayed_key(self.exchange.vhost, self.name)

    @property
    def pending_count(self) -> int:
        """Messages waiting for their time."""
        return len(self._wheel)

    @property
    def next_release_ms(self) -> int | None:
        return self._wheel.next_wake_ms()

    def memory_bytes(self) -> int:
        return self._wheel.memory_bytes()

    def enqueue(self, message: Message, now_ms: int) -> Durability | None:
        """Hold a message routed here with a delay; what must become durable before it
        may be confirmed."""
        release_ms = release_at_ms(message, now_ms, self.delay_ms_max)
        if release_ms is None:  # not reached: routing sends undelayed messages on
            release_ms = now_ms
        storage = self._storage
        wait: Durability | None = None
        if storage is None:
            offset = self._next_offset
            self._next_offset += 1
            self._held[offset] = message
        else:
            log = self._log
            if log is None:
                log = self._log = storage.create_log(
                    self.key, durable=self.exchange.durable, random_reads=True
                )[0]
            persistent = self.exchange.durable and message.persistent
            kind = KIND_PERSISTENT if persistent else KIND_TRANSIENT
            offset = log.append(kind, release_ms, message.stored_form())
            if persistent:
                wait = (log, offset)
        self._wheel.add(release_ms, offset, now_ms)
        self._schedule(now_ms)
        return wait

    def on_timer(self, now_ms: int) -> None:
        self._timer_at_ms = None
        if self.deleted:
            return
        for offset in self._wheel.pop_due(now_ms, RELEASE_BATCH_MAX):
            self._release_one(offset, now_ms)
        self._schedule(now_ms)

    def _release_one(self, offset: int, now_ms: int) -> None:
        stored = self._log
        if stored is None:
            message = self._held.pop(offset)
        else:
            records = stored.read(offset, max_records=1)
            if not records or records[0].offset != offset:
                log.error("%r: the held message at offset %d could not be read back", self, offset)
                return
            message = Message.from_stored(records[0].payload)
        waits = self._release(self.exchange, released(message), now_ms)
        if stored is not None:
            if waits:
                self._deferred_acks.ack_when_durable(stored, offset, waits)
            else:
                stored.ack(offset)

    def _schedule(self, now_ms: int) -> None:
        wake = self._wheel.next_wake_ms()
        if wake is None:
            return
        wake = max(wake, now_ms)
        if self._timer_at_ms is None or wake < self._timer_at_ms:
            self._timer_at_ms = wake
            self._timers.schedule(wake, self)

    def _index_recovered(self, recovered: MessageLog) -> None:
        now_ms = self._timers.clock_ms()
        offset = recovered.acked_below
        while True:
            records = recovered.read(offset, max_records=RECOVERY_READ_RECORDS)
            if not records:
                break
            for record in records:
                self._wheel.add(record.timestamp_ms, record.offset, now_ms)
            offset = records[-1].offset + 1
        self._schedule(now_ms)

    def discard(self) -> None:
        """The exchange is deleted: its held messages go with it."""
        self.deleted = True
        self._wheel.clear()
        self._held.clear()
        if self._log is not None and self._storage is not None:
            self._storage.delete_log(self.key)
        self._log = None
