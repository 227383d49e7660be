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
(`x-priority`) the highest priority that has credit goes first.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Final

from amqpd.broker.binding import Destination
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog, QueueStorage
from amqpd.codec.fields import FieldTable

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer

# Record kinds in a queue's log. Transient records are dropped when a log is recovered.
KIND_PERSISTENT: Final = 1
KIND_TRANSIENT: Final = 2
READ_AHEAD_RECORDS: Final = 256  # messages read back from the log per batch

Durability = tuple[MessageLog, int]  # "durable once this log's durable_offset passes this"


def queue_key(vhost: str, name: str) -> str:
    """A queue's name in the store: its log is kept under it."""
    return f"{vhost}\x00{name}"


class QueueEntry:
    """One message in one queue; also the record of its delivery while unacked."""

    __slots__ = ("consumer", "delivery_count", "message", "offset", "queue", "stored")

    def __init__(self, offset: int, message: Message, queue: Queue, stored: bool = False) -> None:
        self.offset = offset
        self.message = message
        self.queue = queue
        self.stored = stored  # in the queue's log: acks must reach the log
        self.delivery_count = 0
        self.consumer: Consumer | None = None  # who holds it unacked (None: basic.get)

    def __lt__(self, other: QueueEntry) -> bool:
        return self.offset < other.offset


class Queue(Destination):
    __slots__ = (
        "_cache",
        "_cache_bytes",
        "_disk_from",
        "_dispatching",
        "_log",
        "_memory",
        "_ready_count",
        "_returned",
        "_round_robin",
        "_round_robin_by_priority",
        "_storage",
        "_tail",
        "arguments",
        "auto_delete",
        "consumers",
        "deleted",
        "delivered_below",
        "durable",
        "exclusive_consumer",
        "exclusive_owner",
        "had_consumers",
        "name",
        "on_unused",
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
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: FieldTable = arguments or {}
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
        # Called when the last consumer of an auto-delete queue leaves.
        self.on_unused: Callable[[Queue], None] | None = None

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

    def enqueue(self, message: Message, now_ms: int) -> Durability | None:
        """Take a message; return what must become durable before it may be confirmed."""
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
            entry = QueueEntry(offset, message, self)
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
            entry = QueueEntry(offset, message, self)
            if persistent and log is not None:
                log.append(KIND_PERSISTENT, now_ms, message.stored_form(), offset)
                entry.stored = True
            self._cache.append(entry)
            self._cache_bytes += size
            self._disk_from = offset + 1
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
        return (log, offset) if persistent and log is not None else None

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
        for record in records:
            offset = record.offset
            message = from_stored(record.payload, message)
            entry = QueueEntry(offset, message, self, True)
            if offset < delivered_below:
                entry.delivery_count = 1  # delivered before a restart: redelivered now
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

    def _pop(self) -> QueueEntry | None:
        returned = self._returned
        cache = self._cache
        if not cache and self._disk_from < self._tail:
            self._read_ahead()
        if returned and (not cache or returned[0].offset < cache[0].offset):
            entry = heapq.heappop(returned)
        elif cache:
            entry = cache.popleft()
            size = entry.message.memory_bytes
            self._cache_bytes -= size
            self._memory.total_bytes -= size
        else:
            return None
        self._ready_count -= 1
        return entry

    def get(self, no_ack: bool) -> QueueEntry | None:
        """Take the next ready message for basic.get."""
        entry = self._pop()
        if entry is not None:
            if no_ack:
                self._forget(entry)
            else:
                self.unacked_count += 1
        return entry

    def requeue(self, entry: QueueEntry) -> None:
        """Put an unacked entry back at its original position (it counts as redelivered)."""
        self.unacked_count -= 1
        entry.consumer = None
        if not self.deleted:
            heapq.heappush(self._returned, entry)
            self._ready_count += 1
        elif entry.stored:
            self._log_ack(entry.offset)

    def settle(self, entry: QueueEntry) -> None:
        """An unacked entry is done with (acked, or rejected without requeue)."""
        self.unacked_count -= 1
        entry.consumer = None
        if entry.stored:
            self._log_ack(entry.offset)

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
            if entry.stored:
                self._log_ack(entry.offset)
        for entry in self._returned:
            if entry.stored:
                self._log_ack(entry.offset)
        if self._log is not None and self._disk_from < self._tail and not self.deleted:
            self._log.ack_range(self._disk_from, self._tail)
        self._memory.release(self._cache_bytes)
        self._cache.clear()
        self._cache_bytes = 0
        self._returned.clear()
        self._disk_from = self._tail
        self._ready_count = 0
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
        """Add a consumer, after those of higher or equal priority."""
        consumers = self.consumers
        index = len(consumers)
        while index and consumers[index - 1].priority < consumer.priority:
            index -= 1
        consumers.insert(index, consumer)
        self.had_consumers = True
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        self._note_priorities()

    def _note_priorities(self) -> None:
        consumers = self.consumers
        mixed = bool(consumers) and consumers[0].priority != consumers[-1].priority
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
        if count == 1:
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
