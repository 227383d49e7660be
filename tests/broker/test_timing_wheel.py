"""The time index of delayed messages: nothing comes out early, everything comes out on
time in due order whatever order it went in, and memory stays small."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.timing_wheel import CHUNK_ITEMS, TimingWheel, level_for

DAY_MS = 86_400_000


def drain(wheel: TimingWheel, now_ms: int) -> list[int]:
    """Everything `pop_due` gives at `now_ms`, however many calls it takes."""
    out: list[int] = []
    while (wake := wheel.next_wake_ms()) is not None and wake <= now_ms:
        out += wheel.pop_due(now_ms, 1000)
    return out


def test_levels_by_distance() -> None:
    assert level_for(1) == 0
    assert level_for((1 << 14) - 1) == 0
    assert level_for(1 << 14) == 1
    assert level_for(30 * DAY_MS) == 3  # 18-hour buckets reach 49 days ahead
    assert level_for(400 * 365 * DAY_MS) == 5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=3 * DAY_MS), min_size=1, max_size=300),
    st.integers(min_value=0, max_value=1 << 40),
)
def test_each_item_comes_out_at_its_time_in_due_order(delays: list[int], start_ms: int) -> None:
    wheel = TimingWheel()
    due = {item: start_ms + delay for item, delay in enumerate(delays)}
    for item, at in due.items():
        wheel.add(at, item, start_ms)
    released: list[tuple[int, int]] = []  # (when, item)
    now = start_ms
    # Step from one due time to the next (and a little past it), as the timers would.
    while len(wheel):
        wake = wheel.next_wake_ms()
        assert wake is not None
        now = max(now, wake)
        released += [(now, item) for item in drain(wheel, now)]
    assert sorted(item for _, item in released) == sorted(due)
    for when, item in released:
        assert when == due[item]  # never early, never late
    order = [due[item] for _, item in released]
    assert order == sorted(order)


def test_items_added_while_time_passes_keep_their_order() -> None:
    rng = random.Random(7)
    wheel = TimingWheel()
    now = 1_000_000
    due: dict[int, int] = {}
    released: list[int] = []
    for item in range(20_000):
        now += rng.randrange(3)
        due[item] = now + rng.randrange(1, 120_000)
        wheel.add(due[item], item, now)
        for out in drain(wheel, now):
            assert due[out] <= now
            released.append(out)
    while len(wheel):
        now += 10
        for out in drain(wheel, now):
            assert now - 10 < due[out] <= now
            released.append(out)
    assert len(released) == len(due)
    order = [due[item] for item in released]
    assert order == sorted(order)


def test_overdue_items_come_out_first_in_the_order_added() -> None:
    wheel = TimingWheel()
    wheel.add(5_000, 1, now_ms=10_000)
    wheel.add(9_000, 2, now_ms=10_000)
    wheel.add(1_000, 3, now_ms=10_000)
    wheel.add(10_500, 4, now_ms=10_000)
    assert wheel.next_wake_ms() == -1
    assert wheel.pop_due(10_000, 2) == [1, 2]
    assert wheel.pop_due(10_000, 10) == [3]
    assert drain(wheel, 10_499) == []
    assert drain(wheel, 10_500) == [4]
    assert len(wheel) == 0
    assert wheel.next_wake_ms() is None


def test_a_large_bucket_is_worked_through_in_chunks() -> None:
    wheel = TimingWheel()
    count = 5 * CHUNK_ITEMS
    for item in range(count):
        wheel.add(3_600_000 + item % 1000, item, now_ms=0)
    # One call does bounded work; all of it is done well before the first due time.
    assert wheel.pop_due(0, 10) == []
    assert drain(wheel, 3_599_999) == []
    assert len(drain(wheel, 3_600_999)) == count


def test_a_million_pending_items_cost_little_memory() -> None:
    wheel = TimingWheel()
    rng = random.Random(1)
    for item in range(1_000_000):
        wheel.add(rng.randrange(1, 30 * DAY_MS), item, now_ms=0)
    assert len(wheel) == 1_000_000
    assert wheel.memory_bytes() < 20_000_000


def test_clear_forgets_everything() -> None:
    wheel = TimingWheel()
    wheel.add(100, 1, 0)
    wheel.add(-1, 2, 0)
    wheel.clear()
    assert len(wheel) == 0
    assert drain(wheel, 1_000) == []
