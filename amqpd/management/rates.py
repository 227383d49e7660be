"""Message rates: counters sampled every `sample_interval_s`, rates from the two latest
samples (RabbitMQ's "basic" rates mode: one figure per counter, per second).

The counters are the broker's MessageCounts plus queue depths; this module only keeps
the previous sample of each object and the rates worked out from it, so memory stays
proportional to the objects that exist (samples of objects that went are dropped).

Pure; imports nothing from amqpd.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


class RateTracker:
    def __init__(self) -> None:
        self._previous: dict[Hashable, tuple[float, Sequence[int]]] = {}
        self._rates: dict[Hashable, tuple[float, ...]] = {}
        self._seen: set[Hashable] = set()

    def update(self, key: Hashable, now_s: float, values: Sequence[int]) -> None:
        """Record a sample of `key`'s counters taken at `now_s` (monotonic seconds)."""
        self._seen.add(key)
        previous = self._previous.get(key)
        self._previous[key] = (now_s, values)
        if previous is None:
            return
        then_s, before = previous
        elapsed_s = now_s - then_s
        if elapsed_s <= 0:
            return
        self._rates[key] = tuple(
            (value - old) / elapsed_s for value, old in zip(values, before, strict=True)
        )

    def end_round(self) -> None:
        """After a whole sampling round: forget objects that were not sampled in it."""
        for key in self._previous.keys() - self._seen:
            del self._previous[key]
            self._rates.pop(key, None)
        self._seen = set()

    def rates(self, key: Hashable, width: int) -> tuple[float, ...]:
        """The per-second rates of `key`'s counters (zeros before two samples exist)."""
        return self._rates.get(key) or (0.0,) * width
