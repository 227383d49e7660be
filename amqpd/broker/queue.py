"""A queue: ready messages in publication order, the count of unacked ones, its consumers.

Every message gets an offset, a per-queue sequence number that is also its offset in the
queue's log. The ready messages are, in offset order:
- a run held in memory from the head (`_cache`), bounded by the memory budget;
- then, from `_disk_from` to the tail, messages that are only in the log (a deep backlog),
  read back in batches as consumers reach them;
- and a small heap of requeued entries (nack, reject, recover, a closed channel), which
  take their original places: the next message out is always the lowest ready offset.
A durable queue writes every persistent message to its durable log at once (kept in
memory as well while the budget allows); a transient message is written only when it
cannot be kept in memory, to the durable log of a durable queue or to a transient log
opened for paging. Delivered-but-unacked entries belong to the channels that hold them;
the queue only counts them.

Dispatch is round-robin over consumers that have credit; with consumer priorities
(`x-priority`) the highest priority that has credit goes first; with a single active
consumer only the earliest registered one that is still there gets messages.

Expiry (x-message-ttl, the expiration property): an entry's deadline is fixed when it is
enqueued (from the log record's time when read back after a restart) and kept when it is
requeued. Deadlines set by the queue's TTL grow with the offset, so those expire from the
head; a message whose own expiration is earlier also gets a place in a heap of deadlines,
so it expires wherever it is (RabbitMQ expires only at the head). An expired entry still
in memory is marked gone and skipped later. Length limits count ready messages and their
body bytes; drop-head dead-letters from the head, reject-publish refuses the newcomer.
Whatever leaves by expiry, a length limit, a reject or the delivery limit goes to
`dead_letter`, which the vhost provides.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Final

from amqpd.broker.binding import Destination
from amqpd.broker.dead_letter import (
    REASON_DELIVERY_LIMIT,
    REASON_EXPIRED,
    REASON_MAXLEN,
    REASON_REJECTED,
)
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog, QueueStorage
from amqpd.broker.queue_settings import OVERFLOW_REJECT_PUBLISH_DLX, QueueSettings
from amqpd.broker.timers import Timers
from amqpd.codec.fields import FieldTable
from amqpd.codec.properties import FLAG_EXPIRATION

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer

# Record kinds in a queue's log. Transient records are dropped when a log is recovered.
KIND_PERSISTENT: Final = 1
KIND_TRANSIENT: Final = 2
READ_AHEAD_RECORDS: Final = 256  # messages read back from the log per batch

Durability = tuple[MessageLog, int]  # "durable once this log's durable_offset passes this"


class Refused:
    """What enqueue returns for a message the queue would not take (x-overflow
    reject-publish): a confirming publisher hears basic.nack."""


REFUSED: Final = Refused()
# Entries marked gone in memory before the queue rebuilds its run without them.
GONE_COMPACT_MIN: Final = 64

# Where a QueueEntry is.
READY: Final = 0
OUT: Final = 1  # delivered, unacked (or settled)
GONE: Final = 2  # removed while ready (expired): skipped where it lies

# (queue, message, reason, now_ms) -> what the dead-lettered copies wait on to be durable
DeadLetter = Callable[["Queue", Message, str, int], list[Durability]]


def queue_key(vhost: str, name: str) -> str:
    """A queue's name in the store: its log is kept under it."""
    return f"{vhost}\x00{name}"


class QueueEntry:
    """One message in one queue; also the record of its delivery while unacked."""

    __slots__ = (
        "consumer",
        "delivered_at_ms",  # set only for consumers with a timeout
        "delivery_count",
        "expires_at_ms",
        "message",
        "offset",
        "queue",
        "state",
        "stored",
    )

    delivered_at_ms: int  # set only when delivered to a consumer with a timeout

    def __init__(
        self,
        offset: int,
        message: Message,
        queue: Queue,
        stored: bool = False,
        expires_at_ms: int | None = None,
    ) -> None:
        self.offset = offset
        self.message = message
        self.queue = queue
        self.stored = stored  # in the queue's log: acks must reach the log
        self.delivery_count = 0
        self.consumer: Consumer | None = None  # who holds it unacked (None: basic.get)
        self.expires_at_ms = expires_at_ms
        self.state = READY

    def __lt__(self, other: QueueEntry) -> bool:
        return self.offset < other.offset


class Queue(Destination):
    __slots__ = (
        "_cache",
        "_cache_bytes",
        "_deadlines",
        "_disk_from",
        "_dispatching",
        "_gone_count",
        "_limited",
        "_log",
        "_memory",
        "_ready_bytes",
        "_ready_count",
        "_returned",
        "_round_robin",
        "_round_robin_by_priority",
        "_storage",
        "_tail",
        "_timer_at_ms",
        "_timers",
        "_ttl_ms",
        "ack_when_durable",
        "arguments",
        "auto_delete",
        "consumers",
        "dead_letter",
        "deleted",
        "delivered_below",
        "durable",
        "exclusive_consumer",
        "exclusive_owner",
        "had_consumers",
        "last_used_ms",
        "name",
        "on_unused",
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
        log: MessageLog | None = None,
        timers: Timers | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: FieldTable = arguments or {}
        self.settings = settings = QueueSettings.from_arguments(self.arguments)
        self._ttl_ms = settings.message_ttl_ms
        self._limited = settings.limited
        self._timers = timers if timers is not None else Timers()
        self._timer_at_ms: int | None = None  # the earliest wake-up asked of the timers
        # (deadline, offset, entry or None while only on disk) for messages whose own
        # expiration comes before the queue's TTL would expire them.
        # The third field keeps tuples comparable: (…, 0, None) sorts before (…, 1, entry).
        self._deadlines: list[tuple[int, int, int, QueueEntry | None]] = []
        self._gone_count = 0  # entries in _cache marked GONE
        self._ready_bytes = 0  # body bytes of ready messages (kept with a length limit)
        self.last_used_ms = self._timers.clock_ms()  # for x-expires
        self._memory = memory or MemoryBudget(1 << 62, 1 << 62)
        self._storage = storage
        self._log = log
        self._cache: deque[QueueEntry] = deque()  # ready, in memory, from the head
        self._cache_bytes = 0
        self._returned: list[QueueEntry] = []  # heap of requeued entries, by offset
        if log is None:
            self._tail = self._disk_from = 0
            self._ready_count = 0
            self.delivered_below = 0
        else:  # a recovered (or new) durable log: everything ready is on disk
            self._tail = log.next_offset
            self._disk_from = log.acked_below
            self._ready_count = log.live_count
            self.delivered_below = log.delivered_below
        self.unacked_count = 0
        self.consumers: list[Consumer] = []
        self.exclusive_consumer: Consumer | None = None
        self.had_consumers = False
        self.deleted = False
        self._round_robin = 0
        self._round_robin_by_priority: dict[int, int] | None = None  # set while priorities differ
        self._dispatching = False
        # Called when the last consumer of an auto-delete queue leaves, or x-expires passes.
        self.on_unused: Callable[[Queue], None] | None = None
        self.dead_letter: DeadLetter | None = None  # set by the vhost
        # Set by the vhost: ack `offset` of `log` once every wait is durable.
        self.ack_when_durable: Callable[[MessageLog, int, list[Durability]], None] | None = None
        if settings.expires_ms is not None:
            self._wake_at(self.last_used_ms + settings.expires_ms)
        if self._ttl_ms is not None and self._ready_count:
            # Recovered messages: find the head's deadline (from its record's time).
            self._wake_at(self.last_used_ms)

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
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def memory_bytes(self) -> int:
        return self._cache_bytes

    @property
    def log(self) -> MessageLog | None:
        return self._log

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
        offset = self._tail
        self._tail = offset + 1
        log = self._log
        # Durable only where a durable log backs the queue (a broker without storage, as in
        # unit tests, keeps everything in memory).
        persistent = self.durable and log is not None and message.persistent
        in_order = self._disk_from == offset  # nothing ready waits on disk before it
        if (
            in_order
            and self.consumers
            and not self._cache
            and not self._returned
            and (consumer := self._next_consumer()) is not None
        ):
            # Straight to a waiting consumer: the common case of a keeping-up queue.
            self._disk_from = offset + 1
            if consumer.no_ack:
                # Consumed before it could matter: nothing to write, nothing to wait for.
                consumer.channel.deliver_fresh(consumer, message)
                return None
            entry = QueueEntry(offset, message, self, False, expires_at_ms)
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
            in_order
            and self._cache_bytes + size <= memory.queue_bytes_max
            and memory.total_bytes + size <= memory.total_bytes_max
        ):  # the MemoryBudget rule
            memory.total_bytes += size
            entry = QueueEntry(offset, message, self, False, expires_at_ms)
            if persistent and log is not None:
                log.append(KIND_PERSISTENT, now_ms, message.stored_form(), offset)
                entry.stored = True
            self._cache.append(entry)
            self._cache_bytes += size
            self._disk_from = offset + 1
            if expires_at_ms is not None:
                self._track_deadline(expires_at_ms, offset, entry, now_ms)
        else:
            # No room in memory (or older messages already wait on disk): to the log only.
            if log is None:
                log = self._open_paging_log()
            log.append(
                KIND_PERSISTENT if persistent else KIND_TRANSIENT,
                now_ms,
                message.stored_form(),
                offset,
            )
            if expires_at_ms is not None:
                self._track_deadline(expires_at_ms, offset, None, now_ms)
        if self._limited:
            self._ready_bytes += message.body_size
            if not self.settings.rejects_publish:
                self._drop_head_over_limit(now_ms)
        return (log, offset) if persistent and log is not None else None

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

    def _track_deadline(
        self, expires_at_ms: int, offset: int, entry: QueueEntry | None, now_ms: int
    ) -> None:
        """Queue-TTL deadlines grow with the offset, so the head finds them; a message's
        own earlier deadline needs its place in the heap."""
        ttl_ms = self._ttl_ms
        if ttl_ms is None or expires_at_ms < now_ms + ttl_ms:
            heapq.heappush(self._deadlines, (expires_at_ms, offset, entry is not None, entry))
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
        entry.state = OUT
        waits = self._dead_letter_message(entry.message, reason, now_ms)
        if entry.stored:
            self._ack_after(entry.offset, waits)

    def _dead_letter_message(self, message: Message, reason: str, now_ms: int) -> list[Durability]:
        if self.dead_letter is None or self.settings.dead_letter_exchange is None:
            return []
        return self.dead_letter(self, message, reason, now_ms)

    def _ack_after(self, offset: int, waits: list[Durability]) -> None:
        log = self._log
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

    def expire(self, now_ms: int) -> None:
        """Dead-letter every ready message whose deadline has passed, wherever it is."""
        if self._ttl_ms is not None:
            while self._ready_count:
                entry = self._peek()
                if entry is None or entry.expires_at_ms is None or entry.expires_at_ms > now_ms:
                    break
                self._pop(expiring=False)
                self._leave(entry, REASON_EXPIRED, now_ms)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now_ms:
            _, offset, _, held = heapq.heappop(deadlines)
            if held is None:
                self._expire_on_disk(offset, now_ms)
            elif held.state == READY and held.queue is self:
                self._expire_in_place(held, now_ms)
        self._compact()
        head = self._peek() if self._ttl_ms is not None and self._ready_count else None
        if head is not None and head.expires_at_ms is not None:
            self._wake_at(head.expires_at_ms)
        if deadlines:
            self._wake_at(deadlines[0][0])
        self.dispatch()

    def _expire_in_place(self, entry: QueueEntry, now_ms: int) -> None:
        entry.state = GONE
        self._ready_count -= 1
        if self._limited:
            self._ready_bytes -= entry.message.body_size
        if entry.offset >= self._cache_start_offset():
            size = entry.message.memory_bytes
            self._cache_bytes -= size
            self._memory.total_bytes -= size
            self._gone_count += 1
        self._leave(entry, REASON_EXPIRED, now_ms)

    def _cache_start_offset(self) -> int:
        cache = self._cache
        return cache[0].offset if cache else self._disk_from

    def _expire_on_disk(self, offset: int, now_ms: int) -> None:
        """A message with its own deadline that was never read back: read it now."""
        log = self._log
        if log is None or offset < self._disk_from or log.is_acked(offset):
            return  # read back since (its entry has its own place in the heap) or gone
        records = log.read(offset, 1)
        if not records or records[0].offset != offset:
            return
        message = Message.from_stored(records[0].payload)
        self._ready_count -= 1
        if self._limited:
            self._ready_bytes -= message.body_size
        self._ack_after(offset, self._dead_letter_message(message, REASON_EXPIRED, now_ms))

    def _compact(self) -> None:
        """Drop gone entries from the ends of the in-memory run, and rebuild it when they
        are most of it (expired messages must not pin memory)."""
        cache = self._cache
        while cache and cache[0].state == GONE:
            cache.popleft()
            self._gone_count -= 1
        returned = self._returned
        while returned and returned[0].state == GONE:
            heapq.heappop(returned)
        if self._gone_count > GONE_COMPACT_MIN and self._gone_count * 2 > len(cache):
            self._cache = deque(entry for entry in cache if entry.state != GONE)
            self._gone_count = 0

    def _open_paging_log(self) -> MessageLog:
        if self._storage is None:
            raise RuntimeError(f"{self!r} has no storage to page messages out to")
        self._log = self._storage.create_log(self.key, durable=False)
        return self._log

    def _read_ahead(self) -> None:
        """Bring the next batch of disk-only messages into memory."""
        log = self._log
        assert log is not None
        records = log.read(self._disk_from, READ_AHEAD_RECORDS)
        delivered_below = self.delivered_below
        cache = self._cache
        added = 0
        message: Message | None = None
        from_stored = Message.from_stored
        timed = self._ttl_ms is not None
        for record in records:
            offset = record.offset
            message = from_stored(record.payload, message)
            entry = QueueEntry(offset, message, self, True)
            if offset < delivered_below:
                entry.delivery_count = 1  # delivered before a restart: redelivered now
            if timed or message.flags & FLAG_EXPIRATION:
                # The record's time is when it was enqueued: the deadline survives restarts.
                expires_at_ms = entry.expires_at_ms = self._deadline(message, record.timestamp_ms)
                if expires_at_ms is not None:
                    self._track_deadline(expires_at_ms, offset, entry, record.timestamp_ms)
            cache.append(entry)
            added += message.memory_bytes
        # Read-ahead is bounded by READ_AHEAD_RECORDS, not by the budget, which it only
        # reports to: consumers need the next batch whatever else is held.
        self._cache_bytes += added
        self._memory.take(added)
        if len(records) < READ_AHEAD_RECORDS:
            self._disk_from = self._tail
        else:
            self._disk_from = records[-1].offset + 1

    def _peek(self) -> QueueEntry | None:
        """The lowest ready entry, left in place."""
        returned = self._returned
        cache = self._cache
        while True:
            if not cache and self._disk_from < self._tail:
                self._read_ahead()
            if cache and cache[0].state == GONE:
                cache.popleft()
                self._gone_count -= 1
                continue
            if returned and returned[0].state == GONE:
                heapq.heappop(returned)
                continue
            if returned and (not cache or returned[0].offset < cache[0].offset):
                return returned[0]
            return cache[0] if cache else None

    def _pop(self, expiring: bool = True) -> QueueEntry | None:
        """Take the lowest ready entry. Expired ones met on the way are dead-lettered
        (unless `expiring` is False: the caller deals with expiry).

        The walk is _peek's, inlined: every message passes here, and peeking first cost
        a sixth of this method's time."""
        returned = self._returned
        cache = self._cache
        while True:
            if not cache and self._disk_from < self._tail:
                self._read_ahead()
            if returned and (not cache or returned[0].offset < cache[0].offset):
                entry = heapq.heappop(returned)
                if entry.state == GONE:
                    continue
            elif cache:
                entry = cache.popleft()
                if entry.state == GONE:
                    self._gone_count -= 1
                    continue
                size = entry.message.memory_bytes
                self._cache_bytes -= size
                self._memory.total_bytes -= size
            else:
                return None
            self._ready_count -= 1
            entry.state = OUT
            if self._limited:
                self._ready_bytes -= entry.message.body_size
            expires_at_ms = entry.expires_at_ms
            if expires_at_ms is not None and expiring:
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

    def requeue(self, entry: QueueEntry) -> None:
        """Put an unacked entry back at its original position (it counts as redelivered);
        past x-delivery-limit returns it is dead-lettered instead."""
        if self._returned_to_deleted(entry):
            return
        limit = self.settings.delivery_limit
        if limit is not None and entry.delivery_count > limit:
            self._leave(entry, REASON_DELIVERY_LIMIT, self._timers.clock_ms())
            return
        entry.state = READY
        heapq.heappush(self._returned, entry)
        self._ready_count += 1
        if self._limited:
            self._ready_bytes += entry.message.body_size
        expires_at_ms = entry.expires_at_ms
        if expires_at_ms is not None:
            # It keeps its deadline; the heap may have dropped it while it was out.
            heapq.heappush(self._deadlines, (expires_at_ms, entry.offset, True, entry))
            self._wake_at(expires_at_ms)

    def settle(self, entry: QueueEntry) -> None:
        """An unacked entry is done with (acked)."""
        self.unacked_count -= 1
        entry.consumer = None
        if entry.stored:
            self._log_ack(entry.offset)

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
            self._log_ack(entry.offset)
        return self.deleted

    def _forget(self, entry: QueueEntry) -> None:
        """A ready entry leaves without being held (no-ack delivery, get without ack)."""
        if entry.stored:
            self._log_ack(entry.offset)

    def _log_ack(self, offset: int) -> None:
        log = self._log
        if log is not None and not self.deleted:
            log.ack(offset)

    def note_delivered(self, entry: QueueEntry) -> None:
        """Remember that a stored entry went out, so a restart flags it redelivered."""
        if entry.stored and self._log is not None:
            self._log.note_delivered(entry.offset)

    def purge(self) -> int:
        """Drop every ready message; unacked ones stay with their channels."""
        count = self._ready_count
        for entry in self._cache:
            if entry.stored and entry.state == READY:
                self._log_ack(entry.offset)
            entry.state = GONE
        for entry in self._returned:
            if entry.stored and entry.state == READY:
                self._log_ack(entry.offset)
            entry.state = GONE
        if self._log is not None and self._disk_from < self._tail and not self.deleted:
            self._log.ack_range(self._disk_from, self._tail)
        self._memory.release(self._cache_bytes)
        self._cache.clear()
        self._cache_bytes = 0
        self._returned.clear()
        self._disk_from = self._tail
        self._ready_count = 0
        self._ready_bytes = 0
        self._gone_count = 0
        self._deadlines.clear()
        return count

    def storage_lost(self, start: int, end: int) -> None:
        """Records [start, end) never reached the log (a failed write): what was only on
        disk is gone, what is in memory stays deliverable but no longer durable."""
        for entry in self._cache:
            if start <= entry.offset < end:
                entry.stored = False
        for entry in self._returned:
            if start <= entry.offset < end:
                entry.stored = False
        lost_on_disk = max(0, min(end, self._tail) - max(start, self._disk_from))
        self._ready_count -= lost_on_disk

    def close_storage(self) -> None:
        """The queue is deleted: its log goes with it."""
        self._memory.release(self._cache_bytes)
        self._cache_bytes = 0
        if self._log is not None and self._storage is not None:
            self._storage.delete_log(self.key)
        self._log = None

    # ------------------------------------------------------------ consumers

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

    def _next_consumer_by_priority(self) -> Consumer | None:
        """Round-robin within the highest priority that has a consumer with credit."""
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
                if consumer.channel.can_deliver(consumer):
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
