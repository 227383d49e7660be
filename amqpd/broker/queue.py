"""A queue: ready messages in publication order, the count of unacked ones, its consumers.

Every message gets an offset (a per-queue sequence number, as the store will give it).
Ready messages are a deque in offset order plus a small heap of requeued ones, so a
message that comes back (nack, reject, recover, a closed channel) takes its original
place: the next message out is always the lowest ready offset. Delivered-but-unacked
entries belong to the channel that holds them; the queue only counts them.

Dispatch is round-robin over consumers that have credit; with consumer priorities
(`x-priority`) the highest priority that has credit goes first. It runs when a message arrives,
when a consumer joins or gains credit, and when messages come back.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from amqpd.broker.binding import Destination
from amqpd.broker.message import Message
from amqpd.codec.fields import FieldTable

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer


class QueueEntry:
    """One message in one queue; also the record of its delivery while unacked."""

    __slots__ = ("consumer", "delivery_count", "message", "offset", "queue")

    def __init__(self, offset: int, message: Message, queue: Queue) -> None:
        self.offset = offset
        self.message = message
        self.queue = queue
        self.delivery_count = 0
        self.consumer: Consumer | None = None  # who holds it unacked (None: basic.get)

    def __lt__(self, other: QueueEntry) -> bool:
        return self.offset < other.offset


class Queue(Destination):
    __slots__ = (
        "_dispatching",
        "_next_offset",
        "_ready",
        "_returned",
        "_round_robin",
        "_round_robin_by_priority",
        "arguments",
        "auto_delete",
        "consumers",
        "deleted",
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
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: FieldTable = arguments or {}
        self._ready: deque[QueueEntry] = deque()
        self._returned: list[QueueEntry] = []  # heap of requeued entries, by offset
        self._next_offset = 0
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
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (what declare-ok and get-ok report; unacked ones excluded)."""
        return len(self._ready) + len(self._returned)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    # ------------------------------------------------------------- messages

    def enqueue(self, message: Message) -> None:
        offset = self._next_offset
        self._next_offset = offset + 1
        if self.consumers and not self._ready and not self._returned:
            consumer = self._next_consumer()
            if consumer is not None:
                # Straight to a waiting consumer: the common case of a keeping-up queue.
                if consumer.no_ack:
                    consumer.channel.deliver_fresh(consumer, message)
                else:
                    self.unacked_count += 1
                    consumer.channel.deliver(consumer, QueueEntry(offset, message, self))
                return
        self._ready.append(QueueEntry(offset, message, self))

    def _pop(self) -> QueueEntry | None:
        returned = self._returned
        ready = self._ready
        if returned and (not ready or returned[0].offset < ready[0].offset):
            return heapq.heappop(returned)
        return ready.popleft() if ready else None

    def get(self, no_ack: bool) -> QueueEntry | None:
        """Take the next ready message for basic.get."""
        entry = self._pop()
        if entry is not None and not no_ack:
            self.unacked_count += 1
        return entry

    def requeue(self, entry: QueueEntry) -> None:
        """Put an unacked entry back at its original position (it counts as redelivered)."""
        self.unacked_count -= 1
        entry.consumer = None
        if not self.deleted:
            heapq.heappush(self._returned, entry)

    def settle(self, entry: QueueEntry) -> None:
        """An unacked entry is done with (acked, or rejected without requeue)."""
        self.unacked_count -= 1
        entry.consumer = None

    def purge(self) -> int:
        """Drop every ready message; unacked ones stay with their channels."""
        count = self.message_count
        self._ready.clear()
        self._returned.clear()
        return count

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
        if self._dispatching or not self.consumers:
            return
        self._dispatching = True
        try:
            while self._ready or self._returned:
                consumer = self._next_consumer()
                if consumer is None:
                    break
                entry = self._pop()
                assert entry is not None
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
        if not consumer.no_ack:
            self.unacked_count += 1
        consumer.channel.deliver(consumer, entry)
