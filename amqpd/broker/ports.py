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


class StoredSegmentSpan(Protocol):
    """One segment of a log, as retention sees it."""

    @property
    def base_offset(self) -> int: ...
    @property
    def end_offset(self) -> int:
        """Exclusive: the next segment's base_offset, next_offset for the newest."""
        ...

    @property
    def timestamp_max_ms(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...


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
    @property
    def first_offset(self) -> int:
        """The lowest offset still stored (below it, segments were deleted or dropped)."""
        ...

    def append(
        self,
        kind: int,
        timestamp_ms: int,
        payload: bytes,
        offset: int | None = None,
        *,
        tag: bytes | None = None,
    ) -> int:
        """`tag`: kept per segment on a log created with tag_index (None: untagged)."""
        ...

    def read(
        self,
        offset: int,
        max_records: int = 256,
        max_bytes: int | None = None,
        *,
        include_acked: bool = False,
    ) -> Sequence[StoredRecord]:
        """Live records with offset >= `offset`, in order; with include_acked, acked
        records still stored too (a keep_acked log keeps them until drop_before)."""
        ...

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first offset whose record has timestamp >= timestamp_ms (next_offset if none)."""
        ...

    def next_tagged_offset(self, offset: int, tags: frozenset[bytes], untagged: bool) -> int:
        """The first offset >= `offset` in a segment that may hold a record tagged with one
        of `tags` (or an untagged one, if `untagged`); next_offset if none. No I/O."""
        ...

    def segment_spans(self) -> Sequence[StoredSegmentSpan]:
        """The segments still stored, oldest first (the newest is never dropped)."""
        ...

    def drop_before(self, offset: int) -> int:
        """Drop every sealed segment whose records all lie below `offset`: their records
        are gone (acked), now and after a restart. Returns how many live records went."""
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
        self,
        key: str,
        *,
        durable: bool,
        partitions: int = 1,
        random_reads: bool = False,
        tag_index: bool = False,
        keep_acked: bool = False,
    ) -> Sequence[MessageLog]:
        """A new, empty log (replacing any left over under `key`): its partitions in order.
        `random_reads`: records will be read one by one at scattered offsets (a delayed
        exchange's), so each read must find its record without scanning many.
        `tag_index`: segments keep the tags appended with their records (next_tagged_offset).
        `keep_acked`: fully acked segments stay, readable with include_acked, until
        drop_before removes them. Both options survive a restart."""
        ...

    def delete_log(self, key: str) -> None: ...


class DefinitionLog(Protocol):
    """The durable definitions journal: exchanges, queues and bindings by key."""

    @property
    def durable_ticket(self) -> int: ...

    def put(self, key: bytes, value: bytes) -> int: ...
    def delete(self, key: bytes) -> int: ...
