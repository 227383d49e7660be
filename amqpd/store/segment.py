"""One segment file of a partition: its records' sizes, counts and sparse indexes, in memory.

A segment is `<base_offset:020d>.seg` (see record.py for the byte format): a 16-byte header
(b"AMQS", version 1, flags 0, base_offset) then records in strictly increasing offset order,
every offset >= base_offset and below the next segment's base. Only the newest segment of a
partition is appended to; the others are sealed.

In memory a segment keeps no Python object per record (a tag_index log's segments keep the
set of tags their records carry, bounded: see tags.py): counts, the newest offset, the bytes
appended but not yet written (`pending`, one bytes object per record, dropped once written),
and a sparse index of one entry per `index_interval_bytes` of file: the entry's offset and
byte position (array('Q') columns), plus the running maximum timestamp up to the end of that
entry's block, which is non-decreasing and so can be bisected for "first record with
timestamp >= T" even when timestamps are not.

`scan` rebuilds all of this from the file at recovery.

Imports the standard library and store.* below it only.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

import attrs

from amqpd.store.files import FileHandle
from amqpd.store.filesystem import FileSystem
from amqpd.store.record import FILE_HEADER_BYTES, OFFSET_LIMIT
from amqpd.store.scan import RecordScanner, resync

SEGMENT_SUFFIX = ".seg"


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The base offset a segment file name stands for, or None if it is not one."""
    stem = name[: -len(SEGMENT_SUFFIX)]
    if (
        name.endswith(SEGMENT_SUFFIX)
        and len(stem) == 20
        and stem.isascii()
        and stem.isdigit()
        and int(stem) < OFFSET_LIMIT
    ):
        return int(stem)
    return None


class Segment:
    __slots__ = (
        "base_offset",
        "count",
        "damage",
        "deleted",
        "handle",
        "index_offsets",
        "index_positions",
        "index_timestamps",
        "last_offset",
        "next_index_position",
        "path",
        "pending",
        "pending_ends",
        "size",
        "tags",
        "timestamp_max",
        "untagged",
        "written_count",
        "written_last_offset",
        "written_size",
    )

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.handle: FileHandle | None = None
        self.size = FILE_HEADER_BYTES  # file bytes once every pending record is written
        self.written_size = 0  # bytes in the file (0: not created yet, header included later)
        self.pending: list[bytes] = []  # records appended, not yet written
        self.pending_ends: list[int] = []  # file position after each pending record (reads)
        self.count = 0  # records, pending included
        self.written_count = 0
        self.last_offset = base_offset - 1
        self.written_last_offset = base_offset - 1
        self.index_offsets = array("Q")
        self.index_positions = array("Q")
        self.index_timestamps = array("Q")  # running max timestamp through each block
        self.next_index_position = FILE_HEADER_BYTES
        self.timestamp_max = 0
        self.damage: dict[int, int] = {}  # damaged byte ranges found: start -> resync position
        self.deleted = False
        # tag_index logs: the tags its records carry (None: unknown, may hold anything) and
        # whether some record is untagged (see tags.py)
        self.tags: set[bytes] | None = None
        self.untagged = False

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"<Segment {self.path.name} records={self.count} bytes={self.size}>"

    def add_index(self, offset: int, position: int, timestamp_ms: int, interval: int) -> None:
        if timestamp_ms > self.timestamp_max:
            self.timestamp_max = timestamp_ms
        self.index_offsets.append(offset)
        self.index_positions.append(position)
        self.index_timestamps.append(self.timestamp_max)
        self.next_index_position = position + interval

    def position_for(self, offset: int) -> tuple[int, int]:
        """(byte position, offset) of the last index entry at or before `offset`.

        Scanning from there finds `offset` within one index interval. Before the first entry:
        the first record's position and base_offset - 1 as the offset known to precede it.
        """
        index = bisect_right(self.index_offsets, offset) - 1
        if index < 0:
            return FILE_HEADER_BYTES, self.base_offset - 1
        return int(self.index_positions[index]), int(self.index_offsets[index]) - 1

    def position_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(byte position, preceding offset) of the first index block that may hold a record
        with timestamp >= timestamp_ms; None if no record in the segment does."""
        index = bisect_left(self.index_timestamps, timestamp_ms)
        if index >= len(self.index_timestamps):
            return None
        return int(self.index_positions[index]), int(self.index_offsets[index]) - 1

    def rollback(self, interval: int) -> list[bytes]:
        """Forget the pending records (their write failed); returns them."""
        dropped = self.pending
        self.pending = []
        self.pending_ends = []
        self.count = self.written_count
        self.last_offset = self.written_last_offset
        self.size = max(self.written_size, FILE_HEADER_BYTES)
        keep = bisect_left(self.index_positions, self.size)
        del self.index_offsets[keep:]
        del self.index_positions[keep:]
        del self.index_timestamps[keep:]
        if keep:
            self.next_index_position = self.index_positions[-1] + interval
            self.timestamp_max = self.index_timestamps[-1]  # may overstate: harmless
        else:
            self.next_index_position = FILE_HEADER_BYTES
            self.timestamp_max = 0
        return dropped

    def may_hold(self, tags: frozenset[bytes], untagged: bool) -> bool:
        """Whether some record may carry one of `tags` (or none, if `untagged`)."""
        known = self.tags
        return known is None or (untagged and self.untagged) or not known.isdisjoint(tags)

    def memory_bytes(self) -> int:
        return sum(
            column.buffer_info()[1] * column.itemsize
            for column in (self.index_offsets, self.index_positions, self.index_timestamps)
        )


@attrs.define
class Damage:
    """A damaged byte range of a sealed segment that recovery skipped."""

    byte_start: int
    byte_end: int  # where the next valid record starts (or the end of the file)
    offset_before: int  # the last valid offset before the damage
    offset_after: int = -1  # the first valid offset after it (-1: not known yet)


@attrs.define
class SegmentScan:
    """What `scan` found besides what it recorded in the Segment."""

    valid_end: int  # the end of the last valid record (newest segment: truncate here)
    gaps: list[tuple[int, int]]  # offset ranges with no record: [after previous, next)
    damage: list[Damage]
    discarded: list[tuple[int, int]]  # offset ranges of records of a discarded kind


def scan(
    fs: FileSystem,
    fd: int,
    segment: Segment,
    file_size: int,
    *,
    previous_offset: int,
    before_offset: int,
    newest: bool,
    interval: int,
    discard_kinds: frozenset[int],
) -> SegmentScan:
    """Rebuild `segment` from its file (header already checked).

    previous_offset: the last offset of the partition before this segment (gaps start after
    it). Records must have base_offset <= offset < before_offset. In the newest segment the
    first invalid record ends the scan (a torn tail); in a sealed one the scan resynchronises
    on the next valid record and notes the damage.
    """
    gaps: list[tuple[int, int]] = []
    damage: list[Damage] = []
    discarded: list[tuple[int, int]] = []
    expected = previous_offset + 1  # the offset that would follow without a gap
    after = max(previous_offset, segment.base_offset - 1)
    position = FILE_HEADER_BYTES
    count = 0
    timestamp_max = segment.timestamp_max
    offsets = segment.index_offsets
    positions = segment.index_positions
    timestamps = segment.index_timestamps
    next_index_position = segment.next_index_position
    open_damage: Damage | None = None
    valid_end = position
    while True:
        scanner = RecordScanner(
            fs, fd, position, file_size, after_offset=after, before_offset=before_offset
        )
        for record_position, kind, offset, timestamp_ms, _, stop in scanner:
            if offset != expected:
                gaps.append((expected, offset))
            if open_damage is not None:
                open_damage.offset_after = offset
                open_damage = None
            if record_position >= next_index_position:
                if timestamp_ms > timestamp_max:
                    timestamp_max = timestamp_ms
                offsets.append(offset)
                positions.append(record_position)
                timestamps.append(timestamp_max)
                next_index_position = record_position + interval
            elif timestamp_ms > timestamp_max:
                timestamp_max = timestamp_ms
                timestamps[-1] = timestamp_ms
            if discard_kinds and kind in discard_kinds:
                if discarded and discarded[-1][1] == offset:
                    discarded[-1] = (discarded[-1][0], offset + 1)
                else:
                    discarded.append((offset, offset + 1))
            count += 1
            expected = offset + 1
            valid_end = stop
        after = scanner.last_offset
        if scanner.complete or newest:
            break
        bad = scanner.position
        resume = resync(fs, fd, bad + 1, file_size, after, before_offset)
        open_damage = Damage(bad, resume, after)
        damage.append(open_damage)
        segment.damage[bad] = resume
        if resume >= file_size:
            break
        position = resume
    segment.count = segment.written_count = count
    segment.last_offset = segment.written_last_offset = after
    segment.timestamp_max = timestamp_max
    segment.next_index_position = next_index_position
    segment.size = segment.written_size = valid_end
    return SegmentScan(valid_end, gaps, damage, discarded)
