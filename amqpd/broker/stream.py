"""Stream queues (`x-queue-type: stream`) and their consumer groups.

A stream is an append-only log. Publishing appends (every message, persistent or not, as
RabbitMQ's streams do); consuming reads from a position and removes nothing, so any number
of consumers read the same messages (broadcast). Where a consumer starts (x-stream-offset),
its tag filter and the x-stream-offset header on each delivery are readers.py's. As in
RabbitMQ 3.10 over AMQP 0-9-1, a stream consumer needs a prefetch (basic.qos) and manual
acks; an ack only returns credit; basic.get, queue.purge and auto-ack are refused with 540,
and nack/reject of a plain reader's delivery too.

Consumer groups (amqpd's own, `x-consumer-group: name`): the consumers of one group share
the messages (each message to one member, round-robin), the group's position is kept on
the server and resumes after a reconnect or a restart, and several groups each read every
message once. A group's committed offset is the lowest offset not yet acked by a member
(so a restart delivers again what was out but unacked; the server does not know those
went out, so they are not flagged redelivered); it is kept in a small log beside the
stream, one record per change, the previous record of the group acked so that the store
deletes what is superseded. A new group starts at its first consumer's `x-stream-offset`
(default next); `x-consumer-group-reset: true` moves an existing group there (the
application's rewind; the management API is the operator's). Nack or reject with requeue
gives a group's message back to the group (redelivered to a member, flagged), without
requeue it counts as done. A group reads every message: a filter is refused in one.

Retention (`x-max-age`, default 72 h; `x-max-length-bytes`) drops whole segments, oldest
first: a segment goes once its newest message is older than the age, or while the stream
is larger than the byte limit. It is checked every RETENTION_CHECK_MS.

Synchronous and pure; imports broker.*, amqpd.codec and amqpd.errors only.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from amqpd.broker.lane import QueueEntry
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog, QueueStorage
from amqpd.broker.queue import KIND_PERSISTENT, Durability, Queue, queue_key
from amqpd.broker.queue_settings import parse_age_ms
from amqpd.broker.readers import (
    READ_RECORDS_MAX,
    OffsetSpec,
    Reader,
    StreamEntry,
    parse_filter,
    parse_offset_spec,
    tag_of,
    with_offset_header,
)
from amqpd.codec.fields import FieldTable, type_name
from amqpd.errors import FeatureNotImplemented, PreconditionFailed

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer

__all__ = ["DEFAULT_MAX_AGE_MS", "ConsumerGroup", "StreamQueue", "groups_key", "stream_logs"]

DEFAULT_MAX_AGE_MS: Final = 72 * 3600 * 1000  # as the managed services keep messages
RETENTION_CHECK_MS: Final = 1000
GROUP_NAME_BYTES_MAX: Final = 255
GROUP_RECORD_KIND: Final = 1
_GROUP_RECORD: Final = struct.Struct(">Q")


class ConsumerGroup:
    """A named group reading a stream: members share its messages; its committed offset
    (the lowest not yet done) is kept across restarts."""

    __slots__ = (
        "committed",
        "epoch",
        "members",
        "name",
        "out",
        "reader",
        "record_offset",
        "returned",
        "round_robin",
    )

    def __init__(self, name: str, position: int) -> None:
        self.name = name
        self.reader = Reader(position, None)
        self.members: list[Consumer] = []
        self.round_robin = 0
        self.out: set[int] = set()  # offsets delivered, not yet done
        self.returned: list[int] = []  # heap: offsets given back, delivered again first
        self.epoch = 0  # bumped by a reset: deliveries from before it no longer count
        self.committed = position  # the offset the groups log says (once written)
        self.record_offset: int | None = None  # that record's offset in the groups log

    def __repr__(self) -> str:
        return f"<ConsumerGroup {self.name!r} at {self.committed}>"

    def lowest_open(self) -> int:
        low = self.reader.position
        if self.reader.ahead:
            low = self.reader.ahead[0].offset
        if self.returned:
            low = min(low, self.returned[0])
        if self.out:
            low = min(low, min(self.out))
        return low

    def reset(self, position: int) -> None:
        self.reader.seek(position)
        self.out.clear()
        self.returned.clear()
        self.epoch += 1

    def lag(self, end: int) -> int:
        """Messages not yet done by the group."""
        return max(end - self.lowest_open(), 0)


def groups_key(key: str) -> str:
    """The store name of the log that keeps a stream's group positions."""
    return f"{key}\x00groups"


class StreamQueue(Queue):
    """x-queue-type stream. Declared durable, never exclusive or auto-delete (406)."""

    __slots__ = (
        "_groups_log",
        "_readers",
        "_retention_armed",
        "_stream_log",
        "groups",
        "max_age_ms",
        "max_length_bytes",
    )

    def __init__(
        self,
        name: str,
        vhost: str,
        *,
        arguments: FieldTable,
        storage: QueueStorage | None,
        log: MessageLog,
        groups_log: MessageLog | None,
        **kwargs: object,
    ) -> None:
        super().__init__(name, vhost, durable=True, arguments=arguments, **kwargs)  # type: ignore[arg-type]
        self._storage = storage
        self._stream_log = log
        self._groups_log = groups_log
        self._readers: dict[Consumer, Reader] = {}
        self.groups: dict[str, ConsumerGroup] = {}
        age = arguments.get("x-max-age")
        age_ms = parse_age_ms(age) if isinstance(age, str) else None
        self.max_age_ms: int | None = DEFAULT_MAX_AGE_MS if age_ms is None else age_ms
        length = arguments.get("x-max-length-bytes")
        self.max_length_bytes = length if isinstance(length, int) and length > 0 else None
        self._retention_armed = False
        if groups_log is not None:
            self._load_groups(groups_log)
        self._arm_retention(self._timers.clock_ms())

    def __repr__(self) -> str:
        return f"<StreamQueue {self.name!r} in vhost {self.vhost!r}>"

    # -- what the rest of the broker asks of a queue -------------------------------------

    @property
    def message_count(self) -> int:
        """As RabbitMQ's streams over AMQP 0-9-1: declare-ok and delete-ok report 0."""
        return 0

    @property
    def stored_count(self) -> int:
        """Messages the stream holds (retention drops them, consumers do not)."""
        log = self._stream_log
        return log.next_offset - log.first_offset

    @property
    def first_offset(self) -> int:
        return self._stream_log.first_offset

    @property
    def next_offset(self) -> int:
        return self._stream_log.next_offset

    @property
    def log(self) -> MessageLog | None:
        return self._stream_log

    @property
    def memory_bytes(self) -> int:
        return 0

    def enqueue(self, message: Message, now_ms: int) -> Durability | None:
        """Append; confirmed once the record is durable."""
        self.counts.publish += 1
        log = self._stream_log
        offset = log.append(KIND_PERSISTENT, now_ms, message.stored_form(), tag=tag_of(message))
        if self._readers or self.groups:
            self.dispatch()
        return (log, offset)

    def check_consumer(
        self, no_ack: bool, prefetch_count: int, prefetch_global: int, arguments: FieldTable
    ) -> None:
        where = f"queue '{self.name}' in vhost '{self.vhost}'"
        if no_ack:
            raise FeatureNotImplemented(
                f"automatic acknowledgement not supported by stream queues {where}"
            )
        if not prefetch_count and not prefetch_global:
            raise PreconditionFailed(f"consumer prefetch count is not set for '{where}'")
        parse_offset_spec(arguments.get("x-stream-offset", "next"), 0, self.name, self.vhost)
        parse_filter(arguments, self.name, self.vhost)
        group = arguments.get("x-consumer-group")
        if group is not None and (
            not isinstance(group, str)
            or not group
            or len(group.encode("utf-8", "surrogateescape")) > GROUP_NAME_BYTES_MAX
        ):
            raise PreconditionFailed(
                f"invalid arg 'x-consumer-group' for {where}: a name of 1 to "
                f"{GROUP_NAME_BYTES_MAX} bytes is needed"
            )
        reset = arguments.get("x-consumer-group-reset", False)
        if not isinstance(reset, bool):
            raise PreconditionFailed(
                f"invalid arg 'x-consumer-group-reset' for {where}: "
                f"{{unacceptable_type,{type_name(reset)}}}"
            )
        if group is not None and "x-stream-filter" in arguments:
            raise PreconditionFailed(
                f"invalid arg 'x-stream-filter' for {where}: a consumer group reads every "
                "message (filter in a group of its own instead)"
            )

    def add_consumer(self, consumer: Consumer) -> None:
        arguments = consumer.arguments
        now_ms = self._timers.clock_ms()
        spec = parse_offset_spec(
            arguments.get("x-stream-offset", "next"), now_ms, self.name, self.vhost
        )
        group_name = arguments.get("x-consumer-group")
        if isinstance(group_name, str):
            group = self.groups.get(group_name)
            if group is None:
                group = self.groups[group_name] = ConsumerGroup(
                    group_name, spec.resolve(self._stream_log)
                )
                self._commit(group)
            elif arguments.get("x-consumer-group-reset") is True:
                self.reset_group(group_name, spec)
            group.members.append(consumer)
        else:
            self._readers[consumer] = Reader(
                spec.resolve(self._stream_log), parse_filter(arguments, self.name, self.vhost)
            )
        self.consumers.append(consumer)
        self.had_consumers = True

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self._readers.pop(consumer, None) is None:
            for group in self.groups.values():
                if consumer in group.members:
                    group.members.remove(consumer)
                    if group.round_robin >= len(group.members):
                        group.round_robin = 0
                    self._commit(group)
                    self.dispatch()  # what it held goes to the others as it comes back
                    break

    def get(self, no_ack: bool) -> QueueEntry | None:
        raise FeatureNotImplemented(
            f"basic.get not supported by stream queues queue '{self.name}' in vhost '{self.vhost}'"
        )

    def purge(self) -> int:
        if self.deleted:
            return 0  # the queue's deletion empties it; only a client's purge is refused
        raise FeatureNotImplemented(
            f"queue.purge not supported by stream queues queue '{self.name}' in vhost "
            f"'{self.vhost}'"
        )

    def nack_refusal(self, entry: QueueEntry) -> FeatureNotImplemented | None:
        """nack and reject are refused (540) for a plain reader's deliveries, as RabbitMQ
        3.10 does; a group takes its deliveries back."""
        if isinstance(entry, StreamEntry) and entry.group is not None:
            return None
        return FeatureNotImplemented(
            "basic.nack and basic.reject not supported by stream queues queue "
            f"'{self.name}' in vhost '{self.vhost}'"
        )

    def settle(self, entry: QueueEntry) -> None:
        self.unacked_count -= 1
        entry.consumer = None
        if isinstance(entry, StreamEntry) and entry.group is not None:
            self._done(entry.group, entry)

    def reject(self, entry: QueueEntry) -> None:
        self.settle(entry)  # no dead-lettering on a stream: done with

    def requeue(self, entry: QueueEntry, later: bool = False) -> None:
        """A delivery came back (its channel closed, nack with requeue): a group's goes
        to another member; a plain reader's is simply forgotten."""
        self.unacked_count -= 1
        entry.consumer = None
        if not isinstance(entry, StreamEntry) or self.deleted:
            return
        group = entry.group
        if group is None or entry.epoch != group.epoch:
            return
        if entry.offset in group.out:
            group.out.discard(entry.offset)
            heapq.heappush(group.returned, entry.offset)

    def note_delivered(self, entry: QueueEntry) -> None:
        pass

    def expire(self, now_ms: int) -> None:
        pass

    def on_timer(self, now_ms: int) -> None:
        """Retention: drop the segments past x-max-age or beyond x-max-length-bytes."""
        self._retention_armed = False
        if self.deleted:
            return
        self.apply_retention(now_ms)
        self._arm_retention(now_ms)

    def _arm_retention(self, now_ms: int) -> None:
        if not self._retention_armed:
            self._retention_armed = True
            self._timers.schedule(now_ms + RETENTION_CHECK_MS, self)

    def apply_retention(self, now_ms: int) -> int:
        """Drop whole segments, oldest first; returns the messages dropped."""
        log = self._stream_log
        spans = log.segment_spans()
        if len(spans) < 2:
            return 0
        total_bytes = sum(span.size_bytes for span in spans)
        drop_below = log.first_offset
        age_limit = None if self.max_age_ms is None else now_ms - self.max_age_ms
        for span in spans[:-1]:  # the newest segment stays
            too_old = age_limit is not None and span.timestamp_max_ms < age_limit
            too_big = self.max_length_bytes is not None and total_bytes > self.max_length_bytes
            if not (too_old or too_big):
                break
            drop_below = span.end_offset
            total_bytes -= span.size_bytes
        if drop_below <= log.first_offset:
            return 0
        return log.drop_before(drop_below)

    def close_storage(self) -> None:
        self._readers.clear()
        if self._storage is not None:
            self._storage.delete_log(self.key)
            if self._groups_log is not None:
                self._storage.delete_log(groups_key(self.key))

    def storage_lost(self, log: MessageLog, start: int, end: int) -> None:
        pass

    # -- delivering -------------------------------------------------------------------

    def dispatch(self) -> None:
        if self._dispatching or not self.consumers:
            return
        self._dispatching = True
        try:
            log = self._stream_log
            for consumer, reader in self._readers.items():
                for offset, message in reader.messages_for(consumer, log, False):
                    self._deliver(consumer, offset, message, None)
            for group in self.groups.values():
                if group.members:
                    self._dispatch_group(group, log)
        finally:
            self._dispatching = False

    def _dispatch_group(self, group: ConsumerGroup, log: MessageLog) -> None:
        members = group.members
        while True:
            consumer = None
            count = len(members)
            for step in range(count):
                index = (group.round_robin + step) % count
                candidate = members[index]
                if candidate.channel.can_deliver(candidate):
                    consumer = candidate
                    group.round_robin = (index + 1) % count
                    break
            if consumer is None:
                return
            redelivered = False
            if group.returned:
                offset = heapq.heappop(group.returned)
                records = log.read(offset, 1)
                if not records or records[0].offset != offset:
                    continue  # dropped by retention meanwhile
                record = records[0]
                redelivered = True
            else:
                found = group.reader.next_record(log, False)
                if found is None:
                    return
                record = found
            group.out.add(record.offset)
            message = Message.from_stored(record.payload)
            self._deliver(consumer, record.offset, message, group, redelivered)

    def _deliver(
        self,
        consumer: Consumer,
        offset: int,
        message: Message,
        group: ConsumerGroup | None,
        redelivered: bool = False,
    ) -> None:
        entry = StreamEntry(self._lanes[0], offset, with_offset_header(message, offset), group)
        if redelivered:
            entry.delivery_count = 1
        self.unacked_count += 1
        consumer.channel.deliver(consumer, entry)

    # -- groups ---------------------------------------------------------------------

    def _done(self, group: ConsumerGroup, entry: StreamEntry) -> None:
        if entry.epoch != group.epoch:
            return
        group.out.discard(entry.offset)
        self._commit(group)

    def reset_group(self, name: str, spec: OffsetSpec) -> ConsumerGroup:
        """Move a group (the application's or the operator's rewind); a missing group is
        made there."""
        group = self.groups.get(name)
        position = spec.resolve(self._stream_log)
        if group is None:
            group = self.groups[name] = ConsumerGroup(name, position)
        else:
            group.reset(position)
        self._commit(group)
        self.dispatch()
        return group

    def delete_group(self, name: str) -> bool:
        group = self.groups.get(name)
        if group is None or group.members:
            return False
        del self.groups[name]
        log = self._groups_log
        if log is not None and group.record_offset is not None:
            log.ack(group.record_offset)
        return True

    def _commit(self, group: ConsumerGroup) -> None:
        """Keep the group's committed offset if it moved: one record in the groups log,
        the group's previous one acked."""
        committed = group.lowest_open()
        if committed == group.committed and group.record_offset is not None:
            return
        group.committed = committed
        log = self._groups_log
        if log is None:
            if self._storage is None:
                return
            log = self._groups_log = self._storage.create_log(groups_key(self.key), durable=True)[0]
        payload = _GROUP_RECORD.pack(committed) + group.name.encode("utf-8", "surrogateescape")
        previous = group.record_offset
        group.record_offset = log.append(GROUP_RECORD_KIND, self._timers.clock_ms(), payload)
        if previous is not None:
            log.ack(previous)

    def _load_groups(self, log: MessageLog) -> None:
        """The groups' committed offsets from the groups log (the newest record of each
        wins; older ones left over are acked)."""
        offset = 0
        latest: dict[str, tuple[int, int]] = {}
        while True:
            records = log.read(offset, READ_RECORDS_MAX)
            if not records:
                break
            for record in records:
                payload = record.payload
                if len(payload) <= _GROUP_RECORD.size:
                    log.ack(record.offset)
                    continue
                (committed,) = _GROUP_RECORD.unpack_from(payload)
                name = payload[_GROUP_RECORD.size :].decode("utf-8", "surrogateescape")
                earlier = latest.get(name)
                if earlier is not None:
                    log.ack(earlier[0])
                latest[name] = (record.offset, committed)
            offset = records[-1].offset + 1
        for name, (record_offset, committed) in latest.items():
            group = ConsumerGroup(name, committed)
            group.record_offset = record_offset
            self.groups[name] = group


def stream_logs(
    storage: QueueStorage | None,
    vhost: str,
    name: str,
    recovered: Callable[[str], Sequence[MessageLog] | None] | None = None,
) -> tuple[MessageLog, MessageLog | None]:
    """A stream's log and its groups log: recovered ones if there are, else a new log."""
    key = queue_key(vhost, name)
    logs = recovered(key) if recovered is not None else None
    groups = recovered(groups_key(key)) if recovered is not None else None
    if logs is None:
        if storage is None:
            raise ValueError("a stream needs storage")
        logs = storage.create_log(key, durable=True, tag_index=True)
    return logs[0], groups[0] if groups else None
