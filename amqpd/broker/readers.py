"""What reading a log without removing from it takes: where a reader starts
(x-stream-offset), its tag filter (x-stream-filter), its place and read-ahead, and the
deliveries it makes (StreamEntry, acked only to return credit). Stream queues
(stream.py) and replay consumers of ordinary queues (replay.py) both read this way.

Offsets: first, last (the last message), next, a number (clamped to what is stored), an
AMQP timestamp (seconds), or an interval back from now ("1h", "30m", "7D": a number and
one of Y, M, D, h, m, s, as x-max-age is written).

Tags: a message's tag is its `x-stream-filter-value` header. The log keeps an index of the
tags in each segment, so a filtered reader jumps over segments that hold none of its tags
without reading them; within a segment each message is checked exactly.

Synchronous and pure; imports broker.* below queue.py, amqpd.codec and amqpd.errors only.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import attrs

from amqpd.broker.lane import OUT, Lane, QueueEntry
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog, StoredRecord
from amqpd.broker.queue_settings import parse_age_ms
from amqpd.codec.fields import FieldTable, FieldValue, Timestamp, type_name
from amqpd.codec.properties import FLAG_HEADERS, with_header_entry
from amqpd.errors import PreconditionFailed

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer
    from amqpd.broker.stream import ConsumerGroup

READ_RECORDS_MAX: Final = 256  # records one read takes from the log
FILTER_VALUES_MAX: Final = 64  # values one consumer may filter on
FILTER_HEADER: Final = "x-stream-filter-value"
# The header's key as it appears inside an encoded field table (a shortstr): a message
# whose header bytes lack it has no tag, and nothing needs decoding to know.
FILTER_KEY_BYTES: Final = bytes((len(FILTER_HEADER),)) + FILTER_HEADER.encode()
_OFFSET_ENTRY: Final = b"\x0fx-stream-offset" + b"l"
_INT64: Final = struct.Struct(">q")


@attrs.frozen
class OffsetSpec:
    """Where a reader starts: kind is first, last, next, offset or timestamp (ms)."""

    kind: str
    value: int = 0

    def resolve(self, log: MessageLog) -> int:
        first, end = log.first_offset, log.next_offset
        if self.kind == "first":
            return first
        if self.kind == "last":
            return max(first, end - 1)
        if self.kind == "next":
            return end
        if self.kind == "offset":
            return min(max(self.value, first), end)
        return max(log.offset_for_timestamp(self.value), first)


def parse_offset_spec(value: FieldValue, now_ms: int, queue: str, vhost: str) -> OffsetSpec:
    """The x-stream-offset consumer argument; 406 with the reason if it is not one."""
    if isinstance(value, Timestamp):
        return OffsetSpec("timestamp", int(value) * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return OffsetSpec("offset", max(value, 0))
    if isinstance(value, str):
        if value in ("first", "last", "next"):
            return OffsetSpec(value)
        age_ms = parse_age_ms(value)
        if age_ms is not None:
            return OffsetSpec("timestamp", now_ms - age_ms)
        reason = f"\"'{value}' is not first, last, next, an offset, a timestamp or an interval\""
    else:
        reason = f"{{unacceptable_type,{type_name(value)}}}"
    raise PreconditionFailed(
        f"invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}': {reason}"
    )


@attrs.frozen
class TagFilter:
    """x-stream-filter: the tags a reader wants; `untagged`: messages without one too."""

    tags: frozenset[bytes]
    untagged: bool

    def matches(self, message: Message) -> bool:
        tag = tag_of(message)
        return self.untagged if tag is None else tag in self.tags


def _tag_bytes(value: FieldValue) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def filter_value(message: Message) -> FieldValue | None:
    """The message's x-stream-filter-value header (None without one); the properties are
    decoded only when the header's key is in the header bytes."""
    if not message.flags & FLAG_HEADERS or FILTER_KEY_BYTES not in message.header:
        return None
    return message.headers.get(FILTER_HEADER)


def tag_of(message: Message) -> bytes | None:
    """The message's x-stream-filter-value as the log's tag index keeps it."""
    tag = filter_value(message)
    return None if tag is None else _tag_bytes(tag)


def parse_filter(arguments: FieldTable, queue: str, vhost: str) -> TagFilter | None:
    """x-stream-filter and x-stream-match-unfiltered; None without a filter."""
    value = arguments.get("x-stream-filter")
    unfiltered = arguments.get("x-stream-match-unfiltered", False)
    where = f"for queue '{queue}' in vhost '{vhost}'"
    if not isinstance(unfiltered, bool):
        raise PreconditionFailed(
            f"invalid arg 'x-stream-match-unfiltered' {where}: "
            f"{{unacceptable_type,{type_name(unfiltered)}}}"
        )
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > FILTER_VALUES_MAX:
        raise PreconditionFailed(
            f"invalid arg 'x-stream-filter' {where}: between 1 and {FILTER_VALUES_MAX} "
            "values are needed"
        )
    tags = set()
    for item in values:
        if not isinstance(item, (str, bytes)):
            raise PreconditionFailed(
                f"invalid arg 'x-stream-filter' {where}: {{unacceptable_type,{type_name(item)}}}"
            )
        tags.add(_tag_bytes(item))
    return TagFilter(frozenset(tags), unfiltered)


def with_offset_header(message: Message, offset: int) -> Message:
    """The message as a stream delivers it: x-stream-offset added to its headers."""
    header = with_header_entry(message.header, _OFFSET_ENTRY + _INT64.pack(offset))
    return Message(
        message.exchange, message.routing_key, header, message.body, message.encoded_route
    )


class StreamEntry(QueueEntry):
    """A delivery from a log read without removing: acks return credit (and advance a
    group). `group` is None for a plain reader; `epoch` tells a group's deliveries from
    before a reset."""

    __slots__ = ("epoch", "group")

    replayed = True

    def __init__(
        self, lane: Lane, offset: int, message: Message, group: ConsumerGroup | None
    ) -> None:
        super().__init__(offset, message, lane)
        self.state = OUT
        self.group = group
        self.epoch = group.epoch if group is not None else 0


class Reader:
    """One place in a log: the next offset to read, what was read ahead and not yet
    handed out, and the filter. A plain consumer has one; a group shares one."""

    __slots__ = ("ahead", "filter", "position")

    def __init__(self, position: int, tag_filter: TagFilter | None) -> None:
        self.position = position
        self.filter = tag_filter
        self.ahead: deque[StoredRecord] = deque()

    def seek(self, position: int) -> None:
        self.position = position
        self.ahead.clear()

    def messages_for(
        self, consumer: Consumer, log: MessageLog, include_acked: bool
    ) -> Iterator[tuple[int, Message]]:
        """(offset, message) for `consumer` while it has credit, its filter applied."""
        channel = consumer.channel
        tag_filter = self.filter
        while channel.can_deliver(consumer):
            record = self.next_record(log, include_acked)
            if record is None:
                return
            message = Message.from_stored(record.payload)
            if tag_filter is not None and not tag_filter.matches(message):
                continue
            yield record.offset, message

    def next_record(self, log: MessageLog, include_acked: bool) -> StoredRecord | None:
        ahead = self.ahead
        if not ahead:
            position = self.position
            if position >= log.next_offset:
                return None
            tag_filter = self.filter
            if tag_filter is not None:
                position = log.next_tagged_offset(position, tag_filter.tags, tag_filter.untagged)
                self.position = position
                if position >= log.next_offset:
                    return None
            records = log.read(position, READ_RECORDS_MAX, include_acked=include_acked)
            if not records:
                return None
            ahead.extend(records)
        record = ahead.popleft()
        self.position = record.offset + 1
        return record
