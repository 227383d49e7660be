"""The ports the broker calls out through; the server and the store implement them.

The broker decides what happens and when; a port only carries the outcome to the wire or
to disk. Calls are synchronous and must not re-enter the broker.

Imports broker.* and amqpd.errors for types only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer
    from amqpd.broker.message import Message
    from amqpd.errors import ChannelException


class ChannelSink(Protocol):
    """Where one channel's server-initiated traffic goes."""

    def wire_tag(self, consumer_tag: str) -> bytes:
        """The consumer tag in the form `deliver` writes it (computed once per consumer)."""
        ...

    def deliver(
        self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message
    ) -> None:
        """basic.deliver to a consumer."""
        ...

    def returned(self, reply_code: int, reply_text: str, message: Message) -> None:
        """basic.return of an unroutable mandatory message."""
        ...

    def confirmed(self, sequence: int) -> None:
        """Publisher confirm: every message up to `sequence` is safe (basic.ack)."""
        ...

    def rejected(self, sequence: int) -> None:
        """Publisher confirm: message `sequence` was not taken (basic.nack)."""
        ...

    def consumer_cancelled(self, consumer_tag: str) -> None:
        """The broker ended a consumer (its queue was deleted): basic.cancel if supported."""
        ...

    def failed(self, error: ChannelException) -> None:
        """The broker closes the channel on its own (a consumer timeout, say)."""
        ...


class StoredRecord(Protocol):
    """One record read back from a log."""

    @property
    def offset(self) -> int: ...
    @property
    def kind(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def payload(self) -> bytes: ...


class MessageLog(Protocol):
    """One partition of an append-only log of opaque records (amqpd.store.Partition).

    Offsets only grow; an offset never appended (a gap) counts as acked. A record is durable
    once its offset is below `durable_offset`.
    """

    @property
    def next_offset(self) -> int: ...
    @property
    def durable_offset(self) -> int: ...
    @property
    def delivered_below(self) -> int: ...
    @property
    def acked_below(self) -> int: ...
    @property
    def live_count(self) -> int: ...

    def append(
        self, kind: int, timestamp_ms: int, payload: bytes, offset: int | None = None
    ) -> int: ...

    def read(
        self, offset: int, max_records: int = 256, max_bytes: int | None = None
    ) -> Sequence[StoredRecord]:
        """Live records with offset >= `offset`, in order."""
        ...

    def ack(self, offset: int) -> None: ...
    def ack_range(self, start: int, end: int) -> None: ...
    def is_acked(self, offset: int) -> bool: ...
    def note_delivered(self, offset: int) -> None: ...

    def set_counter(self, offset: int, value: int) -> None:
        """Keep a number with a live record until it is acked, across restarts."""
        ...

    def counter(self, offset: int) -> int: ...


class QueueStorage(Protocol):
    """Where queues keep their logs: one per durable queue, one per paged transient queue;
    a log has a partition per lane of the queue (one per priority level)."""

    def create_log(
        self, key: str, *, durable: bool, partitions: int = 1, random_reads: bool = False
    ) -> Sequence[MessageLog]:
        """A new, empty log (replacing any left over under `key`): its partitions in order.
        `random_reads`: records will be read one by one at scattered offsets (a delayed
        exchange's), so each read must find its record without scanning many."""
        ...

    def delete_log(self, key: str) -> None: ...


class DefinitionLog(Protocol):
    """The durable definitions journal: exchanges, queues and bindings by key."""

    @property
    def durable_ticket(self) -> int: ...

    def put(self, key: bytes, value: bytes) -> int: ...
    def delete(self, key: bytes) -> int: ...
