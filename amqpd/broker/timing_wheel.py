"""A time index for very many pending items: which come due when, in about 16 bytes each.

Items are integers (log offsets) with a due time in epoch milliseconds. The index is a
hierarchical timing wheel: level L holds buckets of 2**(8 + 6L) ms (256 ms, 16 s, 17 min,
18 h, 50 days, then one top level for anything further), and an item goes into the finest
level whose span (64 buckets) reaches its due time. A bucket is two integers per item in an
`array('q')`, so a million items cost some 16 MB however far apart their times are, and
only a few hundred buckets exist at any moment.

A bucket is worked on at its action time, in chunks of CHUNK_ITEMS so that no single step
holds up the event loop:
- a level-0 bucket is opened OPEN_LEAD_MS before it starts: its items go into a small heap
  (`near`), from which they come out exactly in due order;
- a bucket of level L > 0 is cascaded into level L-1 buckets CASCADE_LEAD_WIDTHS
  level-(L-1) widths before it starts, well before any of its items is due, so the work
  is spread ahead in steps.
Items already due when they are added (a recovered backlog after downtime) skip the wheel
and come out first, in the order they were added.

Synchronous and pure; imports the standard library only.
"""

from __future__ import annotations

import heapq
from array import array
from typing import Final

BASE_SHIFT: Final = 8  # a level-0 bucket spans 2**8 = 256 ms
LEVEL_BITS: Final = 6  # 64 buckets of one level span one bucket of the next
TOP_LEVEL: Final = 5  # level 5 buckets span 2**38 ms (8.7 years); it takes everything further
CHUNK_ITEMS: Final = 4096  # items moved per step of opening or cascading a bucket
OPEN_LEAD_MS: Final = 64  # a level-0 bucket is opened this long before its first due time
STEPS_PER_CALL: Final = 4  # bucket chunks worked on per `pop_due` (some 10 ms of work)
# A bucket above level 0 is cascaded this many level-(L-1) widths before it starts: 2 s
# ahead for level 1, whose bucket may hold hundreds of thousands of items.
CASCADE_LEAD_WIDTHS: Final = 8


def _shift(level: int) -> int:
    return BASE_SHIFT + LEVEL_BITS * level


def level_for(distance_ms: int) -> int:
    """The finest level whose 64 buckets reach `distance_ms` ahead."""
    # level L reaches distances below 2**(BASE_SHIFT + LEVEL_BITS * (L + 1))
    excess = distance_ms.bit_length() - BASE_SHIFT - LEVEL_BITS
    if excess <= 0:
        return 0
    return min(TOP_LEVEL, -(-excess // LEVEL_BITS))


def action_ms(level: int, index: int) -> int:
    """When a bucket is worked on: opened (level 0) or cascaded (above) before its start."""
    start = index << _shift(level)
    if level == 0:
        return start - OPEN_LEAD_MS
    return start - (CASCADE_LEAD_WIDTHS << _shift(level - 1))


class TimingWheel:
    __slots__ = ("_actions", "_buckets", "_count", "_near", "_overdue", "_overdue_at")

    def __init__(self) -> None:
        # (level, index) -> due, item, due, item, ...
        self._buckets: dict[tuple[int, int], array[int]] = {}
        # (action time, level, index) of every bucket; an entry whose bucket is gone is
        # skipped when it comes up.
        self._actions: list[tuple[int, int, int]] = []
        self._near: list[tuple[int, int]] = []  # (due, item) of opened level-0 buckets
        self._overdue: array[int] = array("q")  # item, due, item, due, ... in added order
        self._overdue_at = 0  # items before this index of _overdue are already out
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, due_ms: int, item: int, now_ms: int) -> None:
        self._count += 1
        distance_ms = due_ms - now_ms
        if distance_ms <= 0:
            self._overdue.append(item)
            self._overdue.append(due_ms)
            return
        self._put(level_for(distance_ms), due_ms, item)

    def _put(self, level: int, due_ms: int, item: int) -> None:
        key = (level, due_ms >> _shift(level))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = array("q")
            heapq.heappush(self._actions, (action_ms(*key), *key))
        bucket.append(due_ms)
        bucket.append(item)

    def next_wake_ms(self) -> int | None:
        """When `pop_due` next has something to do (None: the wheel is empty)."""
        wake: int | None = None
        if self._overdue_at < len(self._overdue):
            return -1  # now
        if self._near:
            wake = self._near[0][0]
        if self._actions:
            action = self._actions[0][0]
            wake = action if wake is None else min(wake, action)
        return wake

    def pop_due(self, now_ms: int, max_items: int) -> list[int]:
        """Up to `max_items` items due by `now_ms`: overdue ones in the order they were
        added, then the rest in due order (ties in the order of their items)."""
        self._work(now_ms)
        out: list[int] = []
        overdue = self._overdue
        at = self._overdue_at
        while at < len(overdue) and len(out) < max_items:
            out.append(overdue[at])
            at += 2
        if at >= len(overdue):
            del overdue[:]
            at = 0
        elif at > len(overdue) // 2:  # drop what is out, now and then
            del overdue[:at]
            at = 0
        self._overdue_at = at
        near = self._near
        while near and near[0][0] <= now_ms and len(out) < max_items:
            out.append(heapq.heappop(near)[1])
        self._count -= len(out)
        return out

    def _work(self, now_ms: int) -> None:
        actions = self._actions
        buckets = self._buckets
        for _ in range(STEPS_PER_CALL):
            if not actions or actions[0][0] > now_ms:
                return
            _, level, index = heapq.heappop(actions)
            key = (level, index)
            bucket = buckets.get(key)
            if bucket is None:
                continue  # already worked through
            if len(bucket) > 2 * CHUNK_ITEMS:
                chunk = bucket[-2 * CHUNK_ITEMS :]
                del bucket[-2 * CHUNK_ITEMS :]
                heapq.heappush(actions, (action_ms(level, index), level, index))
            else:
                chunk = bucket
                del buckets[key]
            if level == 0:
                near = self._near
                for at in range(0, len(chunk), 2):
                    heapq.heappush(near, (chunk[at], chunk[at + 1]))
            else:
                for at in range(0, len(chunk), 2):
                    self._put(level - 1, chunk[at], chunk[at + 1])

    def clear(self) -> None:
        self._buckets.clear()
        self._actions.clear()
        self._near.clear()
        del self._overdue[:]
        self._overdue_at = 0
        self._count = 0

    def memory_bytes(self) -> int:
        """Roughly what the index holds (for the benchmarks and the metrics to come)."""
        pairs = sum(len(bucket) for bucket in self._buckets.values()) + len(self._overdue)
        return 8 * pairs + 120 * (len(self._buckets) + len(self._near))
