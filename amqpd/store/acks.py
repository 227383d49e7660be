"""Which offsets of a partition are acked: a low-water mark plus sorted ranges above it.

`AckSet` is compact for the way queues are acked (mostly in order, a window of stragglers):
everything below `acked_below` is acked, and above it the acked offsets are disjoint,
non-adjacent [start, end) ranges kept in array('Q') columns (16 bytes per range, no Python
object per offset), in blocks of at most BLOCK_RANGES_MAX ranges so that a log acked in
random order (a delayed exchange's, whose records leave by due time) costs a bisection and
a small move per ack however many ranges there are. Offsets that never existed (gaps,
dropped writes, damage) are acked too, so "every offset below next_offset that is not acked
is a stored record" always holds, and the live count is simply next_offset minus the acked
count.

Also the payload codec of the ack journal's records (see record.py for the file format).

Imports the standard library only.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Final

from amqpd.store.record import OFFSET_LIMIT, RANGE, U64, FormatError

ACK_RANGES: Final = 1
DELIVERED: Final = 2
SNAPSHOT: Final = 3
COUNTERS: Final = 4
DROPPED: Final = 5  # keep_acked logs: the segments below an offset were dropped
COUNTERS_PER_RECORD: Final = 4096

_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_SNAPSHOT_HEAD: Final = RANGE  # acked_below u64 | delivered_below u64


# Ranges per block of an AckSet: a random ack pattern (a delayed exchange's releases) can
# leave hundreds of thousands of ranges, and an insert moves only its block's entries.
BLOCK_RANGES_MAX: Final = 1024


class AckSet:
    __slots__ = ("_ends", "_firsts", "_range_count", "_range_total", "_starts", "acked_below")

    def __init__(self, acked_below: int = 0) -> None:
        self.acked_below = acked_below
        # The ranges in order, split into blocks: starts and ends of block k, and the
        # first start of each block (to find a block by bisection).
        self._starts: list[array[int]] = []
        self._ends: list[array[int]] = []
        self._firsts = array("Q")
        self._range_count = 0
        self._range_total = 0  # offsets acked in the ranges

    @property
    def count(self) -> int:
        """How many offsets are acked (all of [0, acked_below) and the ranges)."""
        return self.acked_below + self._range_total

    @property
    def range_count(self) -> int:
        return self._range_count

    def ranges(self) -> Iterator[tuple[int, int]]:
        """The ranges above acked_below, in order."""
        for starts, ends in zip(self._starts, self._ends, strict=True):
            yield from zip(starts, ends, strict=True)

    def _locate(self, offset: int) -> tuple[int, int]:
        """(block, index) of the last range starting at or before `offset`; (-1, -1) if
        none does."""
        block = bisect_right(self._firsts, offset) - 1
        if block < 0:
            return -1, -1
        return block, bisect_right(self._starts[block], offset) - 1

    def _after(self, block: int, index: int) -> tuple[int, int]:
        """The position after (block, index): the next range's, or the end."""
        if block < 0:
            return (0, 0)
        if index + 1 < len(self._starts[block]) or block + 1 == len(self._starts):
            return block, index + 1
        return block + 1, 0

    def __contains__(self, offset: int) -> bool:
        if offset < self.acked_below:
            return True
        block, index = self._locate(offset)
        return block >= 0 and offset < self._ends[block][index]

    def add(self, offset: int) -> bool:
        """Ack one offset; True if it was not acked before."""
        if offset < self.acked_below:
            return False
        if offset == self.acked_below and (not self._firsts or self._firsts[0] > offset + 1):
            self.acked_below = offset + 1  # the common case: in order, nothing above to merge
            return True
        return self.add_range(offset, offset + 1) == 1

    def add_range(self, start: int, end: int) -> int:
        """Ack [start, end); returns how many of them were not acked before."""
        start = max(start, self.acked_below)
        if start >= end:
            return 0
        starts, ends = self._starts, self._ends
        # lo: the first range ending at or after start; hi: the last starting at or before
        # end. Ranges lo..hi overlap or touch [start, end) and merge with it.
        block, index = self._locate(start)
        if block >= 0 and ends[block][index] >= start:
            lo = (block, index)
        else:
            lo = self._after(block, index)
        hi = self._locate(end)
        if hi[0] < 0 or hi < lo:
            self._insert(lo, start, end)
            added = end - start
        else:
            (lo_block, lo_index), (hi_block, hi_index) = lo, hi
            merged_start = min(start, starts[lo_block][lo_index])
            merged_end = max(end, ends[hi_block][hi_index])
            covered = 0
            removed = 0
            for block in range(lo_block, hi_block + 1):
                first = lo_index if block == lo_block else 0
                stop = hi_index + 1 if block == hi_block else len(starts[block])
                covered += sum(ends[block][first:stop]) - sum(starts[block][first:stop])
                removed += stop - first
            added = (merged_end - merged_start) - covered
            if added == 0:
                return 0
            firsts = self._firsts
            starts[lo_block][lo_index] = merged_start
            ends[lo_block][lo_index] = merged_end
            if lo_index == 0:
                firsts[lo_block] = merged_start
            if hi_block == lo_block:
                del starts[lo_block][lo_index + 1 : hi_index + 1]
                del ends[lo_block][lo_index + 1 : hi_index + 1]
            else:
                del starts[lo_block][lo_index + 1 :]
                del ends[lo_block][lo_index + 1 :]
                del starts[hi_block][: hi_index + 1]
                del ends[hi_block][: hi_index + 1]
                del starts[lo_block + 1 : hi_block]
                del ends[lo_block + 1 : hi_block]
                del firsts[lo_block + 1 : hi_block]
                if starts[lo_block + 1]:
                    firsts[lo_block + 1] = starts[lo_block + 1][0]
                else:
                    del starts[lo_block + 1]
                    del ends[lo_block + 1]
                    del firsts[lo_block + 1]
            self._range_count -= removed - 1
        self._range_total += added
        if starts and starts[0][0] == self.acked_below:
            # the water mark rises through the first range
            self._range_total -= ends[0][0] - starts[0][0]
            self.acked_below = ends[0][0]
            del starts[0][0]
            del ends[0][0]
            self._range_count -= 1
            if not starts[0]:
                del starts[0]
                del ends[0]
                del self._firsts[0]
            else:
                self._firsts[0] = starts[0][0]
        return added

    def _insert(self, at: tuple[int, int], start: int, end: int) -> None:
        starts, ends = self._starts, self._ends
        block, index = at
        if not starts:
            starts.append(array("Q", (start,)))
            ends.append(array("Q", (end,)))
            self._firsts.append(start)
        else:
            starts[block].insert(index, start)
            ends[block].insert(index, end)
            if index == 0:
                self._firsts[block] = start
            if len(starts[block]) > BLOCK_RANGES_MAX:
                half = len(starts[block]) // 2
                starts.insert(block + 1, starts[block][half:])
                ends.insert(block + 1, ends[block][half:])
                del starts[block][half:]
                del ends[block][half:]
                self._firsts.insert(block + 1, starts[block + 1][0])
        self._range_count += 1

    def merge(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Ack many ranges (sorted or not)."""
        for start, end in ranges:
            self.add_range(start, end)

    def covers(self, start: int, end: int) -> bool:
        """True if every offset in [start, end) is acked."""
        if end <= self.acked_below or start >= end:
            return True
        start = max(start, self.acked_below)
        block, index = self._locate(start)
        return block >= 0 and end <= self._ends[block][index]

    def acked_range_from(self, offset: int) -> tuple[int, int]:
        """[start, end) of the first acked range above acked_below that ends after `offset`;
        (OFFSET_LIMIT, OFFSET_LIMIT) if there is none. Offsets from `offset` up to its start
        are not acked (if >= acked_below): sequential scans test one bound per record."""
        block, index = self._locate(offset)
        if block < 0 or self._ends[block][index] <= offset:
            block, index = self._after(block, index)
        if block >= len(self._starts) or index >= len(self._starts[block]):
            return OFFSET_LIMIT, OFFSET_LIMIT
        return int(self._starts[block][index]), int(self._ends[block][index])

    def next_unacked(self, offset: int) -> int:
        """The lowest offset >= `offset` that is not acked."""
        if offset < self.acked_below:
            return self.acked_below
        block, index = self._locate(offset)
        if block >= 0 and offset < self._ends[block][index]:
            return int(self._ends[block][index])
        return offset

    def clipped(self, limit: int) -> tuple[int, list[tuple[int, int]]]:
        """(acked_below, ranges) restricted to offsets below `limit`."""
        below = min(self.acked_below, limit)
        ranges = []
        for start, end in self.ranges():
            if start >= limit:
                break
            ranges.append((start, min(end, limit)))
        return below, ranges

    def encoded_below(self, limit: int) -> tuple[int, bytes]:
        """clipped(limit) with the ranges already encoded as the journal stores them
        (start u64, end u64 big-endian pairs): a snapshot of hundreds of thousands of ranges
        is built without a Python object per range."""
        below = min(self.acked_below, limit)
        parts: list[bytes] = []
        for starts, ends in zip(self._starts, self._ends, strict=True):
            count = bisect_left(starts, limit)
            if not count:
                break
            pairs = array("Q", bytes(16 * count))
            pairs[0::2] = starts[:count]
            pairs[1::2] = ends[:count]
            if pairs[-1] > limit:
                pairs[-1] = limit
            if _LITTLE_ENDIAN:
                pairs.byteswap()
            parts.append(pairs.tobytes())
            if count < len(starts):
                break
        return below, b"".join(parts)

    def trim_above(self, limit: int) -> None:
        """Forget acks at or above `limit` (recovery: offsets past the end never existed)."""
        if self.acked_below > limit:
            self.acked_below = limit
            ranges: list[tuple[int, int]] = []
        else:
            ranges = [(start, min(end, limit)) for start, end in self.ranges() if start < limit]
        self._starts, self._ends = [], []
        self._firsts = array("Q")
        self._range_count = self._range_total = 0
        for start, end in ranges:
            self._insert(
                (len(self._starts) - 1, len(self._starts[-1]) if self._starts else 0), start, end
            )
            self._range_total += end - start

    def memory_bytes(self) -> int:
        return 16 * sum(starts.buffer_info()[1] for starts in self._starts)


class PendingAcks:
    """Ranges acked in memory but not yet written to the ack journal, in arrival order."""

    __slots__ = ("_ranges",)

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def add(self, start: int, end: int) -> None:
        ranges = self._ranges
        if ranges:
            last = ranges[-1]
            if last[1] == start:
                last[1] = end
                return
        ranges.append([start, end])

    def lowest(self) -> int:
        return min(start for start, _ in self._ranges)

    def take_below(self, limit: int) -> list[tuple[int, int]]:
        """Remove and return (sorted, merged) the pending acks below `limit`; keep the rest."""
        ready: list[tuple[int, int]] = []
        keep: list[list[int]] = []
        for start, end in self._ranges:
            if end <= limit:
                ready.append((start, end))
            elif start >= limit:
                keep.append([start, end])
            else:
                ready.append((start, limit))
                keep.append([limit, end])
        self._ranges = keep
        return merge_ranges(ready)

    def put_back(self, ranges: list[tuple[int, int]]) -> None:
        """Return ranges that could not be written (they are written next time)."""
        self._ranges[:0] = [[start, end] for start, end in ranges]

    def overlaps(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self._ranges)


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping and adjacent ranges joined."""
    if len(ranges) < 2:
        return ranges
    ranges.sort()
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            if end > last_end:
                merged[-1] = (last_start, end)
        else:
            merged.append((start, end))
    return merged


def encode_ranges(ranges: Iterable[tuple[int, int]]) -> bytes:
    return b"".join(RANGE.pack(start, end) for start, end in ranges)


def decode_ranges(payload: bytes, start_at: int = 0) -> list[tuple[int, int]]:
    if (len(payload) - start_at) % RANGE.size:
        raise FormatError(f"ranges payload of {len(payload) - start_at} bytes")
    ranges = []
    for position in range(start_at, len(payload), RANGE.size):
        start, end = RANGE.unpack_from(payload, position)
        if start >= end:
            raise FormatError(f"empty ack range [{start}, {end})")
        ranges.append((int(start), int(end)))
    return ranges


def encode_snapshot(
    acked_below: int, delivered_below: int, ranges: list[tuple[int, int]] | bytes
) -> bytes:
    """A SNAPSHOT payload; `ranges` as pairs, or already encoded (AckSet.encoded_below)."""
    encoded = ranges if isinstance(ranges, bytes) else encode_ranges(ranges)
    return _SNAPSHOT_HEAD.pack(acked_below, delivered_below) + encoded


def encode_delivered(delivered_below: int) -> bytes:
    return U64.pack(delivered_below)


def encode_dropped(dropped_below: int) -> bytes:
    return U64.pack(dropped_below)


def encode_counters(counters: Iterable[tuple[int, int]]) -> list[bytes]:
    """(offset, value) pairs, in order of offset, as the payloads of COUNTERS records (at
    most COUNTERS_PER_RECORD pairs each)."""
    ordered = sorted(counters)
    return [
        b"".join(
            RANGE.pack(offset, value) for offset, value in ordered[at : at + COUNTERS_PER_RECORD]
        )
        for at in range(0, len(ordered), COUNTERS_PER_RECORD)
    ]


def decode_counters(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % RANGE.size:
        raise FormatError(f"counters payload of {len(payload)} bytes")
    return [
        (int(offset), int(value))
        for offset, value in (
            RANGE.unpack_from(payload, position) for position in range(0, len(payload), RANGE.size)
        )
    ]


class AckReplay:
    """The state an ack journal's records describe, rebuilt record by record."""

    def __init__(self) -> None:
        self.acks = AckSet()
        self.counters: dict[int, int] = {}
        self.delivered_below = 0
        self.highest_offset = 0  # one past the highest offset any record mentions
        self.dropped_below = 0  # segments wholly below were dropped (drop_before)

    def apply(self, kind: int, payload: bytes) -> None:
        """Apply one record; FormatError if its payload does not fit its kind."""
        if kind == ACK_RANGES:
            ranges = decode_ranges(payload)
            self.acks.merge(ranges)
            for _, end in ranges:
                self.highest_offset = max(self.highest_offset, end)
        elif kind == DELIVERED:
            if len(payload) != U64.size:
                raise FormatError(f"DELIVERED payload of {len(payload)} bytes")
            (delivered,) = U64.unpack(payload)
            self.delivered_below = max(self.delivered_below, delivered)
        elif kind == SNAPSHOT:
            if len(payload) < _SNAPSHOT_HEAD.size:
                raise FormatError(f"SNAPSHOT payload of {len(payload)} bytes")
            acked_below, delivered = _SNAPSHOT_HEAD.unpack_from(payload)
            ranges = decode_ranges(payload, _SNAPSHOT_HEAD.size)
            self.acks = AckSet(acked_below)
            self.acks.merge(ranges)
            self.counters = {}
            self.delivered_below = delivered
            self.highest_offset = max(self.highest_offset, acked_below, *(end for _, end in ranges))
        elif kind == COUNTERS:
            self.counters.update(decode_counters(payload))
        elif kind == DROPPED:
            if len(payload) != U64.size:
                raise FormatError(f"DROPPED payload of {len(payload)} bytes")
            (dropped,) = U64.unpack(payload)
            # a SNAPSHOT does not reset it: compaction writes it again after the snapshot
            self.dropped_below = max(self.dropped_below, dropped)
            self.highest_offset = max(self.highest_offset, dropped)
        else:
            raise FormatError(f"unknown ack journal record kind {kind}")
