"""Replay of an ordinary queue (amqpd's own `x-replay-max-age`): the queue keeps what its
consumers took for that long, and a consumer that names an `x-stream-offset` reads the
queue's log from there (a time, an interval back from now, first, last, next or an offset)
without removing anything, as a stream consumer does.

The log keeps acked segments (it is created with keep_acked), and every message is kept in
it, transient ones too (like a stream, a replay queue keeps everything on disk, and a
publisher's confirm waits for it). A replay consumer sees every message that was in the
queue from that point: those since consumed, those still ready and those out unacked; it
follows new ones as they come. Its deliveries carry `x-stream-offset`; acking, nacking or
rejecting one only returns credit. Every RETENTION_CHECK_MS the segments whose messages
are all consumed and whose newest message is older than the window are deleted.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from amqpd.broker.lane import Lane, QueueEntry
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog
from amqpd.broker.queue import Queue
from amqpd.broker.readers import Reader, StreamEntry, parse_filter, parse_offset_spec
from amqpd.broker.readers import with_offset_header as with_offset
from amqpd.broker.timers import Timers
from amqpd.codec.fields import FieldTable

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer

RETENTION_CHECK_MS: Final = 1000


class Replay:
    """A queue's replay consumers and its retention of consumed messages."""

    __slots__ = ("_armed", "_timers", "lane", "log", "max_age_ms", "queue", "readers")

    def __init__(
        self, queue: Queue, lane: Lane, log: MessageLog, max_age_ms: int, timers: Timers
    ) -> None:
        self.queue = queue
        self.lane = lane
        self.log = log
        self.max_age_ms = max_age_ms
        self.readers: dict[Consumer, Reader] = {}
        self._timers = timers
        self._armed = False
        self._arm(timers.clock_ms())

    def add(self, consumer: Consumer) -> None:
        arguments = consumer.arguments
        queue = self.queue
        spec = parse_offset_spec(
            arguments["x-stream-offset"], self._timers.clock_ms(), queue.name, queue.vhost
        )
        self.readers[consumer] = Reader(
            spec.resolve(self.log), parse_filter(arguments, queue.name, queue.vhost)
        )

    def remove(self, consumer: Consumer) -> bool:
        return self.readers.pop(consumer, None) is not None

    def dispatch(self) -> None:
        log, queue, lane = self.log, self.queue, self.lane
        for consumer, reader in self.readers.items():
            for offset, message in reader.messages_for(consumer, log, True):
                entry = StreamEntry(lane, offset, with_offset(message, offset), None)
                queue.unacked_count += 1
                consumer.channel.deliver(consumer, entry)

    def _arm(self, now_ms: int) -> None:
        if not self._armed:
            self._armed = True
            self._timers.schedule(now_ms + RETENTION_CHECK_MS, self)

    def on_timer(self, now_ms: int) -> None:
        self._armed = False
        if self.queue.deleted:
            return
        self.apply_retention(now_ms)
        self._arm(now_ms)

    def apply_retention(self, now_ms: int) -> int:
        """Delete the segments consumed and older than the window; the messages dropped."""
        log = self.log
        cutoff_ms = now_ms - self.max_age_ms
        bound = log.first_offset
        for span in log.segment_spans()[:-1]:  # the newest segment stays
            if span.timestamp_max_ms >= cutoff_ms:
                break
            bound = span.end_offset
        bound = min(bound, log.acked_below)
        if bound <= log.first_offset:
            return 0
        return log.drop_before(bound)


class ReplayQueue(Queue):
    """A classic queue declared with x-replay-max-age: consumers that name an
    x-stream-offset replay its log; the others consume it as usual."""

    __slots__ = ("replay",)

    def __init__(self, name: str, vhost: str, **kwargs: Any) -> None:
        super().__init__(name, vhost, **kwargs)
        self._store_all = True
        log = self._lane.log
        max_age_ms = self.settings.replay_max_age_ms
        if log is None or max_age_ms is None:
            raise ValueError(f"{self!r}: replay needs a durable log and x-replay-max-age")
        self.replay = Replay(self, self._lane, log, max_age_ms, self._timers)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers) + len(self.replay.readers)

    def enqueue(self, message: Message, now_ms: int) -> Any:
        wait = super().enqueue(message, now_ms)
        if self.replay.readers:
            self.replay.dispatch()
        return wait

    def check_consumer(
        self, no_ack: bool, prefetch_count: int, prefetch_global: int, arguments: FieldTable
    ) -> None:
        if "x-stream-offset" not in arguments:
            super().check_consumer(no_ack, prefetch_count, prefetch_global, arguments)
            return
        parse_offset_spec(arguments["x-stream-offset"], 0, self.name, self.vhost)
        parse_filter(arguments, self.name, self.vhost)

    def add_consumer(self, consumer: Consumer) -> None:
        if "x-stream-offset" in consumer.arguments:
            self.replay.add(consumer)
            self.had_consumers = True
            self.used(self._timers.clock_ms())
            return
        super().add_consumer(consumer)

    def remove_consumer(self, consumer: Consumer) -> None:
        if not self.replay.remove(consumer):
            super().remove_consumer(consumer)

    def every_consumer(self) -> list[Consumer]:
        return [*self.consumers, *self.replay.readers]

    def dispatch(self) -> None:
        super().dispatch()
        if self.replay.readers:
            self.replay.dispatch()

    def settle(self, entry: QueueEntry) -> None:
        if entry.replayed:
            self.unacked_count -= 1
            entry.consumer = None
            return
        super().settle(entry)

    def requeue(self, entry: QueueEntry, later: bool = False) -> None:
        if entry.replayed:
            self.settle(entry)
            return
        super().requeue(entry, later)

    def reject(self, entry: QueueEntry) -> None:
        if entry.replayed:
            self.settle(entry)
            return
        super().reject(entry)

    def close_storage(self) -> None:
        self.replay.readers.clear()
        super().close_storage()
