"""AckSet against a plain Python set, and the ack journal's payload codec."""

from __future__ import annotations

import itertools
import random

import pytest

from amqpd.store import acks as acks_module
from amqpd.store.acks import (
    ACK_RANGES,
    DELIVERED,
    SNAPSHOT,
    AckReplay,
    AckSet,
    PendingAcks,
    encode_delivered,
    encode_ranges,
    encode_snapshot,
    merge_ranges,
)
from amqpd.store.record import OFFSET_LIMIT, FormatError


def check_against(acks: AckSet, model: set[int], limit: int) -> None:
    assert acks.count == len(model)
    expected_below = 0
    while expected_below in model:
        expected_below += 1
    assert acks.acked_below == expected_below
    for offset in range(limit):
        assert (offset in acks) == (offset in model), offset
        following = offset
        while following in model:
            following += 1
        assert acks.next_unacked(offset) == following
    ranges = list(acks.ranges())
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end < start  # disjoint and not adjacent


@pytest.mark.parametrize("seed", range(20), ids=lambda seed: f"seed={seed}")
def test_ack_set_matches_a_set(seed: int) -> None:
    rng = random.Random(seed)
    limit = 300
    acks = AckSet()
    model: set[int] = set()
    for _ in range(400):
        if rng.random() < 0.7:
            offset = rng.randrange(limit)
            assert acks.add(offset) == (offset not in model)
            model.add(offset)
        else:
            start = rng.randrange(limit)
            end = min(limit, start + rng.randint(0, 20))
            new = set(range(start, end)) - model
            assert acks.add_range(start, end) == len(new)
            model |= new
        start = rng.randrange(limit)
        end = rng.randrange(start, limit + 1)
        assert acks.covers(start, end) == all(o in model for o in range(start, end))
    check_against(acks, model, limit + 5)


def test_in_order_acks_keep_no_ranges() -> None:
    acks = AckSet()
    for offset in range(10_000):
        acks.add(offset)
    assert acks.acked_below == 10_000
    assert acks.range_count == 0


def test_clipped_and_trim() -> None:
    acks = AckSet(5)
    acks.add_range(10, 20)
    acks.add_range(30, 40)
    assert acks.clipped(35) == (5, [(10, 20), (30, 35)])
    assert acks.clipped(3) == (3, [])
    acks.trim_above(15)
    assert list(acks.ranges()) == [(10, 15)]
    assert acks.count == 5 + 5
    acks.trim_above(2)
    assert acks.count == 2


def test_pending_acks_split_at_the_durable_offset() -> None:
    pending = PendingAcks()
    for offset in (1, 2, 3, 9, 4, 20):
        pending.add(offset, offset + 1)
    assert pending.take_below(10) == [(1, 5), (9, 10)]
    assert pending.overlaps(20, 21)
    assert pending.take_below(100) == [(20, 21)]
    assert not pending


def test_merge_ranges() -> None:
    assert merge_ranges([(5, 7), (1, 3), (3, 4), (6, 9)]) == [(1, 4), (5, 9)]


def test_replay_applies_every_kind() -> None:
    replay = AckReplay()
    replay.apply(ACK_RANGES, encode_ranges([(0, 3), (5, 6)]))
    replay.apply(DELIVERED, encode_delivered(7))
    assert replay.acks.acked_below == 3
    assert 5 in replay.acks
    assert replay.delivered_below == 7
    replay.apply(SNAPSHOT, encode_snapshot(10, 12, [(14, 15)]))
    assert replay.acks.acked_below == 10
    assert 14 in replay.acks
    assert 5 in replay.acks
    assert replay.delivered_below == 12
    assert replay.highest_offset == 15


@pytest.mark.parametrize(
    ("kind", "body"),
    [(ACK_RANGES, b"\x00" * 15), (ACK_RANGES, encode_ranges([(4, 4)])), (DELIVERED, b""), (9, b"")],
    ids=["ragged", "empty-range", "short-delivered", "unknown-kind"],
)
def test_replay_refuses_bad_payloads(kind: int, body: bytes) -> None:
    with pytest.raises(FormatError):
        AckReplay().apply(kind, body)


def runs_above(model: set[int], low: int, limit: int) -> list[tuple[int, int]]:
    """The maximal runs [start, end) of acked offsets from `low` on."""
    runs: list[tuple[int, int]] = []
    offset = low
    while offset < limit:
        if offset in model:
            start = offset
            while offset in model:
                offset += 1
            runs.append((start, offset))
        offset += 1
    return runs


@pytest.mark.parametrize("seed", range(10), ids=lambda seed: f"seed={seed}")
def test_ack_set_in_small_blocks_matches_a_set(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 4 ranges: inserts split blocks, merges span them, the water mark empties them.
    monkeypatch.setattr(acks_module, "BLOCK_RANGES_MAX", 4)
    rng = random.Random(seed)
    limit = 600
    acks = AckSet()
    model: set[int] = set()
    for step in range(900):
        if rng.random() < 0.8:
            offset = rng.randrange(limit)
            assert acks.add(offset) == (offset not in model)
            model.add(offset)
        else:
            start = rng.randrange(limit)
            end = min(limit, start + rng.randint(0, 60))
            new = set(range(start, end)) - model
            assert acks.add_range(start, end) == len(new)
            model |= new
        offset = rng.randrange(limit)
        following = offset
        while following in model:
            following += 1
        assert acks.next_unacked(offset) == following
        runs = runs_above(model, acks.acked_below, limit)
        expected = next((run for run in runs if run[1] > offset), (OFFSET_LIMIT, OFFSET_LIMIT))
        assert acks.acked_range_from(offset) == expected
        if step % 100 == 0:
            check_against(acks, model, limit + 5)
    check_against(acks, model, limit + 5)
    assert acks.range_count == len(list(acks.ranges()))
    acks.trim_above(limit // 2)
    check_against(acks, {o for o in model if o < limit // 2}, limit + 5)


def test_random_acks_of_a_large_log_leave_it_whole() -> None:
    acks = AckSet()
    offsets = list(range(200_000))
    random.Random(5).shuffle(offsets)
    for offset in offsets:
        assert acks.add(offset)
    assert (acks.acked_below, acks.range_count, acks.count) == (200_000, 0, 200_000)


@pytest.mark.parametrize("seed", range(5), ids=lambda seed: f"seed={seed}")
def test_encoded_snapshot_ranges_are_the_clipped_ranges(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acks_module, "BLOCK_RANGES_MAX", 4)
    rng = random.Random(seed)
    acks = AckSet()
    for _ in range(300):
        start = rng.randrange(1_000)
        acks.add_range(start, start + rng.randint(1, 4))
    for limit in (0, 1, 500, rng.randrange(1_100), 2_000):
        below, ranges = acks.clipped(limit)
        assert acks.encoded_below(limit) == (below, encode_ranges(ranges))
