"""Tag filtering for consumers of classic queues: `x-stream-filter` and
`x-stream-match-unfiltered` (RabbitMQ 3.13's names for stream filtering).

A message's tag is its `x-stream-filter-value` header (a string). A consumer with a filter
(one value or an array of them) receives only messages whose tag is one of its values, and
untagged ones too when `x-stream-match-unfiltered` is true. Consumers without a filter take
the head of the queue as before. A message no current consumer wants stays ready (and
counted) until one comes that wants it, or it leaves by TTL, a length limit or a purge.

Who gets what: consumers take turns as they do without filters (round-robin, the highest
`x-priority` with credit first); a filtered consumer whose turn comes takes the lowest
ready message it matches (highest priority level first), and a consumer with no match
makes way for the next one. With a single active consumer only the active one receives:
if it is filtered, messages it does not match wait (they are not handed to the consumers
in line behind it) until it leaves or they leave.

Cost: a queue with no filtered consumer never enters this module (Queue.enqueue's direct
hand-over and Queue.dispatch's loop stay as they were). With one, Queue.dispatch hands
over to QueueFilters.dispatch, which keeps for each filtered consumer and lane a scan
position (every ready message of the lane's run below it is known not to match) and
whether it has looked at the lane's requeued entries since the last one came back, so no
dispatch looks at a message twice for the same consumer. Tags are read lazily: only when
the message has headers and its header bytes contain the key, and from a log record
without decoding it first. Each dispatch call looks at SCAN_ENTRIES_MAX entries at most;
past that it asks the timers to wake it at once and goes on from where it stopped, so the
event loop is never held for long by a deep backlog that matches nothing.

Taking a message from the middle of a lane: an entry in memory is marked GONE where it
lies (as expiry in place does; the lane drops it later) and a fresh entry carries the
delivery; a message only on disk is read and delivered, and its offset noted in
`Lane.lifted` so that the lane's read-ahead skips it until the consumer acks it. The
queue's counts, byte totals and deadlines follow as for any other taking. A delivery out
of order does not raise the log's "delivered" watermark (which would flag every skipped
message as redelivered after a restart): such a message, unacked at a crash, comes back
without the redelivered flag.

Synchronous and pure; imports broker.* and amqpd.codec only.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import islice
from operator import attrgetter
from typing import TYPE_CHECKING, Final

import attrs

from amqpd.broker.dead_letter import REASON_EXPIRED
from amqpd.broker.lane import (
    GONE,
    GONE_COMPACT_MIN,
    OUT,
    READ_AHEAD_RECORDS,
    READY,
    Lane,
    QueueEntry,
)
from amqpd.broker.message import Message
from amqpd.broker.readers import FILTER_KEY_BYTES, filter_value
from amqpd.codec.fields import FieldTable
from amqpd.codec.properties import (
    FLAG_EXPIRATION,
    FLAG_HEADERS,
    BasicProperties,
    encode_content_header,
)

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer
    from amqpd.broker.ports import StoredRecord
    from amqpd.broker.queue import Queue

FILTER_ARGUMENT: Final = "x-stream-filter"
MATCH_UNFILTERED_ARGUMENT: Final = "x-stream-match-unfiltered"
# Entries and log records looked at per dispatch call, for all filtered consumers of a
# queue together (about a millisecond of work); the rest waits for the next wake-up.
SCAN_ENTRIES_MAX: Final = 4096

_offset_of = attrgetter("offset")
# What an entry taken from the middle of a lane keeps while it waits to be dropped: its
# message went with the delivery and must not be pinned by the husk.
_HUSK_MESSAGE: Final = Message("", "", encode_content_header(0, BasicProperties()), b"")


@attrs.frozen
class ConsumerFilter:
    """What one filtered consumer accepts."""

    values: frozenset[str]
    match_unfiltered: bool = False

    @classmethod
    def from_arguments(cls, arguments: FieldTable) -> ConsumerFilter | None:
        """The filter of a consumer's (validated) arguments; None: it takes everything."""
        value = arguments.get(FILTER_ARGUMENT)
        if isinstance(value, str):
            values = frozenset((value,))
        elif isinstance(value, list):
            values = frozenset(item for item in value if isinstance(item, str))
        else:
            return None
        return cls(values, arguments.get(MATCH_UNFILTERED_ARGUMENT) is True)

    def accepts(self, tag: str | None) -> bool:
        return self.match_unfiltered if tag is None else tag in self.values

    def accepts_message(self, message: Message) -> bool:
        return self.accepts(message_tag(message))

    def accepts_record(self, payload: bytes) -> tuple[bool, Message | None]:
        """Whether a log record's message is accepted, and the message if it had to be
        decoded to know."""
        if not Message.stored_flags(payload) & FLAG_HEADERS or FILTER_KEY_BYTES not in payload:
            return self.match_unfiltered, None
        message = Message.from_stored(payload)
        return self.accepts(message_tag(message)), message


def message_tag(message: Message) -> str | None:
    """The message's `x-stream-filter-value` (None: untagged, or not a string)."""
    tag = filter_value(message)
    return tag if isinstance(tag, str) else None


class ConsumerScan:
    """Where one filtered consumer's search stands, per lane of its queue."""

    __slots__ = ("filter", "positions", "returns_seen")

    def __init__(self, consumer_filter: ConsumerFilter, lanes: int) -> None:
        self.filter = consumer_filter
        # Lowest offset of the lane's run (memory, then disk) not yet looked at.
        self.positions = [0] * lanes
        # QueueFilters.returns of the lane when its requeued entries were last looked at
        # and none matched (-1: never).
        self.returns_seen = [-1] * lanes


class QueueFilters:
    """The filtered consumers of one queue, and the dispatch that serves them."""

    __slots__ = ("_budget", "_cut_short", "_resume_asked", "queue", "returns", "scans")

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.scans: dict[Consumer, ConsumerScan] = {}
        # Per lane: entries made ready again (requeued, retried) so far.
        self.returns = [0] * len(queue._lanes)
        self._budget = 0
        self._cut_short = False
        self._resume_asked = False

    def add(self, consumer: Consumer, consumer_filter: ConsumerFilter) -> None:
        self.scans[consumer] = ConsumerScan(consumer_filter, len(self.returns))

    def remove(self, consumer: Consumer) -> bool:
        """Forget a consumer; True when no filtered consumer is left."""
        self.scans.pop(consumer, None)
        return not self.scans

    def made_ready(self, entry: QueueEntry) -> None:
        """An entry is ready again (requeued or retried) at its old place, which may lie
        behind a consumer's scan position: each looks at the requeued entries again."""
        self.returns[entry.lane.index] += 1

    def in_order(self, entry: QueueEntry) -> bool:
        """Whether a delivered entry was the lowest ready one of its lane (nothing ready
        is left behind it): only then may the log's delivered watermark pass it."""
        head = entry.lane.peek()
        return head is None or head.offset > entry.offset

    def on_timer(self, now_ms: int) -> None:
        """The wake-up asked when a dispatch stopped at its budget: go on."""
        self._resume_asked = False
        queue = self.queue
        if not queue.deleted and queue._filters is self:
            queue.dispatch()

    # ------------------------------------------------------------- dispatch

    def dispatch(self) -> None:
        """Queue.dispatch with filtered consumers: deliver until no consumer with credit
        has a message it takes (or the scan budget of this call is spent)."""
        queue = self.queue
        scans = self.scans
        self._budget = SCAN_ENTRIES_MAX
        self._cut_short = False
        idle: set[Consumer] = set()  # filtered consumers with no match, this call
        while queue._ready_count:
            consumer = self._next_consumer(idle)
            if consumer is None:
                break
            scan = scans.get(consumer)
            if scan is None:
                entry = queue._pop()
                if entry is None:
                    break
            else:
                entry = self._take_for(scan)
                if entry is None:
                    idle.add(consumer)
                    continue
            queue._hand_over(consumer, entry)
        for lane in queue._lanes:
            if lane.gone_count > GONE_COMPACT_MIN:  # husks left in the middle: drop them
                lane.compact()
        if self._cut_short and not self._resume_asked:
            self._resume_asked = True
            timers = queue._timers
            timers.schedule(timers.clock_ms(), self)

    def _next_consumer(self, idle: set[Consumer]) -> Consumer | None:
        """Queue._next_consumer, passing over the consumers in `idle`."""
        queue = self.queue
        consumers = queue.consumers
        count = len(consumers)
        if not count:
            return None
        if queue.settings.single_active_consumer:
            active = consumers[0]
            return active if active not in idle and active.channel.can_deliver(active) else None
        if queue._round_robin_by_priority is None:
            start = queue._round_robin
            for step in range(count):
                index = (start + step) % count
                consumer = consumers[index]
                if consumer not in idle and consumer.channel.can_deliver(consumer):
                    queue._round_robin = (index + 1) % count
                    return consumer
            return None
        return queue._next_consumer_by_priority(idle)

    def _take_for(self, scan: ConsumerScan) -> QueueEntry | None:
        """Take the lowest ready entry `scan`'s consumer accepts, from the highest lane
        that has one; None if there is none (or the budget ran out before one was found)."""
        queue = self.queue
        lanes = queue._lanes
        for index in range(queue._top, -1, -1):
            while True:
                lane = lanes[index]
                returned = self._lowest_returned(scan, lane)
                found = self._next_in_run(scan, lane, returned)
                if found is None:
                    if returned is None or scan.positions[index] < returned.offset:
                        break  # nothing here (or the budget ran out first)
                    entry: QueueEntry | None = self._take_in_place(returned, in_cache=False)
                elif isinstance(found, QueueEntry):
                    entry = self._take_in_place(found, in_cache=True)
                else:
                    entry = self._lift(lane, *found)
                if entry is not None and not self._expired(entry):
                    return entry
                # It left instead (expired, or past the delivery limit): look again.
            if self._budget <= 0:
                self._cut_short = True
                return None
        return None

    def _lowest_returned(self, scan: ConsumerScan, lane: Lane) -> QueueEntry | None:
        """The lowest requeued entry of the lane the consumer accepts."""
        index = lane.index
        returns = self.returns[index]
        returned = lane.returned
        if not returned or scan.returns_seen[index] == returns:
            return None
        self._budget -= len(returned)  # bounded by what consumers held unacked
        accepts = scan.filter.accepts_message
        best: QueueEntry | None = None
        for entry in returned:
            if (
                entry.state == READY
                and (best is None or entry.offset < best.offset)
                and accepts(entry.message)
            ):
                best = entry
        if best is None:
            scan.returns_seen[index] = returns
        return best

    def _next_in_run(
        self, scan: ConsumerScan, lane: Lane, returned: QueueEntry | None
    ) -> QueueEntry | tuple[StoredRecord, Message | None] | None:
        """The next entry (in memory) or record (only on disk) of the lane's run that the
        consumer accepts, below `returned`'s offset if that is given. Moves the scan
        position past what it looks at; looks at no more than the budget allows."""
        index = lane.index
        position = scan.positions[index]
        stop_at = returned.offset if returned is not None else lane.tail
        consumer_filter = scan.filter
        cache = lane.cache
        if cache and position <= cache[-1].offset:
            start = (
                bisect_left(cache, position, key=_offset_of) if position > cache[0].offset else 0
            )
            for entry in islice(cache, start, None):
                offset = entry.offset
                if offset >= stop_at or self._budget <= 0:
                    scan.positions[index] = offset
                    return None
                self._budget -= 1
                if entry.state == READY and consumer_filter.accepts_message(entry.message):
                    scan.positions[index] = offset + 1
                    return entry
            position = cache[-1].offset + 1
        position = max(position, lane.disk_from)
        log = lane.log
        lifted = lane.lifted
        while log is not None and position < stop_at and self._budget > 0:
            records = log.read(position, min(READ_AHEAD_RECORDS, self._budget))
            if not records:
                position = lane.tail
                break
            for record in records:
                offset = record.offset
                if offset >= stop_at:
                    scan.positions[index] = offset
                    return None
                self._budget -= 1
                position = offset + 1
                if offset in lifted:
                    continue  # already taken by a filtered consumer
                accepted, message = consumer_filter.accepts_record(record.payload)
                if accepted:
                    scan.positions[index] = position
                    return record, message
        scan.positions[index] = min(position, stop_at)
        return None

    def _take_in_place(self, entry: QueueEntry, *, in_cache: bool) -> QueueEntry:
        """Take a ready entry from where it lies (the lane's in-memory run or its
        requeued heap): it stays there as a GONE husk, and a fresh entry is delivered."""
        queue = self.queue
        lane = entry.lane
        if in_cache:
            size = entry.message.memory_bytes
            lane.cache_bytes -= size
            queue._memory.total_bytes -= size
            lane.gone_count += 1
        queue._taken(entry)
        taken = QueueEntry(entry.offset, entry.message, lane, entry.stored, entry.expires_at_ms)
        taken.delivery_count = entry.delivery_count
        taken.state = OUT
        entry.state = GONE
        entry.message = _HUSK_MESSAGE
        return taken

    def _lift(self, lane: Lane, record: StoredRecord, message: Message | None) -> QueueEntry | None:
        """Take a message that is only on disk (as read-ahead would bring it in, then
        take it); None if it left instead (past the delivery limit)."""
        queue = self.queue
        log = lane.log
        assert log is not None
        offset = record.offset
        if message is None:
            message = Message.from_stored(record.payload)
        lane.lifted.add(offset)  # read-ahead skips it from now on
        entry = QueueEntry(offset, message, lane, True)
        if offset < lane.delivered_below:
            entry.delivery_count = log.counter(offset) or 1
            if queue.past_delivery_limit(entry):
                return None
        if queue.settings.message_ttl_ms is not None or message.flags & FLAG_EXPIRATION:
            # The record's time is when it was enqueued, as for read-ahead.
            entry.expires_at_ms = queue._deadline(message, record.timestamp_ms)
        queue._taken(entry)
        return entry

    def _expired(self, entry: QueueEntry) -> bool:
        """A taken entry whose deadline passed leaves (dead-lettered), as in Queue._pop."""
        expires_at_ms = entry.expires_at_ms
        if expires_at_ms is None:
            return False
        queue = self.queue
        now_ms = queue._timers.clock_ms()
        if expires_at_ms > now_ms:
            return False
        queue._leave(entry, REASON_EXPIRED, now_ms)
        return True
