"""The broker's clock and its deadlines: message expiry, unused-queue expiry, consumer
timeouts.

Whatever has a deadline asks to be woken at it (`schedule`); the shell sleeps until
`next_deadline_ms`, then calls `run_due` with the time. A target that is woken and still
has work later schedules itself again; a deadline scheduled twice wakes its target twice,
which targets tolerate (they check the time themselves). Tests drive the clock by hand.

Synchronous and pure; imports nothing from amqpd.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: what TTLs, x-death times and record stamps use."""
    return time.time_ns() // 1_000_000


class TimerTarget(Protocol):
    def on_timer(self, now_ms: int) -> None: ...


class Timers:
    def __init__(self, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.clock_ms = clock_ms
        # The time as last read by the shell (once per batch of input, and before running
        # deadlines): cheap enough to stamp every delivery with.
        self.recent_ms = clock_ms()
        self._heap: list[tuple[int, int, TimerTarget]] = []
        self._order = itertools.count()  # ties wake in the order they were scheduled
        # Set by the shell: called when a deadline earlier than every other one appears.
        self.on_earlier: Callable[[], None] | None = None

    def schedule(self, deadline_ms: int, target: TimerTarget) -> None:
        heap = self._heap
        earlier = not heap or deadline_ms < heap[0][0]
        heapq.heappush(heap, (deadline_ms, next(self._order), target))
        if earlier and self.on_earlier is not None:
            self.on_earlier()

    @property
    def next_deadline_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self) -> None:
        """Wake every target whose deadline has come."""
        now_ms = self.recent_ms = self.clock_ms()
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now_ms:
            due.append(heapq.heappop(heap)[2])
        # Deadlines scheduled meanwhile wait for the next call, so a target that asks for
        # "now" again cannot keep this loop (and the event loop) busy forever.
        for target in due:
            target.on_timer(now_ms)
