"""A lane of a queue: the ready messages of one priority level in offset order, and the
log partition behind them; and QueueEntry, one message's place in a lane.

A queue has one lane, or one per priority level with x-max-priority. Each lane has its
own offsets (its own partition of the queue's log). Its ready messages are, in offset
order:
- a run held in memory from the head (`cache`), bounded by the memory budget;
- then, from `disk_from` to `tail`, messages that are only in the log (a deep backlog),
  read back in batches as consumers reach them;
- and a small heap of requeued entries (`returned`), which take their original places:
  the next message out of a lane is always its lowest ready offset.
A filtered consumer (filters.py) may take a message from the middle: in memory it is
marked GONE where it lies; only on disk, its offset goes to `lifted` until it is acked,
and read-ahead skips it.
The lane keeps no counts of its own beyond memory: the queue counts ready messages and
decides what happens to them (expiry, limits, dead-lettering).

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final

from amqpd.broker.memory import MemoryBudget
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog, StoredRecord
from amqpd.codec.properties import FLAG_EXPIRATION

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer
    from amqpd.broker.queue import Queue

READ_AHEAD_RECORDS: Final = 256  # messages read back from the log per batch
# Entries marked gone in memory before the lane rebuilds its run without them.
GONE_COMPACT_MIN: Final = 64

# Where a QueueEntry is.
READY: Final = 0
OUT: Final = 1  # delivered, unacked (or settled)
GONE: Final = 2  # removed while ready (expired): skipped where it lies
WAITING: Final = 3  # returned, waiting out a retry delay before it is ready again


class QueueEntry:
    """One message in one queue; also the record of its delivery while unacked."""

    __slots__ = (
        "consumer",
        "delivered_at_ms",  # set only for consumers with a timeout
        "delivery_count",
        "expires_at_ms",
        "lane",
        "message",
        "offset",
        "queue",
        "state",
        "stored",
    )

    delivered_at_ms: int  # set only when delivered to a consumer with a timeout
    # A delivery read from a log without removing it (a stream's, a replay's): settling it
    # returns credit and nothing else.
    replayed: ClassVar[bool] = False

    def __init__(
        self,
        offset: int,
        message: Message,
        lane: Lane,
        stored: bool = False,
        expires_at_ms: int | None = None,
    ) -> None:
        self.offset = offset  # in its lane
        self.message = message
        self.lane = lane
        self.queue = lane.queue
        self.stored = stored  # in the lane's log: acks must reach the log
        self.delivery_count = 0
        self.consumer: Consumer | None = None  # who holds it unacked (None: basic.get)
        self.expires_at_ms = expires_at_ms
        self.state = READY

    def __lt__(self, other: QueueEntry) -> bool:
        return self.offset < other.offset


class Lane:
    __slots__ = (
        "cache",
        "cache_bytes",
        "delivered_below",
        "disk_from",
        "gone_count",
        "index",
        "lifted",
        "log",
        "memory",
        "queue",
        "returned",
        "tail",
    )

    def __init__(
        self, queue: Queue, index: int, log: MessageLog | None, memory: MemoryBudget
    ) -> None:
        self.queue = queue
        self.index = index  # the priority level
        self.memory = memory
        self.log = log
        self.cache: deque[QueueEntry] = deque()  # ready, in memory, from the head
        self.cache_bytes = 0
        self.returned: list[QueueEntry] = []  # heap of requeued entries, by offset
        self.gone_count = 0  # entries in cache marked GONE
        # Offsets at or past disk_from that a filtered consumer took straight from the log
        # (filters.py), not yet acked: read-ahead must not bring them in again.
        self.lifted: set[int] = set()
        if log is None:
            self.tail = self.disk_from = self.delivered_below = 0
        else:  # a recovered (or new) durable log: everything ready is on disk
            self.tail = log.next_offset
            self.disk_from = log.acked_below
            self.delivered_below = log.delivered_below

    def peek(self) -> QueueEntry | None:
        """The lowest ready entry, left in place."""
        returned = self.returned
        cache = self.cache
        while True:
            if not cache and self.disk_from < self.tail:
                self.read_ahead()
            if cache and cache[0].state == GONE:
                cache.popleft()
                self.gone_count -= 1
                continue
            if returned and returned[0].state == GONE:
                heapq.heappop(returned)
                continue
            if returned and (not cache or returned[0].offset < cache[0].offset):
                return returned[0]
            return cache[0] if cache else None

    def pop(self) -> QueueEntry | None:
        """Take the lowest ready entry out of the lane (the queue does the counting).

        The walk is peek's, inlined: every message passes here."""
        returned = self.returned
        cache = self.cache
        while True:
            if not cache and self.disk_from < self.tail:
                self.read_ahead()
            if returned and (not cache or returned[0].offset < cache[0].offset):
                entry = heapq.heappop(returned)
                if entry.state == GONE:
                    continue
                return entry
            if cache:
                entry = cache.popleft()
                if entry.state == GONE:
                    self.gone_count -= 1
                    continue
                size = entry.message.memory_bytes
                self.cache_bytes -= size
                self.memory.total_bytes -= size
                return entry
            return None

    def read_ahead(self) -> None:
        """Bring the next batch of disk-only messages into memory."""
        log = self.log
        assert log is not None
        records = log.read(self.disk_from, READ_AHEAD_RECORDS)
        if self.lifted:
            records = self._without_lifted(records)
        delivered_below = self.delivered_below
        cache = self.cache
        queue = self.queue
        added = 0
        message: Message | None = None
        from_stored = Message.from_stored
        timed = queue.settings.message_ttl_ms is not None
        for record in records:
            offset = record.offset
            message = from_stored(record.payload, message)
            entry = QueueEntry(offset, message, self, True)
            if offset < delivered_below:
                # Delivered before a restart: redelivered now, counted where a delivery
                # limit kept count (the restart counts as a return: past the limit, it is
                # dead-lettered instead).
                entry.delivery_count = log.counter(offset) or 1
                if queue.past_delivery_limit(entry):
                    continue
            if timed or message.flags & FLAG_EXPIRATION:
                # The record's time is when it was enqueued: the deadline survives restarts.
                queue.read_back_deadline(entry, record.timestamp_ms)
            cache.append(entry)
            added += message.memory_bytes
        # Read-ahead is bounded by READ_AHEAD_RECORDS, not by the budget, which it only
        # reports to: consumers need the next batch whatever else is held.
        self.cache_bytes += added
        self.memory.take(added)
        # A read stops at READ_AHEAD_RECORDS or at the log's byte bound per read (large
        # messages: a few records), so only an empty read means nothing live is left.
        self.disk_from = records[-1].offset + 1 if records else self.tail

    def _without_lifted(self, records: Sequence[StoredRecord]) -> Sequence[StoredRecord]:
        """The records a filtered consumer did not take already; reads on while a whole
        batch was taken (an empty batch would let the requeued heap go first)."""
        log = self.log
        assert log is not None
        lifted = self.lifted
        while True:
            kept = [record for record in records if record.offset not in lifted]
            if kept or not records:
                break
            records = log.read(records[-1].offset + 1, READ_AHEAD_RECORDS)
        below = kept[-1].offset if kept else self.tail
        self.lifted = {offset for offset in lifted if offset > below}  # passed: forgotten
        return kept

    def holds_in_cache(self, entry: QueueEntry) -> bool:
        """Whether a ready entry is in the in-memory run (not the requeued heap)."""
        cache = self.cache
        if entry.offset < (cache[0].offset if cache else self.disk_from):
            return False
        # A message a filtered consumer took from the middle comes back (requeued) to the
        # heap at an offset at or past the head.
        return not self.returned or entry not in self.returned

    def compact(self) -> None:
        """Drop gone entries from the ends of the in-memory run, and rebuild it when they
        are most of it (expired messages must not pin memory)."""
        cache = self.cache
        while cache and cache[0].state == GONE:
            cache.popleft()
            self.gone_count -= 1
        returned = self.returned
        while returned and returned[0].state == GONE:
            heapq.heappop(returned)
        if self.gone_count > GONE_COMPACT_MIN and self.gone_count * 2 > len(cache):
            self.cache = deque(entry for entry in cache if entry.state != GONE)
            self.gone_count = 0

    def ack(self, offset: int) -> None:
        if self.log is not None and not self.queue.deleted:
            self.log.ack(offset)
        if self.lifted:
            self.lifted.discard(offset)  # the log's reads skip it now

    def purge(self) -> None:
        """Drop every ready message (the queue resets its counts)."""
        for entries in (self.cache, self.returned):
            for entry in entries:
                if entry.stored and entry.state == READY:
                    self.ack(entry.offset)
                entry.state = GONE
        if self.log is not None and self.disk_from < self.tail and not self.queue.deleted:
            start = self.disk_from
            # Messages filtered consumers took from the log are theirs (unacked): not acked.
            for offset in sorted(self.lifted):
                if offset >= start:
                    self.log.ack_range(start, offset)
                    start = offset + 1
            self.log.ack_range(start, self.tail)
        self.lifted.clear()
        self.release_memory()
        self.cache.clear()
        self.returned.clear()
        self.disk_from = self.tail
        self.gone_count = 0

    def release_memory(self) -> None:
        self.memory.release(self.cache_bytes)
        self.cache_bytes = 0

    def storage_lost(self, start: int, end: int) -> int:
        """Records [start, end) never reached the log: entries in memory stay deliverable
        but no longer durable. Returns how many ready messages were only on disk (lost)."""
        for entries in (self.cache, self.returned):
            for entry in entries:
                if start <= entry.offset < end:
                    entry.stored = False
        start, end = max(start, self.disk_from), min(end, self.tail)
        taken = sum(1 for offset in self.lifted if start <= offset < end)  # not only on disk
        return max(0, end - start - taken)
