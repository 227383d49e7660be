"""One partition of a log: ordered segments, appends, reads, acks, the ack journal, recovery.

Offsets are sequence numbers that only grow; an offset that was never appended (a gap, a
dropped write, damage) counts as acked, so every offset below next_offset that is not acked
is a stored record and live_count is next_offset minus the acked count.

Write path: `append` encodes the record and buffers it in the newest segment (no I/O);
`Store.write_pending` writes each segment's buffer with one write and truncates back on
failure. Segments roll once they pass segment_bytes_max. A new segment of a durable log gets
its first bytes only once the segment before it is durable, so a crash can tear only the
newest segment of a partition: recovery cuts that tail quietly, and damage found in a sealed
segment is always real damage (quarantined, logged as an error, cut out of the file).

Acks are applied in memory at once and written to the ack journal only once the acked offset
is below durable_offset, so a record that a crash loses can never be found acked (its offset
may be reused). The delivered watermark is different: it is written at the next
write_pending whatever is durable, because it must be in the OS before the delivery it
covers leaves the broker (a crash then brings the message back flagged redelivered). A
watermark past what a crash lost is harmless: recovery puts next_offset above it, so no
new record is ever taken for a delivered one. A sealed segment whose every offset is acked
is deleted once those acks are in the journal. The newest segment is never deleted: its
base keeps next_offset after a restart.

Reads keep a cursor so that consecutive reads neither bisect nor re-scan; a random read
bisects the sparse index and scans at most one index interval. Every record read from disk
has its CRC checked; damage found by a read is quarantined as recovery would.

Imports the standard library and store.* below it only.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple
from zlib import crc32

from amqpd.store.acks import (
    ACK_RANGES,
    COUNTERS,
    DELIVERED,
    DROPPED,
    SNAPSHOT,
    AckReplay,
    AckSet,
    PendingAcks,
    encode_counters,
    encode_delivered,
    encode_dropped,
    encode_ranges,
    encode_snapshot,
)
from amqpd.store.files import TMP_SUFFIX, FileHandle, free_name
from amqpd.store.journal import JournalFile, recover_journal
from amqpd.store.metrics import LogRecovery, Quarantined
from amqpd.store.record import (
    ACK_JOURNAL_MAGIC,
    CRC_FIELD,
    FILE_HEADER_BYTES,
    OFFSET_LIMIT,
    RANGE,
    RECORD_HEADER,
    RECORD_HEADER_BYTES,
    RECORD_TAIL,
    SEGMENT_MAGIC,
    FormatError,
    decode_file_header,
    encode_file_header,
    encode_record,
)
from amqpd.store.scan import (
    SCAN_CHUNK_BYTES,
    RecordScanner,
    ScannedRecord,
    copy_range,
    resync,
)
from amqpd.store.segment import Damage, Segment, parse_segment_name, scan, segment_name
from amqpd.store.tags import (
    TAG_BYTES_MAX,
    TAGS_PER_SEGMENT_MAX,
    decode_tags,
    encode_tags,
    parse_tags_name,
    tags_name,
)

if TYPE_CHECKING:
    from amqpd.store.log import Log
    from amqpd.store.store import Store

log = logging.getLogger("amqpd.store")

ACK_JOURNAL_NAME: Final = "acks.journal"
JOURNAL_RANGES_PER_RECORD: Final = 4096
SKIP_ACKED_RECORDS: Final = 64  # past this many acked offsets in a row, a read re-seeks
READ_CHUNK_BYTES_MIN: Final = 4096

_pack_tail = RECORD_TAIL.pack
_pack_crc = CRC_FIELD.pack
_unpack_header = RECORD_HEADER.unpack_from


class Record(NamedTuple):
    offset: int
    kind: int
    timestamp_ms: int
    payload: bytes


class SegmentSpan(NamedTuple):
    """What retention decides on: one segment's offsets [base_offset, end_offset), the
    highest timestamp among its records (0 if none) and its size in bytes (header and
    records, written or not)."""

    base_offset: int
    end_offset: int  # the next segment's base_offset; next_offset for the newest
    timestamp_max_ms: int
    size_bytes: int


class Partition:
    __slots__ = (
        "_acks",
        "_bases",
        "_check_high",
        "_check_low",
        "_counters",
        "_cursor_after",
        "_cursor_high",
        "_cursor_index",
        "_cursor_low",
        "_cursor_position",
        "_cursor_segment",
        "_dirty",
        "_dropped_below",
        "_fs",
        "_head",
        "_interval",
        "_journal",
        "_journaled_delivered",
        "_journaled_dropped",
        "_keep_acked",
        "_ordered",
        "_pending_acks",
        "_pending_counters",
        "_read_bytes_max",
        "_replay_cursor",
        "_segment_bytes_max",
        "_segments",
        "_store",
        "_tag_index",
        "_tags_owed",
        "_timestamps_running",
        "compacting",
        "deleted",
        "delivered_below",
        "directory",
        "durable",
        "durable_offset",
        "index",
        "log",
        "next_offset",
        "written_offset",
    )

    def __init__(self, log: Log, index: int, directory: Path, store: Store) -> None:
        settings = store.settings
        self.log = log
        self.index = index
        self.directory = directory
        self.durable = log.durable
        # fsync order matters only where something is fsynced
        self._ordered = log.durable and settings.fsync.mode != "never"
        self._store = store
        self._fs = store.fs
        self._segment_bytes_max = settings.segment_bytes_max
        self._interval = log.index_interval_bytes or settings.index_interval_bytes
        self._read_bytes_max = settings.read_bytes_max
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self.next_offset = 0  # one past the highest offset appended
        self.written_offset = 0  # every offset below was handed to the OS
        self.durable_offset = 0  # every offset below is durable under the fsync policy
        self.delivered_below = 0
        self._journaled_delivered = 0
        self._acks = AckSet()
        self._pending_acks = PendingAcks()  # acked, not yet in the journal (durable logs)
        self._counters: dict[int, int] = {}  # set_counter's values, for live offsets
        self._pending_counters: dict[int, int] = {}  # not yet in the journal
        self._journal: JournalFile | None = (
            JournalFile(store, directory / ACK_JOURNAL_NAME, ACK_JOURNAL_MAGIC, durable=True)
            if self.durable
            else None
        )
        self._dirty = False
        self._check_low = OFFSET_LIMIT  # offsets acked since segments were last checked
        self._check_high = -1
        self._cursor_segment: Segment | None = None
        self._cursor_index = 0
        self._cursor_position = 0
        self._cursor_after = -1  # the offset of the record just before the cursor position
        self._cursor_low = -1  # a read from any offset in [low, high] may use the cursor
        self._cursor_high = -1
        self._tag_index = log.tag_index
        self._keep_acked = log.keep_acked
        self._tags_owed: list[Segment] = []  # sealed segments whose tag file is not written
        # offsets below were dropped (drop_before); their segments go once that is safe
        self._dropped_below = 0
        self._journaled_dropped = 0
        # per sealed segment, the highest timestamp in it and every segment before it
        # (non-decreasing, so bisectable); None: segments changed, rebuilt when needed
        self._timestamps_running: list[int] | None = None
        # read(include_acked=True): (segment, byte position, the offset before it)
        self._replay_cursor: tuple[Segment, int, int] | None = None
        self.compacting = False
        self.deleted = False

    def __repr__(self) -> str:
        return f"<Partition {self.log.name!r}[{self.index}] next_offset={self.next_offset}>"

    # -- state ------------------------------------------------------------------------------

    @property
    def first_offset(self) -> int:
        """The lowest offset still stored (segments below it were deleted or dropped)."""
        base = self._segments[0].base_offset
        return base if base >= self._dropped_below else self._dropped_below

    @property
    def acked_below(self) -> int:
        """Every offset below it is acked or absent; it is live or equal to next_offset."""
        return self._acks.acked_below

    @property
    def live_count(self) -> int:
        return self.next_offset - self._acks.count

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def segment_names(self) -> list[str]:
        return [segment.path.name for segment in self._segments]

    def is_acked(self, offset: int) -> bool:
        return offset in self._acks

    def memory_bytes(self) -> int:
        """Bytes of index and ack state held in arrays (what grows with the backlog)."""
        return self._acks.memory_bytes() + sum(s.memory_bytes() for s in self._segments)

    # -- appending ----------------------------------------------------------------------------

    def append(
        self,
        kind: int,
        timestamp_ms: int,
        payload: bytes,
        offset: int | None = None,
        tag: bytes | None = None,
    ) -> int:
        """Buffer one record; returns its offset. No I/O: write_pending writes it.

        `tag` (pass it by keyword): on a tag_index log, what next_tagged_offset filters on
        (None: untagged); ignored otherwise (TaggedPartition keeps it, so that this path
        costs nothing more). Not keyword-only: on CPython 3.11 a keyword-only parameter
        costs every call some 3% of an append.
        """
        if offset is None:
            offset = self.next_offset
        try:
            tail = _pack_tail(len(payload), kind, offset, timestamp_ms)
        except struct.error:
            tail = b""
        if not tail or not kind:
            encode_record(kind, offset, timestamp_ms, payload)  # raises the precise error
            raise ValueError(f"cannot append kind {kind} at offset {offset}")
        if offset != self.next_offset:
            self._skip_to(offset)
        record = _pack_crc(crc32(payload, crc32(tail))) + tail + payload
        segment = self._head
        if segment.size >= self._segment_bytes_max and segment.count:
            segment = self._roll(offset)
        position = segment.size
        segment.size = position + len(record)
        segment.pending.append(record)
        segment.count += 1
        segment.last_offset = offset
        if position >= segment.next_index_position:
            segment.add_index(offset, position, timestamp_ms, self._interval)
        elif timestamp_ms > segment.timestamp_max:
            segment.timestamp_max = timestamp_ms
            segment.index_timestamps[-1] = timestamp_ms
        self.next_offset = offset + 1
        if not self._dirty:
            self._make_dirty()
        return offset

    def _skip_to(self, offset: int) -> None:
        start = self.next_offset
        if offset < start:
            raise ValueError(f"offset {offset} is below next_offset {start}")
        self._lose(start, offset)  # a gap: those offsets never exist

    def _roll(self, base_offset: int) -> Segment:
        segment = Segment(self.directory / segment_name(base_offset), base_offset)
        if self._tag_index:
            sealed = self._head
            segment.tags = set()
            if self.durable and sealed.tags is not None:
                self._tags_owed.append(sealed)
        self._add_segment(segment)
        self._store.metrics.segments += 1
        return segment

    def _add_segment(self, segment: Segment) -> None:
        self._segments.append(segment)
        self._bases.append(segment.base_offset)
        self._head = segment
        self._timestamps_running = None

    def _make_dirty(self) -> None:
        self._dirty = True
        self._store._partition_dirty(self)

    def _lose(self, start: int, end: int) -> None:
        """Offsets [start, end) hold no record (a gap, a dropped write, damage): acked."""
        if start >= end:
            return
        if self._acks.add_range(start, end) and self.durable:
            self._pending_acks.add(start, end)
        self._note_acked(start, end - 1)

    # -- acks ---------------------------------------------------------------------------------

    def ack(self, offset: int) -> None:
        """Ack one offset (idempotent; offsets that never existed are ignored)."""
        if self._counters:
            self._counters.pop(offset, None)
            self._pending_counters.pop(offset, None)
        if 0 <= offset < self.next_offset and self._acks.add(offset):
            if self.durable:
                self._pending_acks.add(offset, offset + 1)
            if offset < self._check_low:
                self._check_low = offset
            if offset > self._check_high:
                self._check_high = offset
            if not self._dirty:
                self._make_dirty()

    def ack_range(self, start: int, end: int) -> None:
        """Ack every offset in [start, end)."""
        start = max(start, 0)
        end = min(end, self.next_offset)
        if self._counters:
            self._drop_counters(start, end)
        if start < end and self._acks.add_range(start, end):
            if self.durable:
                self._pending_acks.add(start, end)
            self._note_acked(start, end - 1)

    def _note_acked(self, low: int, high: int) -> None:
        if low < self._check_low:
            self._check_low = low
        if high > self._check_high:
            self._check_high = high
        if not self._dirty:
            self._make_dirty()

    def set_counter(self, offset: int, value: int) -> None:
        """Keep a number with a live record until it is acked (a durable log journals it,
        so a restart finds it); what it counts is the caller's business."""
        if not 0 <= offset < self.next_offset or offset in self._acks:
            return
        self._counters[offset] = value
        if self.durable:
            self._pending_counters[offset] = value
            if not self._dirty:
                self._make_dirty()

    def counter(self, offset: int) -> int:
        """The value set_counter last kept for `offset` (0 if none)."""
        return self._counters.get(offset, 0)

    def _drop_counters(self, start: int, end: int) -> None:
        for offset in [offset for offset in self._counters if start <= offset < end]:
            del self._counters[offset]
            self._pending_counters.pop(offset, None)

    def note_delivered(self, offset: int) -> None:
        """Raise the persisted "delivered" watermark to offset + 1."""
        below = min(offset + 1, self.next_offset)
        if below > self.delivered_below:
            self.delivered_below = below
            if self.durable and not self._dirty:
                self._make_dirty()

    # -- reading ------------------------------------------------------------------------------

    def read(
        self,
        offset: int,
        max_records: int = 256,
        max_bytes: int | None = None,
        *,
        include_acked: bool = False,
    ) -> list[Record]:
        """Live records with offset >= `offset`, in order, written or not.

        At most max_records, and about max_bytes of payload (default read_bytes_max): the
        record that reaches it is included, so at least one record is returned if one exists.
        include_acked: acked records still stored are returned too (a keep_acked log's
        replay; records dropped by drop_before are not).
        """
        budget = self._read_bytes_max if max_bytes is None else max_bytes
        if include_acked:
            return self._read_stored(offset, max_records, budget)
        acks = self._acks
        next_offset = self.next_offset
        start = acks.next_unacked(max(offset, 0))
        if start >= next_offset or max_records <= 0:
            return []
        segments = self._segments
        segment = self._cursor_segment
        if (
            segment is not None
            and self._cursor_low <= offset <= self._cursor_high
            and not segment.deleted
            and self._cursor_position <= segment.size
        ):
            index = self._cursor_index
            if index >= len(segments) or segments[index] is not segment:
                index = segments.index(segment)
            position, after = self._cursor_position, self._cursor_after
        else:
            index = max(bisect_right(self._bases, start) - 1, 0)
            segment = segments[index]
            position, after = segment.position_for(start)
        records: list[Record] = []
        total = 0
        average = (segment.size - FILE_HEADER_BYTES) // max(segment.count, 1)
        want = min(
            self._read_bytes_max,
            max(READ_CHUNK_BYTES_MIN, min(budget, average * max_records) + RECORD_HEADER_BYTES),
        )
        low = start  # the cursor left behind serves reads from any offset in [low, after + 1]
        new_record = tuple.__new__  # Record(...) runs a Python-level __new__: twice the cost
        acked_start, acked_end = acks.acked_range_from(start)  # the next acked range ahead
        while True:
            skip_to = -1
            for _, kind, record_offset, timestamp_ms, payload, stop in self._records(
                segment, position, after, want
            ):
                position = stop
                after = record_offset
                if record_offset < start:
                    continue
                if record_offset >= acked_start:
                    if record_offset >= acked_end:
                        acked_start, acked_end = acks.acked_range_from(record_offset)
                    if acked_start <= record_offset:
                        if acked_end - record_offset > SKIP_ACKED_RECORDS:
                            skip_to = acked_end
                            break
                        continue
                records.append(
                    new_record(Record, (record_offset, kind, timestamp_ms, bytes(payload)))
                )
                total += len(payload)
                if len(records) >= max_records or total >= budget:
                    self._set_cursor(segment, index, position, after, after + 1)
                    return records
                low = record_offset + 1
            if skip_to >= 0:
                if skip_to >= next_offset:
                    self._cursor_segment = None
                    return records
                start = low = skip_to
                index = max(bisect_right(self._bases, start) - 1, 0)
                segment = segments[index]
                position, after = segment.position_for(start)
                continue
            if index + 1 >= len(segments):
                break
            index += 1
            segment = segments[index]
            position, after = FILE_HEADER_BYTES, segment.base_offset - 1
        self._set_cursor(segment, index, position, after, low)
        return records

    def _set_cursor(
        self, segment: Segment, index: int, position: int, after: int, low: int
    ) -> None:
        self._cursor_segment = segment
        self._cursor_index = index
        self._cursor_position = position
        self._cursor_after = after
        self._cursor_low = min(low, after + 1)
        self._cursor_high = after + 1

    def _read_stored(self, offset: int, max_records: int, budget: int) -> list[Record]:
        """read(include_acked=True): every stored record from `offset` on, acked or not.

        Its own cursor serves consecutive reads (each from the offset after the last record
        returned) without a seek; the live-record cursor is left alone."""
        start = max(offset, self.first_offset)
        if start >= self.next_offset or max_records <= 0:
            return []
        segments = self._segments
        cursor = self._replay_cursor
        if (
            cursor is not None
            and cursor[2] + 1 == start
            and not cursor[0].deleted
            and cursor[1] <= cursor[0].size
        ):
            segment, position, after = cursor
            index = segments.index(segment)
        else:
            index = max(bisect_right(self._bases, start) - 1, 0)
            segment = segments[index]
            position, after = segment.position_for(start)
        average = (segment.size - FILE_HEADER_BYTES) // max(segment.count, 1)
        want = min(
            self._read_bytes_max,
            max(READ_CHUNK_BYTES_MIN, min(budget, average * max_records) + RECORD_HEADER_BYTES),
        )
        records: list[Record] = []
        total = 0
        new_record = tuple.__new__
        while True:
            for _, kind, record_offset, timestamp_ms, payload, stop in self._records(
                segment, position, after, want
            ):
                position = stop
                after = record_offset
                if record_offset < start:
                    continue
                records.append(
                    new_record(Record, (record_offset, kind, timestamp_ms, bytes(payload)))
                )
                total += len(payload)
                if len(records) >= max_records or total >= budget:
                    self._replay_cursor = (segment, position, after)
                    return records
            if index + 1 >= len(segments):
                break
            index += 1
            segment = segments[index]
            position, after = FILE_HEADER_BYTES, segment.base_offset - 1
        self._replay_cursor = (segment, position, after)
        return records

    def _records(
        self, segment: Segment, position: int, after: int, want: int
    ) -> Iterator[ScannedRecord]:
        """(position, kind, offset, timestamp_ms, payload, end position) of the records of
        `segment` from byte `position` on, written then pending. `after`: an offset known to precede
        the record at `position` (records must have greater offsets)."""
        written = segment.written_size
        if position < written:
            fd = self._fd(segment)
            before = self._offset_bound(segment)
            while position < written:
                scanner = RecordScanner(
                    self._fs,
                    fd,
                    position,
                    written,
                    after_offset=after,
                    before_offset=before,
                    chunk_bytes=want,
                )
                yield from scanner
                if scanner.complete:
                    break
                after = scanner.last_offset
                position = self._damaged(segment, scanner.position, after, before)
        pending = segment.pending
        if pending:
            # where each pending record ends, extended as records arrive: a reader that keeps
            # up with the writer finds its place by bisection, not by walking the buffer
            base = max(written, FILE_HEADER_BYTES)
            ends = segment.pending_ends
            at = ends[-1] if ends else base
            for record in pending[len(ends) :]:
                at += len(record)
                ends.append(at)
            # position is a record boundary: the record after the one that ends there
            index = 0 if position <= base else bisect_left(ends, position) + 1
            at = ends[index - 1] if index else base
            for record in pending[index:]:
                stop = at + len(record)
                _, _, kind, offset, timestamp_ms = _unpack_header(record)
                yield at, kind, offset, timestamp_ms, memoryview(record)[RECORD_HEADER_BYTES:], stop
                at = stop

    def _fd(self, segment: Segment) -> int:
        handle = segment.handle
        if handle is None:
            handle = segment.handle = FileHandle(
                segment.path, self._fs.open_append(segment.path), durable=self.durable
            )
        return handle.fd

    def _offset_bound(self, segment: Segment) -> int:
        """Every written record of `segment` has an offset below this."""
        if segment.pending:
            return int(_unpack_header(segment.pending[0])[3])
        if segment is self._head:
            return self.next_offset
        return self._segments[self._segments.index(segment) + 1].base_offset

    def _damaged(self, segment: Segment, bad: int, after: int, before: int) -> int:
        """A read met an invalid record at byte `bad`: quarantine it (once), lose the offsets
        it may have held, and return where valid records resume."""
        known = segment.damage.get(bad)
        if known is not None:
            return known
        fd = self._fd(segment)
        written = segment.written_size
        resume = resync(self._fs, fd, bad + 1, written, after, before)
        segment.damage[bad] = resume
        next_good = before
        if resume < written:
            next_good = int(_unpack_header(self._fs.pread(fd, RECORD_HEADER_BYTES, resume))[3])
        self._quarantine(segment, fd, bad, resume, (after + 1, next_good), None)
        self._lose(after + 1, next_good)
        return resume

    def _quarantine(
        self,
        segment: Segment,
        fd: int,
        start: int,
        end: int,
        lost: tuple[int, int],
        report: LogRecovery | None,
    ) -> None:
        store = self._store
        target = free_name(
            self._fs,
            store.quarantine_dir,
            f"{self.directory.parent.name}-p{self.index}-{segment.path.stem}-{start}.bin",
        )
        try:
            copy_range(self._fs, fd, start, end, target)
        except OSError as error:
            log.error("could not copy damaged bytes to %s: %s", target, error)
        log.error(
            "log %r partition %d segment %s: bytes [%d, %d) are damaged and copied to %s;"
            " offsets [%d, %d) are lost (last good offset %d, next good offset %d)",
            self.log.name,
            self.index,
            segment.path.name,
            start,
            end,
            target,
            lost[0],
            lost[1],
            lost[0] - 1,
            lost[1],
        )
        store.metrics.quarantined_bytes += end - start
        store.metrics.quarantined_records += max(lost[1] - lost[0], 0)
        if report is not None:
            report.quarantined.append(
                Quarantined(self.index, segment.path.name, start, end, (lost[0], lost[1]))
            )

    def _first_kept_index(self) -> int:
        """The index of the first segment not dropped (drop_before)."""
        if self._dropped_below <= self._bases[0]:
            return 0
        return max(bisect_right(self._bases, self._dropped_below) - 1, 0)

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first offset whose record has timestamp >= timestamp_ms; next_offset if none.

        Bisects the segments by the running maximum of their timestamps, then the segment's
        sparse index, then scans one index block: no more I/O than one read. Timestamps
        need not be ordered (a clock stepped back): the answer is still the first record
        in offset order whose timestamp is >= timestamp_ms.
        """
        segments = self._segments
        running = self._timestamps_running
        if running is None:
            running = []
            highest = 0
            for segment in segments[:-1]:
                if segment.count and segment.timestamp_max > highest:
                    highest = segment.timestamp_max
                running.append(highest)
            self._timestamps_running = running
        # no segment before `first` holds a record stamped >= timestamp_ms
        first = bisect_left(running, timestamp_ms, self._first_kept_index())
        for segment in segments[first:]:
            if not segment.count or segment.timestamp_max < timestamp_ms:
                continue
            located = segment.position_for_timestamp(timestamp_ms)
            if located is None:
                continue
            position, after = located
            for _, _, offset, record_timestamp_ms, _, _ in self._records(
                segment, position, after, 2 * self._interval
            ):
                if record_timestamp_ms >= timestamp_ms:
                    return offset
        return self.next_offset

    def next_tagged_offset(self, offset: int, tags: frozenset[bytes], untagged: bool) -> int:
        """The first offset >= `offset` in a segment that may hold a record tagged with one of
        `tags` (or an untagged record, if `untagged`); next_offset if none (`offset` if it is
        past next_offset). Reads no file: a segment whose tag set is unknown (recovered
        without a valid tag file, the newest at recovery, a log without tag_index, a set
        grown past its bounds) counts as holding anything."""
        next_offset = self.next_offset
        if offset >= next_offset:
            return offset
        segments = self._segments
        index = max(bisect_right(self._bases, offset) - 1, self._first_kept_index())
        for segment in segments[index:]:
            if segment.may_hold(tags, untagged):
                return max(offset, segment.base_offset, self._dropped_below)
        return next_offset

    def segment_spans(self) -> list[SegmentSpan]:
        """The segments still stored (not dropped), oldest first: what retention weighs."""
        segments = self._segments
        last = len(segments) - 1
        return [
            SegmentSpan(
                segment.base_offset,
                segments[index + 1].base_offset if index < last else self.next_offset,
                segment.timestamp_max if segment.count else 0,
                segment.size,
            )
            for index, segment in enumerate(segments)
            if index >= self._first_kept_index()
        ]

    def drop_before(self, offset: int) -> int:
        """Drop every sealed segment whose records all lie below `offset` (never the newest).

        Their offsets count as acked at once (reads, live_count, first_offset,
        segment_spans see them gone); the files go once the acks are in the ack journal
        (and, on a keep_acked log, a DROPPED record, so that a restart removes any file
        still there). Returns how many live (unacked) records were dropped: live_count
        fell by that much."""
        segments = self._segments
        index = self._first_kept_index()
        while index < len(segments) - 1 and segments[index + 1].base_offset <= offset:
            index += 1
        start = self.first_offset
        below = segments[index].base_offset
        if below <= start:
            return 0
        acked = self._acks.count
        self.ack_range(start, below)
        self._dropped_below = below
        self._note_acked(start, below - 1)  # the segments are checked for deletion
        return self._acks.count - acked

    # -- writing (Store.write_pending) --------------------------------------------------------

    def _write_pending(self) -> tuple[tuple[int, int] | None, OSError | None]:
        """Write buffered records and journal entries; delete acked segments.

        Returns the offsets lost to a failed segment write and the first error.
        """
        self._dirty = False
        lost: tuple[int, int] | None = None
        error: OSError | None = None
        segments = self._segments
        first = len(segments)
        while first and segments[first - 1].pending:
            first -= 1
        if self._tags_owed:
            # before the next segment's first bytes, so that one sync batch covers both
            self._write_tag_files()
        written = self.next_offset
        for index in range(first, len(segments)):
            segment = segments[index]
            if index and self._ordered and not self._sealed_durable(segments[index - 1]):
                # A segment gets bytes only once the one before it is durable, so a crash
                # can tear only the newest segment (recovery cuts that tail quietly; damage in
                # a sealed segment is then always real damage). Its records wait in memory,
                # readable, for the sync batch in flight or the next one: once per roll.
                written = int(_unpack_header(segment.pending[0])[3])
                self._store._held_back()
                break
            try:
                self._write_segment(segment)
            except OSError as failure:
                error = failure
                lost = self._drop_from(index, failure)
                break
        if self._tags_owed:  # a sealed segment written just now
            self._write_tag_files()
        if self.written_offset != written:
            self.written_offset = written
            self._store._partition_written(self)
        if self._journal is not None and not self.compacting:
            try:
                self._write_journal(self._journal)
            except OSError as failure:
                self._store.metrics.write_errors += 1
                log.error(
                    "log %r partition %d: ack journal write failed (%s); retried later",
                    self.log.name,
                    self.index,
                    failure,
                )
                error = error or failure
                self._store._retry_later(self)
        if self._check_high >= 0:
            self._delete_acked_segments()
        return lost, error

    def _write_tag_files(self) -> None:
        """Write the tag file of each sealed segment now wholly written (tags.py)."""
        waiting = []
        for segment in self._tags_owed:
            if segment.deleted or segment is self._head or segment.tags is None:
                continue  # gone, or the newest again after a failed write (owed at its roll)
            if segment.pending:
                waiting.append(segment)
            else:
                self._write_tag_file(segment, segment.tags)
        self._tags_owed = waiting

    def _write_tag_file(self, segment: Segment, tags: set[bytes]) -> None:
        fs = self._fs
        store = self._store
        path = self.directory / tags_name(segment.base_offset)
        data = encode_tags(segment.base_offset, segment.last_offset, tags, segment.untagged)
        try:
            fd = fs.open_new(path)
        except OSError as error:
            log.warning(
                "could not create %s (the segment's tags count as unknown): %s", path, error
            )
            return
        handle = FileHandle(path, fd, durable=True)
        store.entries_changed(self.directory, durable=True)
        try:
            fs.write(fd, data)
        except OSError as error:
            # a torn tag file never validates: the segment's tags count as unknown
            log.warning("could not write %s (its segment's tags are unknown): %s", path, error)
            store.release(handle)
            return
        handle.close_when_released = True  # closed once a sync batch has fsynced it
        store.written(handle)

    def _sealed_durable(self, segment: Segment) -> bool:
        return not segment.pending and segment.written_last_offset < self.durable_offset

    def _write_segment(self, segment: Segment) -> None:
        data = b"".join(segment.pending)
        if segment.written_size == 0:
            data = encode_file_header(SEGMENT_MAGIC, segment.base_offset) + data
        handle = segment.handle
        if handle is None:
            handle = segment.handle = FileHandle(
                segment.path, self._fs.open_append(segment.path), durable=self.durable
            )
            self._store.entries_changed(self.directory, durable=self.durable)
        self._fs.write(handle.fd, data)
        segment.written_size += len(data)
        segment.written_count = segment.count
        segment.written_last_offset = segment.last_offset
        segment.pending = []
        segment.pending_ends = []
        self._store.metrics.stored_bytes += len(data)
        self._store.written(handle)

    def _drop_from(self, index: int, error: OSError) -> tuple[int, int]:
        """The write of segments[index] failed: cut the file back, forget its buffered
        records and those of any later segment; their offsets count as absent."""
        store = self._store
        segment = self._segments[index]
        first_lost = int(_unpack_header(segment.pending[0])[3])
        if segment.handle is not None:
            try:
                self._fs.truncate(segment.handle.fd, segment.written_size)
            except OSError as truncate_error:
                store.mark_broken(truncate_error)
        segment.rollback(self._interval)
        for later in self._segments[index + 1 :]:
            later.deleted = True  # never written: no file was created
            store.metrics.segments -= 1
        del self._segments[index + 1 :]
        del self._bases[index + 1 :]
        self._head = segment
        self._timestamps_running = None
        lost = (first_lost, self.next_offset)
        self._lose(*lost)
        store.metrics.write_errors += 1
        log.error(
            "log %r partition %d: writing segment %s failed (%s); offsets [%d, %d) are lost",
            self.log.name,
            self.index,
            segment.path.name,
            error,
            lost[0],
            lost[1],
        )
        return lost

    def _write_journal(self, journal: JournalFile) -> None:
        dropped = self._dropped_below
        if (
            self._keep_acked
            and dropped > self._journaled_dropped
            and dropped <= self.durable_offset
        ):
            # before the acks of the dropped offsets: replayed alone, it implies them
            journal.append(DROPPED, encode_dropped(dropped))
            self._journaled_dropped = dropped
        ready = self._pending_acks.take_below(self.durable_offset)
        for at in range(0, len(ready), JOURNAL_RANGES_PER_RECORD):
            journal.append(ACK_RANGES, encode_ranges(ready[at : at + JOURNAL_RANGES_PER_RECORD]))
        delivered = self.delivered_below
        if delivered > self._journaled_delivered:
            journal.append(DELIVERED, encode_delivered(delivered))
            self._journaled_delivered = delivered
        for payload in encode_counters(self._pending_counters.items()):
            journal.append(COUNTERS, payload)
        self._pending_counters.clear()
        if journal.pending:
            journal.write()  # on failure the records stay buffered and are retried
        # Compact past the limit, unless the snapshot itself would be half as large (with
        # that many ranges, compacting again and again would gain little).
        snapshot_bytes = 64 + RANGE.size * self._acks.range_count
        if journal.size > max(self._store.settings.ack_journal_bytes_max, 2 * snapshot_bytes):
            self._store._compaction_wanted(self)

    def _delete_acked_segments(self) -> None:
        segments = self._segments
        journal = self._journal
        if journal is not None and (journal.pending or self.compacting):
            return  # acks not yet in the journal must not lose their records first
        limit = self.durable_offset if self.durable else self.written_offset
        if self._keep_acked:
            # only what drop_before dropped, once a restart would drop it too
            kept_from = self._journaled_dropped if self.durable else self._dropped_below
            limit = min(limit, kept_from)
        acks = self._acks
        low, high = self._check_low, self._check_high
        index = max(bisect_right(self._bases, low) - 1, 0)
        while index < len(segments) - 1:
            segment = segments[index]
            if segment.base_offset > high:
                break
            end = segments[index + 1].base_offset
            if end > limit:
                break
            if (
                not segment.pending
                and acks.covers(segment.base_offset, end)
                and not self._pending_acks.overlaps(segment.base_offset, end)
            ):
                self._delete_segment(index)
            else:
                index += 1
        if not self._pending_acks and not self._dropped_segments_left():
            self._check_low, self._check_high = OFFSET_LIMIT, -1

    def _dropped_segments_left(self) -> bool:
        """A sealed segment that drop_before dropped is still there (to delete once safe)."""
        segments = self._segments
        return len(segments) > 1 and segments[1].base_offset <= self._dropped_below

    def _delete_segment(self, index: int) -> None:
        store = self._store
        segment = self._segments.pop(index)
        del self._bases[index]
        self._timestamps_running = None
        segment.deleted = True
        if segment.handle is not None:
            store.release(segment.handle)
            segment.handle = None
        try:
            self._fs.remove(segment.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not remove acked segment %s: %s", segment.path, error)
        if self._tag_index and self.durable:
            # after the segment: a tag file left alone is removed at recovery, a segment
            # left without one merely has unknown tags
            try:
                self._fs.remove(self.directory / tags_name(segment.base_offset))
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("could not remove the tag file of %s: %s", segment.path, error)
        store.entries_changed(self.directory, durable=self.durable)
        store.metrics.segments -= 1
        store.metrics.stored_bytes -= segment.written_size
        if self._cursor_segment is segment:
            self._cursor_segment = None

    # -- ack journal compaction (Store.begin_sync / sync_files / end_sync) --------------------

    def _begin_compaction(self) -> tuple[Path, Path, bytes] | None:
        """The snapshot that replaces the ack journal: acks below durable_offset."""
        journal = self._journal
        if journal is None or self.compacting or self.deleted:
            return None
        below, ranges = self._acks.encoded_below(self.durable_offset)
        delivered = self.delivered_below
        journal.pending.clear()  # what they say is in the snapshot
        sequence = journal.next_sequence
        journal.next_sequence += 1
        data = encode_file_header(ACK_JOURNAL_MAGIC) + encode_record(
            SNAPSHOT, sequence, 0, encode_snapshot(below, delivered, ranges)
        )
        # The snapshot clears the counters on replay: the live ones follow it.
        self._pending_counters.clear()
        for payload in encode_counters(self._counters.items()):
            sequence = journal.next_sequence
            journal.next_sequence += 1
            data += encode_record(COUNTERS, sequence, 0, payload)
        if self._journaled_dropped:
            sequence = journal.next_sequence
            journal.next_sequence += 1
            data += encode_record(DROPPED, sequence, 0, encode_dropped(self._journaled_dropped))
        self._journaled_delivered = max(self._journaled_delivered, delivered)
        self.compacting = True
        return journal.path.with_name(journal.path.name + TMP_SUFFIX), journal.path, data

    def _end_compaction(self, size: int | None) -> None:
        """The compaction finished (size of the new journal) or failed (None)."""
        self.compacting = False
        if self._journal is not None and size is not None:
            self._journal.replaced(size)
        self._after_durable()

    def _after_durable(self) -> None:
        """durable_offset rose: acks waiting for it can be written now."""
        if self.deleted or self._dirty:
            return
        if (
            self.written_offset < self.next_offset  # a new segment waited for this
            or (self._pending_acks and self._pending_acks.lowest() < self.durable_offset)
            or self.delivered_below > self._journaled_delivered
            or self._pending_counters
            or self._dropped_segments_left()
        ):
            self._make_dirty()

    def _stored_bytes(self) -> int:
        return sum(segment.written_size for segment in self._segments)

    def _close(self) -> None:
        store = self._store
        for segment in self._segments:
            if segment.handle is not None:
                store.release(segment.handle)
                segment.handle = None
        if self._journal is not None:
            self._journal.close()

    # -- recovery -----------------------------------------------------------------------------

    @classmethod
    def create(cls, log: Log, index: int, directory: Path, store: Store) -> Partition:
        partition = cls(log, index, directory, store)
        segment = Segment(directory / segment_name(0), 0)
        if log.tag_index:
            segment.tags = set()
        partition._add_segment(segment)
        store.metrics.segments += 1
        return partition

    @classmethod
    def recover(
        cls,
        log: Log,
        index: int,
        directory: Path,
        store: Store,
        discard_kinds: frozenset[int],
        report: LogRecovery,
    ) -> Partition:
        partition = cls(log, index, directory, store)
        partition._recover(discard_kinds, report)
        return partition

    def _recover(self, discard_kinds: frozenset[int], report: LogRecovery) -> None:
        store = self._store
        fs = self._fs
        label = f"log {self.log.name!r} partition {self.index}"
        replay = AckReplay()
        if self._journal is not None:

            def apply(kind: int, _sequence: int, payload: bytes) -> None:
                replay.apply(kind, payload)

            found = recover_journal(
                store,
                self._journal.path,
                ACK_JOURNAL_MAGIC,
                apply,
                store.quarantine_dir,
                f"{label} ack journal",
            )
            self._journal = JournalFile(
                store,
                self._journal.path,
                ACK_JOURNAL_MAGIC,
                durable=True,
                size=found.size,
                next_sequence=found.next_sequence,
            )
            report.truncated_bytes += found.truncated_bytes
            store.metrics.quarantined_bytes += found.damaged_bytes
        bases = []
        tag_files: dict[int, str] = {}
        for name in fs.listdir(self.directory):
            base = parse_segment_name(name)
            if base is not None:
                bases.append(base)
            elif name.endswith(TMP_SUFFIX):
                fs.remove(self.directory / name)  # an unfinished compaction
            elif (tagged := parse_tags_name(name)) is not None:
                tag_files[tagged] = name
            elif name != ACK_JOURNAL_NAME:
                log.warning("%s: ignoring unexpected file %s", label, name)
        bases.sort()
        dropped = replay.dropped_below
        if dropped:
            bases = self._remove_dropped(bases, dropped)
        previous = bases[0] - 1 if bases else -1  # the last valid offset so far
        gaps: list[tuple[int, int]] = []
        discarded: list[tuple[int, int]] = []
        fsync = self.durable and store.settings.fsync.mode != "never"
        for number, base in enumerate(bases):
            newest = number == len(bases) - 1
            before = OFFSET_LIMIT if newest else bases[number + 1]
            segment = self._recover_segment(
                base, previous, before, newest, discard_kinds, fsync, report, gaps, discarded
            )
            if segment is None:
                continue
            self._add_segment(segment)
            if segment.count:
                previous = segment.last_offset
        next_offset = max(
            previous + 1,
            replay.highest_offset,
            replay.delivered_below,
            bases[-1] if bases else 0,
        )
        if not self._segments:
            self._add_segment(Segment(self.directory / segment_name(next_offset), next_offset))
        head = self._head
        if head.written_size and fs.exists(head.path) and fs.size(head.path) > head.written_size:
            # an older segment became the newest (the newest was unreadable): cut the bytes
            # after its last valid record, which were quarantined, before appending to it
            fd = fs.open_append(head.path)
            try:
                fs.truncate(fd, head.written_size)
            finally:
                fs.close(fd)
        self._recover_tags(tag_files, label)
        acks = replay.acks
        acks.add_range(0, max(self._segments[0].base_offset, dropped))
        self._dropped_below = self._journaled_dropped = dropped
        for start, end in gaps:
            acks.add_range(start, end)
        acks.add_range(previous + 1, next_offset)
        self._acks = acks
        self._counters = {
            offset: value
            for offset, value in replay.counters.items()
            if offset < next_offset and offset not in acks
        }
        self.next_offset = self.written_offset = self.durable_offset = next_offset
        self.delivered_below = self._journaled_delivered = min(replay.delivered_below, next_offset)
        for start, end in discarded:
            if acks.add_range(start, end) and self.durable:
                self._pending_acks.add(start, end)
        self._check_low, self._check_high = 0, next_offset
        store.metrics.segments += len(self._segments)
        store.metrics.stored_bytes += sum(s.written_size for s in self._segments)
        report.segments += len(self._segments)
        report.records += sum(s.count for s in self._segments)
        report.live += self.live_count
        if len(self._segments) > 1 or self._pending_acks:
            self._make_dirty()

    def _remove_dropped(self, bases: list[int], dropped: int) -> list[int]:
        """Remove the segments a DROPPED record covers that are still there (the crash came
        before their deletion); never the newest. Returns the bases left."""
        keep = 0
        while keep < len(bases) - 1 and bases[keep + 1] <= dropped:
            keep += 1
        for base in bases[:keep]:
            for name in (segment_name(base), tags_name(base)):
                with contextlib.suppress(FileNotFoundError):
                    self._fs.remove(self.directory / name)
        if keep:
            self._store.entries_changed(self.directory, durable=self.durable)
        return bases[keep:]

    def _recover_tags(self, tag_files: dict[int, str], label: str) -> None:
        """Give each sealed segment of a tag_index log the set its tag file holds, if the
        file is valid and covers the segment; remove the tag files of the newest segment
        (appended to again: its set is unknown) and of segments that are gone."""
        if self._tag_index:
            for segment in self._segments:
                segment.tags = None  # unknown unless a valid tag file says otherwise
        if not tag_files:
            return
        fs = self._fs
        sealed = {segment.base_offset: segment for segment in self._segments[:-1]}
        removed = False
        for base, name in tag_files.items():
            path = self.directory / name
            owner = sealed.get(base)
            if owner is not None and self._tag_index:
                try:
                    fd = fs.open_read(path)
                    try:
                        data = fs.pread(fd, fs.file_size(fd), 0)
                    finally:
                        fs.close(fd)
                    found_base, last_offset, tags, untagged = decode_tags(data)
                    if found_base != base:
                        raise FormatError(f"names segment {found_base}")
                    if last_offset < owner.last_offset:
                        raise FormatError(
                            f"covers offsets up to {last_offset}, the segment's last is"
                            f" {owner.last_offset}"
                        )
                except (OSError, FormatError) as error:
                    log.warning(
                        "%s: tag file %s is not usable (%s); its segment may hold any tag",
                        label,
                        name,
                        error,
                    )
                else:
                    owner.tags = tags
                    owner.untagged = untagged
                    continue
            try:
                fs.remove(path)
                removed = True
            except OSError as error:
                log.warning("%s: could not remove tag file %s: %s", label, name, error)
        if removed:
            self._store.entries_changed(self.directory, durable=self.durable)

    def _recover_segment(
        self,
        base: int,
        previous: int,
        before: int,
        newest: bool,
        discard_kinds: frozenset[int],
        fsync: bool,
        report: LogRecovery,
        gaps: list[tuple[int, int]],
        discarded: list[tuple[int, int]],
        *,
        repair: bool = True,
    ) -> Segment | None:
        store = self._store
        fs = self._fs
        path = self.directory / segment_name(base)
        fd = fs.open_append(path)
        repaired = False
        try:
            size = fs.file_size(fd)
            if newest and self._torn_at_creation(fd, size, base):
                log.warning(
                    "log %r partition %d: removing %s, torn while being created (%d bytes)",
                    self.log.name,
                    self.index,
                    path.name,
                    size,
                )
                report.truncated_bytes += size
                fs.remove(path)
                store.entries_changed(self.directory, durable=self.durable)
                return None
            try:
                if decode_file_header(fs.pread(fd, FILE_HEADER_BYTES, 0), SEGMENT_MAGIC) != base:
                    raise FormatError("the header's base offset differs from the file name")
            except FormatError as error:
                self._quarantine_whole(path, size, base, before, error, report)
                return None
            segment = Segment(path, base)
            found = scan(
                fs,
                fd,
                segment,
                size,
                previous_offset=previous,
                before_offset=before,
                newest=newest,
                interval=self._interval,
                discard_kinds=discard_kinds,
            )
            if newest and found.valid_end < size:
                log.info(
                    "log %r partition %d: torn tail of %d bytes truncated from %s",
                    self.log.name,
                    self.index,
                    size - found.valid_end,
                    path.name,
                )
                fs.truncate(fd, found.valid_end)
                report.truncated_bytes += size - found.valid_end
            for damage in found.damage:
                next_good = damage.offset_after if damage.offset_after >= 0 else before
                self._quarantine(
                    segment,
                    fd,
                    damage.byte_start,
                    damage.byte_end,
                    (damage.offset_before + 1, next_good),
                    report,
                )
            if found.damage and repair:
                repaired = self._repair(fd, path, found.damage, found.valid_end, fsync)
            if fsync and not repaired:
                fs.fsync(fd)
        finally:
            fs.close(fd)
        if repaired:  # scan the rewritten file: the same records, no damage
            return self._recover_segment(
                base,
                previous,
                before,
                newest,
                discard_kinds,
                fsync,
                report,
                gaps,
                discarded,
                repair=False,
            )
        gaps.extend(found.gaps)
        discarded.extend(found.discarded)
        return segment

    def _torn_at_creation(self, fd: int, size: int, base: int) -> bool:
        """A newest segment whose header is not whole and valid, and which holds no valid
        record either: its creation was never made durable (a synced header never tears)."""
        if size < FILE_HEADER_BYTES:
            return True
        try:
            if decode_file_header(self._fs.pread(fd, FILE_HEADER_BYTES, 0), SEGMENT_MAGIC) == base:
                return False
        except FormatError:
            pass
        return resync(self._fs, fd, FILE_HEADER_BYTES, size, base - 1, OFFSET_LIMIT) >= size

    def _repair(
        self, fd: int, path: Path, damage: list[Damage], valid_end: int, fsync: bool
    ) -> bool:
        """Rewrite a sealed segment without its damaged ranges (already copied to quarantine),
        so that the damage is reported once, not at every start. False if that failed."""
        fs = self._fs
        keep = []
        position = FILE_HEADER_BYTES
        for found in damage:
            keep.append((position, found.byte_start))
            position = found.byte_end
        keep.append((position, valid_end))
        temporary = path.with_name(path.name + TMP_SUFFIX)
        try:
            out = fs.open_new(temporary)
            try:
                fs.write(out, fs.pread(fd, FILE_HEADER_BYTES, 0))
                for start, end in keep:
                    while start < end:
                        data = fs.pread(fd, min(end - start, SCAN_CHUNK_BYTES), start)
                        if not data:
                            break
                        fs.write(out, data)
                        start += len(data)
                if fsync:
                    fs.fsync(out)
            finally:
                fs.close(out)
            fs.rename(temporary, path)
            if fsync:
                fs.fsync_dir(self.directory)
        except OSError as error:
            log.error("could not rewrite %s without its damaged bytes: %s", path, error)
            return False
        return True

    def _quarantine_whole(
        self,
        path: Path,
        size: int,
        base: int,
        before: int,
        error: Exception,
        report: LogRecovery,
    ) -> None:
        store = self._store
        target = free_name(
            self._fs,
            store.quarantine_dir,
            f"{self.directory.parent.name}-p{self.index}-{path.stem}-0.bin",
        )
        self._fs.rename(path, target)
        store.entries_changed(self.directory, durable=self.durable)
        end = before if before < OFFSET_LIMIT else base  # the newest: how many is unknown
        log.error(
            "log %r partition %d segment %s: unreadable header (%s); the whole file (%d bytes)"
            " is moved to %s; offsets from %d%s are lost",
            self.log.name,
            self.index,
            path.name,
            error,
            size,
            target,
            base,
            f" to {end}" if end > base else " on",
        )
        store.metrics.quarantined_bytes += size
        store.metrics.quarantined_records += max(end - base, 0)
        report.quarantined.append(Quarantined(self.index, path.name, 0, size, (base, end)))

    # -- checks (tests and debug runs) --------------------------------------------------------

    def check(self) -> None:
        """Pair assertions: recount what the counters claim, re-reading every record."""
        assert self.durable_offset <= self.written_offset <= self.next_offset
        assert self._acks.acked_below <= self.next_offset
        assert self._bases == sorted(set(self._bases))
        assert self._bases == [segment.base_offset for segment in self._segments]
        assert self._head is self._segments[-1]
        live = 0
        offset = 0
        while True:
            batch = self.read(offset, 4096)
            if not batch:
                break
            for record in batch:
                assert not self.is_acked(record.offset)
                live += 1
            offset = batch[-1].offset + 1
        assert live == self.live_count, (live, self.live_count)


class TaggedPartition(Partition):
    """A tag_index log's partition: append keeps each record's tag in its segment's set.

    A subclass, so that logs without tag_index pay nothing on the append path."""

    __slots__ = ()

    def append(
        self,
        kind: int,
        timestamp_ms: int,
        payload: bytes,
        offset: int | None = None,
        tag: bytes | None = None,
    ) -> int:
        offset = Partition.append(self, kind, timestamp_ms, payload, offset)
        segment = self._head  # the one that took the record (append rolls before it)
        known = segment.tags
        if known is not None:
            if tag is None:
                segment.untagged = True
            elif tag not in known:
                if len(known) >= TAGS_PER_SEGMENT_MAX or len(tag) > TAG_BYTES_MAX:
                    segment.tags = None  # bounded: from now on it may hold anything
                else:
                    known.add(tag)
        return offset


def partition_class(log: Log) -> type[Partition]:
    """The Partition class for `log`'s partitions."""
    return TaggedPartition if log.tag_index else Partition
