"""A queue: its ready messages, the count of unacked ones, its consumers, and the rules
that decide what leaves and when (expiry, length limits, delivery limit, dead-lettering).

Ready messages live in lanes (lane.py): one, or one per priority level when the queue has
x-max-priority, each an offset-ordered run backed by one partition of the queue's log. The
next message out is the lowest ready offset of the highest non-empty lane, so priorities
are served highest first and FIFO within a level; a message's priority above the maximum
counts as the maximum, as RabbitMQ does. A durable queue writes every persistent message
to its durable log at once (kept in memory as well while the budget allows); a transient
message is written only when it cannot be kept in memory, to the durable log of a durable
queue or to a transient log opened for paging. Delivered-but-unacked entries belong to the
channels that hold them; the queue only counts them.

Dispatch is round-robin over consumers that have credit; with consumer priorities
(`x-priority`) the highest priority that has credit goes first; with a single active
consumer only the earliest registered one that is still there gets messages. Consumers
with a tag filter (`x-stream-filter`) are served by filters.py, which takes over dispatch
while the queue has one.

Expiry (x-message-ttl, the expiration property): an entry's deadline is fixed when it is
enqueued (from the log record's time when read back after a restart) and kept when it is
requeued. Deadlines set by the queue's TTL grow with the offset, so those expire from each
lane's head; a message whose own expiration is earlier also gets a place in a heap of
deadlines, so it expires wherever it is (RabbitMQ expires only at the head). An expired
entry still in memory is marked gone and skipped later. Length limits count ready
messages and their body bytes; drop-head dead-letters from the head, reject-publish
refuses the newcomer. Whatever leaves by expiry, a length limit, a reject or the delivery
limit goes to `dead_letter`, which the vhost provides.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, ClassVar, Final

from amqpd.broker.binding import Destination
from amqpd.broker.dead_letter import (
    REASON_DELIVERY_LIMIT,
    REASON_EXPIRED,
    REASON_MAXLEN,
    REASON_REJECTED,
)
from amqpd.broker.filters import ConsumerFilter, QueueFilters
from amqpd.broker.lane import GONE, OUT, READ_AHEAD_RECORDS, READY, WAITING, Lane, QueueEntry
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.message import Message
from amqpd.broker.policies import Policy, queue_arguments
from amqpd.broker.ports import MessageLog, QueueStorage
from amqpd.broker.queue_settings import OVERFLOW_REJECT_PUBLISH_DLX, QueueSettings
from amqpd.broker.stats import MessageCounts
from amqpd.broker.timers import Timers
from amqpd.codec.fields import FieldTable
from amqpd.codec.properties import FLAG_EXPIRATION, FLAG_PRIORITY
from amqpd.errors import AMQPException, PreconditionFailed

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer

__all__ = ["KIND_PERSISTENT", "KIND_TRANSIENT", "REFUSED", "Queue", "QueueEntry", "Refused"]

# Record kinds in a queue's log. Transient records are dropped when a log is recovered.
KIND_PERSISTENT: Final = 1
KIND_TRANSIENT: Final = 2

Durability = tuple[MessageLog, int]  # "durable once this log's durable_offset passes this"


class Refused:
    """What enqueue returns for a message the queue would not take (x-overflow
    reject-publish): a confirming publisher hears basic.nack."""


REFUSED: Final = Refused()
# Records a recovered queue reads per wake-up while it looks for messages' own deadlines.
RECOVERY_SCAN_RECORDS: Final = 1024

# (queue, message, reason, now_ms) -> what the dead-lettered copies wait on to be durable
DeadLetter = Callable[["Queue", Message, str, int], list[Durability]]
# (deadline, lane, offset, in memory, entry or None while only on disk): the in-memory flag
# keeps tuples comparable, (…, 0, None) sorting before (…, 1, entry).
Deadline = tuple[int, int, int, int, QueueEntry | None]


def queue_key(vhost: str, name: str) -> str:
    """A queue's name in the store: its log is kept under it."""
    return f"{vhost}\x00{name}"


def lane_count(settings: QueueSettings) -> int:
    """Partitions of a queue's log: one per priority level 0..x-max-priority, or the
    x-partitions of a partitioned queue (the two exclude each other)."""
    return settings.partitions or (settings.max_priority or 0) + 1


def lane_count_for(arguments: FieldTable) -> int:
    """lane_count of a queue declared with these arguments (no policy sets x-max-priority
    or x-partitions)."""
    return lane_count(QueueSettings.from_arguments(arguments))


class Queue(Destination):
    __slots__ = (
        "_deadlines",
        "_dispatching",
        "_filters",
        "_lane",
        "_lanes",
        "_limited",
        "_memory",
        "_prioritized",
        "_ready_bytes",
        "_ready_count",
        "_retries",
        "_round_robin",
        "_round_robin_by_priority",
        "_storage",
        "_store_all",
        "_take",
        "_timer_at_ms",
        "_timers",
        "_top",
        "_ttl_in_order",
        "_ttl_ms",
        "ack_when_durable",
        "arguments",
        "auto_delete",
        "consumers",
        "counts",
        "dead_letter",
        "deleted",
        "durable",
        "exclusive_consumer",
        "exclusive_owner",
        "had_consumers",
        "last_used_ms",
        "name",
        "on_unused",
        "policy",
        "settings",
        "unacked_count",
        "vhost",
    )
    kind: ClassVar[str] = "queue"

    def __init__(
        self,
        name: str,
        vhost: str,
        *,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: FieldTable | None = None,
        memory: MemoryBudget | None = None,
        storage: QueueStorage | None = None,
        logs: Sequence[MessageLog] | None = None,
        timers: Timers | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: FieldTable = arguments or {}
        self.policy = policy
        self.settings = settings = QueueSettings.from_arguments(
            queue_arguments(self.arguments, policy)
        )
        self._ttl_ms = settings.message_ttl_ms
        self._limited = settings.limited
        # Whether the queue's TTL deadlines grow with the offset (until the TTL changes).
        self._ttl_in_order = True
        self._timers = timers if timers is not None else Timers()
        self._timer_at_ms: int | None = None  # the earliest wake-up asked of the timers
        # Messages whose own expiration comes before the queue's TTL would expire them.
        self._deadlines: list[Deadline] = []
        self._ready_bytes = 0  # body bytes of ready messages (kept with a length limit)
        # (ready at, lane, offset, entry): returned messages waiting out a retry delay.
        self._retries: list[tuple[int, int, int, QueueEntry]] = []
        self.last_used_ms = self._timers.clock_ms()  # for x-expires
        self._memory = memory = memory or MemoryBudget(1 << 62, 1 << 62)
        self._storage = storage
        levels = lane_count(settings)
        if logs is not None and len(logs) != levels:
            raise ValueError(f"{self!r} needs {levels} log partition(s), not {len(logs)}")
        self._lanes = [
            Lane(self, index, logs[index] if logs is not None else None, memory)
            for index in range(levels)
        ]
        self._lane = self._lanes[0]
        self._prioritized = levels > 1
        self._top = levels - 1  # no lane above this one holds a ready message
        self._take: Callable[[], QueueEntry | None] = (
            self._lane.pop if levels == 1 else self._take_by_priority
        )
        self._ready_count = sum(log.live_count for log in logs) if logs is not None else 0
        self._store_all = False  # every message to the log, transient ones too (replay)
        self.unacked_count = 0
        self.counts = MessageCounts()
        self.consumers: list[Consumer] = []
        self.exclusive_consumer: Consumer | None = None
        self.had_consumers = False
        self.deleted = False
        self._round_robin = 0
        self._round_robin_by_priority: dict[int, int] | None = None  # set while priorities differ
        self._dispatching = False
        self._filters: QueueFilters | None = None  # while a consumer has a tag filter
        # Called when the last consumer of an auto-delete queue leaves, or x-expires passes.
        self.on_unused: Callable[[Queue], None] | None = None
        self.dead_letter: DeadLetter | None = None  # set by the vhost
        # Set by the vhost: ack `offset` of `log` once every wait is durable.
        self.ack_when_durable: Callable[[MessageLog, int, list[Durability]], None] | None = None
        if settings.max_length_bytes is not None and self._ready_count:
            self._ready_bytes = self._count_ready_bytes()
        if settings.expires_ms is not None:
            self._wake_at(self.last_used_ms + settings.expires_ms)
        if self._ttl_ms is not None and self._ready_count:
            # Recovered messages: find the heads' deadlines (from their records' times).
            self._wake_at(self.last_used_ms)
        if self._ready_count:
            # Recovered messages with their own expiration may lie anywhere: find them.
            self._timers.schedule(self.last_used_ms, RecoveredDeadlines(self))

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} in vhost {self.vhost!r}>"

    @property
    def key(self) -> str:
        return queue_key(self.vhost, self.name)

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (what declare-ok and get-ok report; unacked ones excluded)."""
        return self._ready_count

    @property
    def retrying_count(self) -> int:
        """Returned messages waiting out a retry delay (neither ready nor unacked)."""
        return len(self._retries)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def memory_bytes(self) -> int:
        return sum(lane.cache_bytes for lane in self._lanes)

    @property
    def log(self) -> MessageLog | None:
        """The log behind the first (or only) lane."""
        return self._lane.log

    # ------------------------------------------------------------- messages

    def enqueue(self, message: Message, now_ms: int) -> Durability | Refused | None:
        """Take a message; return what must become durable before it may be confirmed
        (REFUSED if an x-overflow reject-publish limit turned it away)."""
        expires_at_ms: int | None = None
        if self._limited or message.flags & FLAG_EXPIRATION:
            settings = self.settings
            if settings.rejects_publish and self._would_overflow(message):
                if settings.overflow == OVERFLOW_REJECT_PUBLISH_DLX:
                    self._dead_letter_message(message, REASON_MAXLEN, now_ms)
                return REFUSED
            expires_at_ms = self._deadline(message, now_ms)
        self.counts.publish += 1
        lane = self._lane
        if self._prioritized:
            lane = self._lane_for(message)
            if lane.index > self._top:
                self._top = lane.index
        offset = lane.tail
        lane.tail = offset + 1
        log = lane.log
        # Durable only where a durable log backs the queue (a broker without storage, as in
        # unit tests, keeps everything in memory).
        persistent = self.durable and log is not None and (message.persistent or self._store_all)
        if (
            not self._ready_count
            and self.consumers
            and self._filters is None
            and (consumer := self._next_consumer()) is not None
        ):
            # Straight to a waiting consumer: the common case of a keeping-up queue.
            lane.disk_from = offset + 1
            if consumer.no_ack:
                # Consumed before it could matter: nothing to write, nothing to wait for.
                consumer.channel.deliver_fresh(consumer, message)
                return None
            entry = QueueEntry(offset, message, lane, False, expires_at_ms)
            entry.state = OUT
            if persistent and log is not None:
                log.append(KIND_PERSISTENT, now_ms, message.stored_form(), offset)
                entry.stored = True
            self.unacked_count += 1
            consumer.channel.deliver(consumer, entry)
            return (log, offset) if entry.stored and log is not None else None
        self._ready_count += 1
        size = message.memory_bytes
        memory = self._memory
        if (
            lane.disk_from == offset  # nothing ready waits on disk before it
            and lane.cache_bytes + size <= memory.queue_bytes_max
            and memory.total_bytes + size <= memory.total_bytes_max
        ):  # the MemoryBudget rule
            memory.total_bytes += size
            entry = QueueEntry(offset, message, lane, False, expires_at_ms)
            if persistent and log is not None:
                log.append(KIND_PERSISTENT, now_ms, message.stored_form(), offset)
                entry.stored = True
            lane.cache.append(entry)
            lane.cache_bytes += size
            lane.disk_from = offset + 1
            if expires_at_ms is not None:
                self._track_deadline(expires_at_ms, lane.index, offset, entry, now_ms)
        else:
            # No room in memory (or older messages already wait on disk): to the log only.
            if log is None:
                log = self._open_paging_log(lane)
            log.append(
                KIND_PERSISTENT if persistent else KIND_TRANSIENT,
                now_ms,
                message.stored_form(),
                offset,
            )
            if expires_at_ms is not None:
                self._track_deadline(expires_at_ms, lane.index, offset, None, now_ms)
        if self._limited:
            self._ready_bytes += message.body_size
            if not self.settings.rejects_publish:
                self._drop_head_over_limit(now_ms)
        if self._filters is not None:
            self.dispatch()  # a consumer waiting for this tag may be idle with credit
        return (log, offset) if persistent and log is not None else None

    def _lane_for(self, message: Message) -> Lane:
        """A message's priority level: 0 without the property, the queue's maximum above it."""
        if not message.flags & FLAG_PRIORITY:
            return self._lane
        priority = message.properties.priority or 0
        lanes = self._lanes
        return lanes[min(priority, len(lanes) - 1)]

    # ---------------------------------------------------------- TTL, limits

    def _deadline(self, message: Message, now_ms: int) -> int | None:
        """When a message enqueued now expires: the lower of the queue's TTL and its own."""
        ttl_ms = self._ttl_ms
        if message.flags & FLAG_EXPIRATION:
            expiration = message.properties.expiration
            if expiration is not None:
                own_ms = int(expiration)  # validated on publish
                if ttl_ms is None or own_ms < ttl_ms:
                    ttl_ms = own_ms
        return None if ttl_ms is None else now_ms + ttl_ms

    def read_back_deadline(self, entry: QueueEntry, enqueued_at_ms: int) -> None:
        """An entry read back from the log gets the deadline it had when it was enqueued."""
        entry.expires_at_ms = self._track_stored_deadline(
            entry.message, enqueued_at_ms, entry.lane.index, entry.offset, entry
        )

    def _track_stored_deadline(
        self,
        message: Message,
        enqueued_at_ms: int,
        lane_index: int,
        offset: int,
        entry: QueueEntry | None,
    ) -> int | None:
        """A logged message's deadline (from its record's time), tracked; None if none."""
        expires_at_ms = self._deadline(message, enqueued_at_ms)
        if expires_at_ms is not None:
            self._track_deadline(expires_at_ms, lane_index, offset, entry, enqueued_at_ms)
        return expires_at_ms

    def _track_deadline(
        self,
        expires_at_ms: int,
        lane_index: int,
        offset: int,
        entry: QueueEntry | None,
        now_ms: int,
    ) -> None:
        """Queue-TTL deadlines grow with the offset, so the head finds them; a message's
        own earlier deadline needs its place in the heap."""
        ttl_ms = self._ttl_ms
        if ttl_ms is None or expires_at_ms < now_ms + ttl_ms or not self._ttl_in_order:
            heapq.heappush(
                self._deadlines,
                (expires_at_ms, lane_index, offset, entry is not None, entry),
            )
        self._wake_at(expires_at_ms)

    def _would_overflow(self, message: Message) -> bool:
        return self._exceeds(self._ready_count + 1, self._ready_bytes + message.body_size)

    def _exceeds(self, ready_count: int, ready_bytes: int) -> bool:
        """Whether this many ready messages and body bytes pass a length limit."""
        settings = self.settings
        max_length = settings.max_length
        if max_length is not None and ready_count > max_length:
            return True
        max_bytes = settings.max_length_bytes
        return max_bytes is not None and ready_bytes > max_bytes

    def _drop_head_over_limit(self, now_ms: int) -> None:
        while self._ready_count and self._exceeds(self._ready_count, self._ready_bytes):
            entry = self._pop()
            if entry is None:
                break
            self._leave(entry, REASON_MAXLEN, now_ms)

    def _leave(self, entry: QueueEntry, reason: str, now_ms: int) -> None:
        """A ready entry (already taken out) dies: dead-letter it, then ack it in the log
        once its dead-lettered copies are durable (never lost in between)."""
        waits = self._dead_letter_message(entry.message, reason, now_ms)
        if entry.stored:
            self._ack_after(entry.lane, entry.offset, waits)

    def _dead_letter_message(self, message: Message, reason: str, now_ms: int) -> list[Durability]:
        if self.dead_letter is None or self.settings.dead_letter_exchange is None:
            self.counts.count_death(reason, dead_lettered=False)
            return []
        self.counts.count_death(reason, dead_lettered=True)
        return self.dead_letter(self, message, reason, now_ms)

    def _ack_after(self, lane: Lane, offset: int, waits: list[Durability]) -> None:
        log = lane.log
        if log is None or self.deleted:
            return
        if waits and self.ack_when_durable is not None:
            self.ack_when_durable(log, offset, waits)
        else:
            log.ack(offset)

    def _wake_at(self, deadline_ms: int) -> None:
        current = self._timer_at_ms
        if current is None or deadline_ms < current:
            self._timer_at_ms = deadline_ms
            self._timers.schedule(deadline_ms, self)

    def on_timer(self, now_ms: int) -> None:
        """A deadline came: expire what is due, delete the queue if x-expires passed."""
        if self.deleted:
            return
        self._timer_at_ms = None
        retries = self._retries
        while retries and retries[0][0] <= now_ms:
            entry = heapq.heappop(retries)[3]
            if entry.state == WAITING:
                self._make_ready(entry)
        if retries:
            self._wake_at(retries[0][0])
        self.expire(now_ms)
        expires_ms = self.settings.expires_ms
        if expires_ms is not None and not self.consumers:
            # (With consumers it is in use; the last one leaving starts the clock again.)
            if now_ms >= self.last_used_ms + expires_ms:
                if self.on_unused is not None:
                    self.on_unused(self)
                return
            self._wake_at(self.last_used_ms + expires_ms)

    def used(self, now_ms: int) -> None:
        """A consumer, basic.get or redeclare used the queue: x-expires starts again."""
        self.last_used_ms = now_ms
        expires_ms = self.settings.expires_ms
        if expires_ms is not None:
            self._wake_at(now_ms + expires_ms)

    def apply_policy(self, policy: Policy | None, now_ms: int) -> None:
        """The vhost's policies changed: the settings follow this queue's policy now.

        Messages already queued keep their deadlines (as in RabbitMQ, a TTL applies from
        publication); new length limits apply at once."""
        self.policy = policy
        old = self.settings
        settings = QueueSettings.from_arguments(queue_arguments(self.arguments, policy))
        if settings == old:
            return
        self.settings = settings
        self._limited = settings.limited
        if settings.message_ttl_ms != old.message_ttl_ms:
            self._ttl_ms = settings.message_ttl_ms
            self._ttl_in_order = False  # old and new deadlines interleave: all to the heap
        if settings.max_length_bytes is not None and old.max_length_bytes is None:
            # Body bytes were counted only under a byte limit: count what is there.
            self._ready_bytes = self._count_ready_bytes()
        if settings.expires_ms is not None:
            self._wake_at(self.last_used_ms + settings.expires_ms)
        if self._limited and not settings.rejects_publish:
            self._drop_head_over_limit(now_ms)

    def _count_ready_bytes(self) -> int:
        """Body bytes of every ready message, those only on disk included (read through
        once, not kept): a byte limit that appears must count what is there."""
        total = 0
        for lane in self._lanes:
            for entries in (lane.cache, lane.returned):
                total += sum(entry.message.body_size for entry in entries if entry.state == READY)
            log, offset = lane.log, lane.disk_from
            while log is not None and offset < lane.tail:
                records = log.read(offset, READ_AHEAD_RECORDS)
                if not records:
                    break
                total += sum(
                    Message.from_stored(record.payload).body_size
                    for record in records
                    if record.offset not in lane.lifted  # counted above, or out
                )
                offset = records[-1].offset + 1
        return total

    def expire(self, now_ms: int) -> None:
        """Dead-letter every ready message whose deadline has passed, wherever it is."""
        if self._ttl_ms is not None and self._ready_count:
            for lane in self._lanes[: self._top + 1]:
                while (entry := lane.peek()) is not None:
                    if entry.expires_at_ms is None:
                        break
                    if entry.expires_at_ms > now_ms:
                        # The lane's next deadline (if the in-place expiry below takes
                        # this entry, the wake-up is early and harmless).
                        self._wake_at(entry.expires_at_ms)
                        break
                    lane.pop()
                    self._taken(entry)
                    self._leave(entry, REASON_EXPIRED, now_ms)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now_ms:
            _, lane_index, offset, _, held = heapq.heappop(deadlines)
            if held is None:
                self._expire_on_disk(self._lanes[lane_index], offset, now_ms)
            elif held.state == READY and held.queue is self:
                self._expire_in_place(held, now_ms)
        for lane in self._lanes:
            lane.compact()
        if deadlines:
            self._wake_at(deadlines[0][0])
        self.dispatch()

    def _taken(self, entry: QueueEntry) -> None:
        """A ready entry was taken out of its lane: count it out (as _pop does inline)."""
        self._ready_count -= 1
        entry.state = OUT
        if self._limited:
            self._ready_bytes -= entry.message.body_size

    def _expire_in_place(self, entry: QueueEntry, now_ms: int) -> None:
        lane = entry.lane
        if lane.holds_in_cache(entry):
            size = entry.message.memory_bytes
            lane.cache_bytes -= size
            self._memory.total_bytes -= size
            lane.gone_count += 1
        self._taken(entry)
        entry.state = GONE
        self._leave(entry, REASON_EXPIRED, now_ms)

    def _expire_on_disk(self, lane: Lane, offset: int, now_ms: int) -> None:
        """A message with its own deadline that was never read back: read it now."""
        log = lane.log
        if log is None or offset < lane.disk_from or log.is_acked(offset):
            return  # read back since (its entry has its own place in the heap) or gone
        if offset in lane.lifted:
            return  # taken by a filtered consumer (if requeued, its entry has its place)
        records = log.read(offset, 1)
        if not records or records[0].offset != offset:
            return
        message = Message.from_stored(records[0].payload)
        self._ready_count -= 1
        if self._limited:
            self._ready_bytes -= message.body_size
        self._ack_after(lane, offset, self._dead_letter_message(message, REASON_EXPIRED, now_ms))

    def scan_for_deadlines(self, lane: Lane, start: int, end: int, records_max: int) -> int:
        """Track the own deadlines of messages in [start, end) of a lane that are still
        only on disk; returns where to go on from (`end` when done)."""
        log = lane.log
        start = max(start, lane.disk_from)
        if log is None or start >= end:
            return end
        records = log.read(start, records_max)
        stored_flags = Message.stored_flags
        for record in records:
            if record.offset >= end:
                return end
            if stored_flags(record.payload) & FLAG_EXPIRATION:
                self._track_stored_deadline(
                    Message.from_stored(record.payload),
                    record.timestamp_ms,
                    lane.index,
                    record.offset,
                    None,
                )
        # A short read may be the log's byte bound per read: only an empty one is the end.
        return records[-1].offset + 1 if records else end

    def _open_paging_log(self, lane: Lane) -> MessageLog:
        """A transient queue outgrew memory: one log, a partition per lane."""
        if self._storage is None:
            raise RuntimeError(f"{self!r} has no storage to page messages out to")
        lanes = self._lanes
        logs = self._storage.create_log(self.key, durable=False, partitions=len(lanes))
        for each, partition in zip(lanes, logs, strict=True):
            # The new partitions start at offset 0: each lane's offsets go on from its
            # tail, leaving a gap (gaps count as acked).
            each.log = partition
        return logs[lane.index]

    def _take_by_priority(self) -> QueueEntry | None:
        """Take the next entry of the highest lane that has one."""
        lanes = self._lanes
        for index in range(self._top, -1, -1):
            entry = lanes[index].pop()
            if entry is not None:
                self._top = index
                return entry
        self._top = 0
        return None

    def _pop(self, take: Callable[[], QueueEntry | None] | None = None) -> QueueEntry | None:
        """Take the next ready entry (from `take`, one lane's pop, if given; else the
        queue's next). Expired ones met on the way are dead-lettered."""
        if take is None:
            take = self._take
        while True:
            entry = take()
            if entry is None:
                return None
            self._ready_count -= 1
            entry.state = OUT
            if self._limited:
                self._ready_bytes -= entry.message.body_size
            expires_at_ms = entry.expires_at_ms
            if expires_at_ms is not None:
                now_ms = self._timers.clock_ms()
                if expires_at_ms <= now_ms:
                    self._leave(entry, REASON_EXPIRED, now_ms)
                    continue
            return entry

    def get(self, no_ack: bool) -> QueueEntry | None:
        """Take the next ready message for basic.get."""
        self.used(self._timers.clock_ms())
        entry = self._pop()
        if entry is not None:
            if no_ack:
                self._forget(entry)
            else:
                self.unacked_count += 1
        return entry

    def requeue(self, entry: QueueEntry, later: bool = False) -> None:
        """Put an unacked entry back at its original position (it counts as redelivered);
        past x-delivery-limit returns it is dead-lettered instead. `later`: a consumer
        nacked or rejected it, so on a queue with a retry schedule it waits the delay for
        this attempt before it is ready again."""
        if self._returned_to_deleted(entry):
            return
        settings = self.settings
        limit = settings.delivery_limit
        if limit is not None and entry.delivery_count > limit:
            self._leave(entry, REASON_DELIVERY_LIMIT, self._timers.clock_ms())
            return
        if later and settings.retries_later:
            delay_ms = settings.retry_delay_ms(entry.delivery_count)
            if delay_ms > 0:
                entry.state = WAITING
                ready_at_ms = self._timers.clock_ms() + delay_ms
                heapq.heappush(self._retries, (ready_at_ms, entry.lane.index, entry.offset, entry))
                self._wake_at(ready_at_ms)
                return
        self._make_ready(entry)

    def _make_ready(self, entry: QueueEntry) -> None:
        entry.state = READY
        lane = entry.lane
        heapq.heappush(lane.returned, entry)
        if lane.index > self._top:
            self._top = lane.index
        self._ready_count += 1
        if self._limited:
            self._ready_bytes += entry.message.body_size
        if self._filters is not None:
            self._filters.made_ready(entry)
        expires_at_ms = entry.expires_at_ms
        if expires_at_ms is not None:
            # It keeps its deadline; the heap may have dropped it while it was out.
            heapq.heappush(self._deadlines, (expires_at_ms, lane.index, entry.offset, True, entry))
            self._wake_at(expires_at_ms)

    def past_delivery_limit(self, entry: QueueEntry) -> bool:
        """A ready entry read back after a restart that went out more often than
        x-delivery-limit allows: it leaves (dead-lettered) instead of going out again."""
        limit = self.settings.delivery_limit
        if limit is None or entry.delivery_count <= limit:
            return False
        self._taken(entry)
        self._leave(entry, REASON_DELIVERY_LIMIT, self._timers.clock_ms())
        return True

    def settle(self, entry: QueueEntry) -> None:
        """An unacked entry is done with (acked); the channel counts acks per batch."""
        self.unacked_count -= 1
        entry.consumer = None
        if entry.stored:
            entry.lane.ack(entry.offset)

    def reject(self, entry: QueueEntry) -> None:
        """An unacked entry was rejected or nacked without requeue: dead-letter it."""
        if self._returned_to_deleted(entry):
            return
        self._leave(entry, REASON_REJECTED, self._timers.clock_ms())

    def _returned_to_deleted(self, entry: QueueEntry) -> bool:
        """An unacked entry comes back (requeue, reject): done here if the queue is gone."""
        self.unacked_count -= 1
        entry.consumer = None
        if self.deleted and entry.stored:
            entry.lane.ack(entry.offset)
        return self.deleted

    def _forget(self, entry: QueueEntry) -> None:
        """A ready entry leaves without being held (no-ack delivery, get without ack)."""
        if entry.stored:
            entry.lane.ack(entry.offset)

    def note_delivered(self, entry: QueueEntry) -> None:
        """Remember that a stored entry went out, so a restart flags it redelivered; with a
        delivery limit, remember how often (a restart keeps counting from there)."""
        log = entry.lane.log
        if entry.stored and log is not None:
            if self._filters is None or self._filters.in_order(entry):
                log.note_delivered(entry.offset)
            if self.settings.counts_deliveries:
                log.set_counter(entry.offset, entry.delivery_count)

    def purge(self) -> int:
        """Drop every ready message; unacked ones stay with their channels."""
        count = self._ready_count
        for lane in self._lanes:
            lane.purge()
        self._ready_count = 0
        self._ready_bytes = 0
        self._deadlines.clear()
        return count

    def storage_lost(self, log: MessageLog, start: int, end: int) -> None:
        """Records [start, end) never reached `log` (a failed write): what was only on
        disk is gone, what is in memory stays deliverable but no longer durable."""
        for lane in self._lanes:
            if lane.log is log:
                self._ready_count -= lane.storage_lost(start, end)

    def close_storage(self) -> None:
        """The queue is deleted: its log goes with it."""
        had_log = False
        for lane in self._lanes:
            lane.release_memory()
            had_log = had_log or lane.log is not None
            lane.log = None
        if had_log and self._storage is not None:
            self._storage.delete_log(self.key)

    # ------------------------------------------------------------ consumers

    def check_consumer(
        self, no_ack: bool, prefetch_count: int, prefetch_global: int, arguments: FieldTable
    ) -> None:
        """Refuse consumer arguments this kind of queue has no meaning for."""
        if "x-stream-filter" in arguments and self.settings.partitions:
            raise PreconditionFailed(
                f"invalid arg 'x-stream-filter' for queue '{self.name}' in vhost "
                f"'{self.vhost}': a partitioned queue does not filter its consumers"
            )
        for key in ("x-stream-offset", "x-consumer-group"):
            if key in arguments:
                raise PreconditionFailed(
                    f"invalid arg '{key}' for queue '{self.name}' in vhost '{self.vhost}': "
                    "only a stream queue takes it"
                )

    def nack_refusal(self, entry: QueueEntry) -> AMQPException | None:
        """The error basic.nack and basic.reject of this delivery get, if they are refused."""
        return None

    def every_consumer(self) -> list[Consumer]:
        """Its consumers, whatever they read: what the queue's deletion cancels."""
        return list(self.consumers)

    def add_consumer(self, consumer: Consumer) -> None:
        """Add a consumer, after those of higher or equal priority (with a single active
        consumer: last, since the earliest one there is the active one)."""
        consumers = self.consumers
        index = len(consumers)
        if not self.settings.single_active_consumer:
            while index and consumers[index - 1].priority < consumer.priority:
                index -= 1
        consumers.insert(index, consumer)
        self.used(self._timers.clock_ms())
        self.had_consumers = True
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        self._note_priorities()
        consumer_filter = ConsumerFilter.from_arguments(consumer.arguments)
        if consumer_filter is not None:
            if self._filters is None:
                self._filters = QueueFilters(self)
            self._filters.add(consumer, consumer_filter)

    def _note_priorities(self) -> None:
        consumers = self.consumers
        mixed = (
            bool(consumers)
            and consumers[0].priority != consumers[-1].priority
            and not self.settings.single_active_consumer
        )
        if not mixed:
            self._round_robin_by_priority = None
        elif self._round_robin_by_priority is None:
            self._round_robin_by_priority = {}

    def remove_consumer(self, consumer: Consumer) -> None:
        """Remove a consumer; an auto-delete queue left with none is deleted."""
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None
        if self._filters is not None and self._filters.remove(consumer):
            self._filters = None
        if self._round_robin >= len(self.consumers):
            self._round_robin = 0
        self._note_priorities()
        if not self.consumers:
            self.used(self._timers.clock_ms())
        elif self.settings.single_active_consumer:
            self.dispatch()  # the next consumer in line takes over
        if self.auto_delete and not self.consumers and not self.deleted and self.on_unused:
            self.on_unused(self)

    def dispatch(self) -> None:
        """Deliver ready messages to consumers with credit, round-robin, until one runs out."""
        if self._dispatching or not self.consumers or not self._ready_count:
            return
        self._dispatching = True
        try:
            if self._filters is not None:
                self._filters.dispatch()
                return
            while self._ready_count:
                consumer = self._next_consumer()
                if consumer is None:
                    break
                entry = self._pop()
                if entry is None:
                    break
                self._hand_over(consumer, entry)
        finally:
            self._dispatching = False

    def _next_consumer(self) -> Consumer | None:
        consumers = self.consumers
        count = len(consumers)
        if count == 1 or (count and self.settings.single_active_consumer):
            only = consumers[0]
            return only if only.channel.can_deliver(only) else None
        if self._round_robin_by_priority is not None:
            return self._next_consumer_by_priority()
        start = self._round_robin
        for step in range(count):
            index = (start + step) % count
            consumer = consumers[index]
            if consumer.channel.can_deliver(consumer):
                self._round_robin = (index + 1) % count
                return consumer
        return None

    def _next_consumer_by_priority(self, idle: Container[Consumer] = ()) -> Consumer | None:
        """Round-robin within the highest priority that has a consumer with credit, passing
        over those in `idle` (filtered consumers with nothing to take, filters.py)."""
        consumers = self.consumers
        positions = self._round_robin_by_priority
        assert positions is not None
        count = len(consumers)
        group_start = 0
        while group_start < count:
            priority = consumers[group_start].priority
            group_end = group_start + 1
            while group_end < count and consumers[group_end].priority == priority:
                group_end += 1
            size = group_end - group_start
            start = positions.get(priority, 0)
            for step in range(size):
                slot = (start + step) % size
                consumer = consumers[group_start + slot]
                if consumer not in idle and consumer.channel.can_deliver(consumer):
                    positions[priority] = (slot + 1) % size
                    return consumer
            group_start = group_end
        return None

    def _hand_over(self, consumer: Consumer, entry: QueueEntry) -> None:
        if consumer.no_ack:
            self._forget(entry)
        else:
            self.unacked_count += 1
        consumer.channel.deliver(consumer, entry)


class RecoveredDeadlines:
    """After a restart, finds the messages of a recovered queue whose own expiration
    (the expiration property) lies behind the head, a batch per wake-up so that the node
    serves meanwhile: each then expires on time wherever it is, as before the restart."""

    __slots__ = ("ends", "positions", "queue")

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.positions = [lane.disk_from for lane in queue._lanes]
        self.ends = [lane.tail for lane in queue._lanes]  # newer messages are tracked

    def on_timer(self, now_ms: int) -> None:
        queue = self.queue
        if queue.deleted:
            return
        for index, lane in enumerate(queue._lanes):
            end = self.ends[index]
            if self.positions[index] < end:
                self.positions[index] = queue.scan_for_deadlines(
                    lane, self.positions[index], end, RECOVERY_SCAN_RECORDS
                )
                queue._timers.schedule(now_ms, self)  # the next batch at the next wake-up
                return
