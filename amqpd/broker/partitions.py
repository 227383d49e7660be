"""Partitioned queues (`x-partitions`, amqpd's own): ordered per key, each partition with at
most one active consumer.

A partitioned queue is a classic queue whose ready messages are split into N lanes
(lane.py), one per partition of its log. A message's partition is fixed when it is
enqueued: the CRC-32 of its key's UTF-8 bytes modulo N, the key being its
`x-partition-key` header when it has one (a string; a number or bytes taken as its text),
else its routing key. CRC-32 is the same on every run, so a key lands in the same
partition after a restart (the log keeps each partition's messages apart).

Ownership. `assign` spreads the partitions over the queue's consumers, balanced (the
counts differ by one at most) and sticky (a partition stays with its consumer unless the
balance needs it elsewhere). Consumers are in the queue's order: higher `x-priority`
first, then by registration, and the earlier ones take the extra partitions when the
count does not divide evenly; priority weighs nothing else (a lower-priority consumer
still owns its share). With `x-single-active-consumer` the first consumer owns them all.

Per partition the queue knows its target (the consumer `assign` gives it to) and how
many of its messages are out unacked, and with whom (the holder: a consumer, or nobody
for basic.get and for a message waiting out a retry delay). A partition's messages go
only to its target, and only while nobody else holds any of them: when the assignment
moves a partition (a consumer came or went: cancel, channel or connection close,
consumer timeout), the new owner waits until the old one has settled what it holds. A
message returned meanwhile takes its old place in the partition, so the new owner gets it
first, and the order per key holds across the move. basic.get takes only from a
partition nobody holds anything of. With one partition the queue is one FIFO with a
single active consumer that hands over only once its deliveries are settled.

Everything else is the classic queue's (queue.py): TTL, length limits (counted over all
partitions; drop-head takes the partitions' heads in turn), dead-lettering, delivery
limit, purge, paging and recovery. Dispatch is one message per consumer per round, each
consumer going round its own partitions.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Hashable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, TypeVar

from amqpd.broker.lane import WAITING, QueueEntry
from amqpd.broker.message import Message
from amqpd.broker.queue import REFUSED, Durability, Queue, Refused
from amqpd.codec.properties import FLAG_HEADERS

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer
    from amqpd.broker.lane import Lane

__all__ = ["PARTITION_KEY_HEADER", "PartitionedQueue", "assign", "partition_key", "partition_of"]

PARTITION_KEY_HEADER: Final = "x-partition-key"
# The header's name as a field table encodes it (shortstr): a cheap test on the raw
# content header before the properties are decoded.
_KEY_FIELD: Final = bytes([len(PARTITION_KEY_HEADER)]) + PARTITION_KEY_HEADER.encode()

Owner = TypeVar("Owner", bound=Hashable)


def partition_key(message: Message) -> bytes:
    """The bytes a message's partition is chosen by: its `x-partition-key` header when
    that is a string, bytes or a number, else its routing key."""
    if message.flags & FLAG_HEADERS and _KEY_FIELD in message.header:
        value = message.headers.get(PARTITION_KEY_HEADER)
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bytes):
            return value
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return str(value).encode()
    return message.routing_key.encode()


def partition_of(key: bytes, partition_count: int) -> int:
    """A key's partition: stable across runs and nodes (never Python's hash())."""
    return zlib.crc32(key) % partition_count


def assign(
    partition_count: int, consumers: Sequence[Owner], current: Sequence[Owner | None]
) -> list[Owner | None]:
    """Who owns each partition: balanced over `consumers` (in order, the earlier ones
    taking the extra partitions), keeping each partition with its `current` owner where
    the balance allows. No consumers: nobody owns anything."""
    count = len(consumers)
    if not count:
        return [None] * partition_count
    base, extra = divmod(partition_count, count)
    quota = {consumer: base + (index < extra) for index, consumer in enumerate(consumers)}
    owners: list[Owner | None] = [None] * partition_count
    for partition, owner in enumerate(current[:partition_count]):
        if owner is not None and quota.get(owner, 0) > 0:
            quota[owner] -= 1
            owners[partition] = owner
    free = [consumer for consumer in consumers for _ in range(quota[consumer])]
    free.reverse()  # popped from the end: the earlier consumers first
    for partition, owner in enumerate(owners):
        if owner is None:
            owners[partition] = free.pop()
    return owners


class PartitionedQueue(Queue):
    """A queue declared with `x-partitions`: see the module docstring."""

    __slots__ = (
        "_cursor",
        "_direct",
        "_get_from",
        "_held",
        "_holder",
        "_incoming",
        "_owned",
        "_take_from",
        "_target",
        "_waiting",
        "partition_count",
    )

    def __init__(self, name: str, vhost: str, **options: Any) -> None:
        super().__init__(name, vhost, **options)
        count = self.partition_count = len(self._lanes)
        self._take = self._take_in_turn  # for drop-head; deliveries go by partition
        self._take_from = 0  # the partition drop-head takes from next
        self._get_from = 0  # the partition basic.get looks at first
        self._target: list[Consumer | None] = [None] * count
        self._owned: dict[Consumer, list[int]] = {}  # a consumer's partitions, ascending
        self._cursor: dict[Consumer, int] = {}  # the partition it looks at first, next time
        self._held = [0] * count  # messages of each partition out unacked (or waiting)
        self._holder: list[Consumer | None] = [None] * count  # who holds them
        # Partitions that may have ready messages (a hint: found empty, they leave it).
        self._waiting: set[int] = set(range(count)) if self._ready_count else set()
        self._incoming = 0  # the partition of the message being enqueued
        self._direct = False  # it went straight to a consumer

    # ------------------------------------------------------------- messages

    def enqueue(self, message: Message, now_ms: int) -> Durability | Refused | None:
        count = self.partition_count
        # partition_of, inlined: every message pays it.
        partition = zlib.crc32(partition_key(message)) % count if count > 1 else 0
        self._incoming = partition
        self._direct = False
        outcome = super().enqueue(message, now_ms)
        if outcome is not REFUSED and not self._direct:
            self._waiting.add(partition)
            if self.consumers:
                # Another partition's backlog does not mean this one's owner is busy.
                self.dispatch()
        return outcome

    def _lane_for(self, message: Message) -> Lane:
        return self._lanes[self._incoming]

    def _next_consumer(self) -> Consumer | None:
        """Queue.enqueue's shortcut for an empty queue: the owner of the incoming
        message's partition if it may take it now. Queue.enqueue delivers to whoever
        this returns, so the delivery is counted here."""
        partition = self._incoming
        consumer = self._target[partition]
        if consumer is None or not consumer.channel.can_deliver(consumer):
            return None
        held = self._held
        if held[partition] and self._holder[partition] is not consumer:
            return None  # (_free_for, inlined)
        self._direct = True
        if not consumer.no_ack:
            held[partition] += 1
            self._holder[partition] = consumer
        return consumer

    def _free_for(self, partition: int, consumer: Consumer) -> bool:
        """Whether nobody but `consumer` holds messages of `partition`."""
        return not self._held[partition] or self._holder[partition] is consumer

    def _take_in_turn(self) -> QueueEntry | None:
        """The head of the next partition that has one (drop-head: no global order)."""
        lanes = self._lanes
        count = len(lanes)
        start = self._take_from
        for step in range(count):
            index = (start + step) % count
            entry = lanes[index].pop()
            if entry is not None:
                self._take_from = (index + 1) % count
                return entry
        return None

    def _pop_partition(self, partition: int) -> QueueEntry | None:
        """Take the next ready entry of one partition; expired ones are dead-lettered."""
        entry = self._pop(self._lanes[partition].pop)
        if entry is None:
            self._waiting.discard(partition)
        return entry

    def get(self, no_ack: bool) -> QueueEntry | None:
        """basic.get: from a partition nobody holds messages of, in turn."""
        self.used(self._timers.clock_ms())
        count = self.partition_count
        start = self._get_from
        held = self._held
        for partition in sorted(self._waiting, key=lambda each: (each - start) % count):
            if held[partition]:
                continue
            entry = self._pop_partition(partition)
            if entry is None:
                continue
            self._get_from = (partition + 1) % count
            if no_ack:
                self._forget(entry)
            else:
                self.unacked_count += 1
                held[partition] += 1
                self._holder[partition] = None
            return entry
        return None

    # ------------------------------------------------- returns and settlement

    def settle(self, entry: QueueEntry) -> None:
        holder = entry.consumer
        super().settle(entry)
        partition = entry.lane.index
        held = self._held
        if held[partition] > 1:  # the common case of _release, inlined
            held[partition] -= 1
        else:
            self._release(partition, holder is None)

    def reject(self, entry: QueueEntry) -> None:
        holder = entry.consumer
        super().reject(entry)
        self._release(entry.lane.index, holder is None)

    def requeue(self, entry: QueueEntry, later: bool = False) -> None:
        holder = entry.consumer
        super().requeue(entry, later)
        partition = entry.lane.index
        if entry.state == WAITING:
            # It waits out a retry delay at its place: the partition waits with it.
            self._holder[partition] = None
        else:
            self._release(partition, holder is None)

    def _make_ready(self, entry: QueueEntry) -> None:
        was_waiting = entry.state == WAITING
        super()._make_ready(entry)
        partition = entry.lane.index
        self._waiting.add(partition)
        if was_waiting:
            self._release(partition, False)  # (the timer that woke it dispatches)

    def _release(self, partition: int, dispatch: bool) -> None:
        """One message of `partition` is no longer held. `dispatch`: nobody's channel
        will dispatch after this (a basic.get's settlement), so the queue does."""
        held = self._held[partition] - 1
        if held < 0:  # a delivery from before this queue counted (cannot happen)
            held = 0
        self._held[partition] = held
        if not held:
            self._holder[partition] = None
            if dispatch and partition in self._waiting:
                self.dispatch()

    # ------------------------------------------------------------ consumers

    def add_consumer(self, consumer: Consumer) -> None:
        super().add_consumer(consumer)
        self._rebalance()

    def remove_consumer(self, consumer: Consumer) -> None:
        present = consumer in self.consumers
        super().remove_consumer(consumer)
        if not present or self.deleted:
            return
        self._cursor.pop(consumer, None)
        self._rebalance()
        self.dispatch()  # partitions it held nothing of move at once

    def _rebalance(self) -> None:
        consumers = self.consumers
        if self.settings.single_active_consumer:
            consumers = consumers[:1]
        self._target = target = assign(self.partition_count, consumers, self._target)
        owned: dict[Consumer, list[int]] = {consumer: [] for consumer in consumers}
        for partition, owner in enumerate(target):
            if owner is not None:
                owned[owner].append(partition)
        self._owned = owned

    def partitions_of(self, consumer: Consumer) -> list[int]:
        """The partitions assigned to `consumer` (some may still wait for their old
        owner to settle)."""
        return list(self._owned.get(consumer, ()))

    def dispatch(self) -> None:
        """Deliver ready messages to their partitions' owners with credit: a message per
        consumer per round, until a round moves nothing."""
        if self._dispatching or not self.consumers or not self._ready_count:
            return
        self._dispatching = True
        try:
            moved = True
            while moved and self._ready_count:
                moved = False
                for consumer in tuple(self.consumers):
                    if not consumer.channel.can_deliver(consumer):
                        continue
                    entry = self._next_for(consumer)
                    if entry is not None:
                        self._hand_over(consumer, entry)
                        moved = True
        finally:
            self._dispatching = False

    def _next_for(self, consumer: Consumer) -> QueueEntry | None:
        """The next message of `consumer`'s partitions, going round them from where it
        left off; None if none of them has one it may take now."""
        owned = self._owned.get(consumer)
        if not owned:
            return None
        waiting = self._waiting
        count = self.partition_count
        start = self._cursor.get(consumer, 0)
        if len(waiting) < len(owned):
            # Few partitions have messages: look at those rather than at all it owns.
            target = self._target
            order = sorted(
                (partition for partition in waiting if target[partition] is consumer),
                key=lambda partition: (partition - start) % count,
            )
        else:
            first = bisect.bisect_left(owned, start)
            order = owned[first:] + owned[:first]
        for partition in order:
            if partition not in waiting or not self._free_for(partition, consumer):
                continue
            entry = self._pop_partition(partition)
            if entry is not None:
                self._cursor[consumer] = (partition + 1) % count
                return entry
        return None

    def _hand_over(self, consumer: Consumer, entry: QueueEntry) -> None:
        if not consumer.no_ack:
            partition = entry.lane.index
            self._held[partition] += 1
            self._holder[partition] = consumer
        super()._hand_over(consumer, entry)
