"""Power cuts at random points of a random workload: what was durable survives, and no ack
written before a crash ever applies to a record appended after it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from amqpd.store import FsyncPolicy, Partition, Store, StoreSettings
from tests.store.helpers import open_store, payload, read_all
from tests.support.faulty_fs import FaultyFileSystem

SETTINGS = StoreSettings(
    fsync=FsyncPolicy("always"),
    segment_bytes_max=2048,
    index_interval_bytes=256,
    ack_journal_bytes_max=512,
)


class Model:
    """What the test knows about one partition."""

    def __init__(self) -> None:
        self.appended: dict[int, bytes] = {}
        self.acked: set[int] = set()


def definitions_state(history: list[tuple[int, bytes, bytes | None]], ticket: int) -> dict:
    state: dict[bytes, bytes] = {}
    for number, key, value in history:
        if number > ticket:
            break
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


def run_until_crash(store: Store, rng: random.Random) -> tuple[dict[str, Model], list]:
    logs = {
        "a": store.create_log("a", durable=True),
        "b": store.create_log("b", durable=True, partitions=2),
    }
    models = {f"{name}/{p.index}": Model() for name, log in logs.items() for p in log.partitions}
    partitions: dict[str, Partition] = {
        f"{name}/{p.index}": p for name, log in logs.items() for p in log.partitions
    }
    history: list[tuple[int, bytes, bytes | None]] = []
    store.sync_now()
    batch = None
    for _ in range(rng.randint(30, 120)):
        key = rng.choice(list(partitions))
        partition, model = partitions[key], models[key]
        action = rng.random()
        if action < 0.45:
            for _ in range(rng.randint(1, 20)):
                body = payload(rng, 150)
                gap = rng.random() < 0.03
                offset = partition.append(1, 0, body, partition.next_offset + 2 if gap else None)
                model.appended[offset] = body
        elif action < 0.6 and model.appended:
            offset = rng.choice(list(model.appended))
            partition.ack(offset)
            model.acked.add(offset)
        elif action < 0.65 and model.appended:
            start = rng.choice(list(model.appended))
            end = start + rng.randint(1, 30)
            partition.ack_range(start, end)
            model.acked.update(o for o in model.appended if start <= o < end)
        elif action < 0.7:
            name = b"d%d" % rng.randrange(6)
            if rng.random() < 0.7:
                value = rng.randbytes(8)
                history.append((store.definitions.put(name, value), name, value))
            else:
                history.append((store.definitions.delete(name), name, None))
        elif action < 0.75 and model.appended:
            partition.note_delivered(rng.choice(list(model.appended)))
        elif action < 0.85:
            store.write_pending()
        elif batch is None:
            batch = store.begin_sync()
        else:  # the worker finishes while the caller kept appending
            store.sync_files(batch)
            store.end_sync(batch)
            batch = None
    if batch is not None and rng.random() < 0.5:
        store.sync_files(batch)
        store.end_sync(batch)
    return models, history


@pytest.mark.parametrize("seed", range(30), ids=lambda seed: f"seed={seed}")
def test_power_cut(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fs = FaultyFileSystem(rng)
    store = open_store(tmp_path, SETTINGS, fs=fs)
    models, history = run_until_crash(store, rng)
    durable = {
        f"{name}/{p.index}": p.durable_offset
        for name, log in store.logs.items()
        for p in log.partitions
    }
    next_offsets = {
        f"{name}/{p.index}": p.next_offset
        for name, log in store.logs.items()
        for p in log.partitions
    }
    durable_ticket = store.definitions.durable_ticket
    store.close()
    what = fs.crash()

    reopened = open_store(tmp_path, SETTINGS)
    # a power cut tears only what was never fsynced: the newest segment of a partition and
    # journal tails, which recovery cuts quietly; nothing is damage to quarantine
    assert reopened.metrics.quarantined_bytes == 0, what
    for key, model in models.items():
        name, index = key.split("/")
        partition = reopened.logs[name].partition(int(index))
        records = {r.offset: r.payload for r in read_all(partition)}
        for offset, body in records.items():
            assert model.appended[offset] == body, (key, offset, what)
        must_have = {o for o in model.appended if o < durable[key]} - model.acked
        assert must_have <= set(records), (key, sorted(must_have - set(records)), what)
        partition.check()
        # offsets after the crash start over where recovery says: none of them may be acked,
        # even if the journal acked an offset that the crash took away
        start = partition.next_offset
        assert start <= next_offsets[key] + 1 or start <= max(model.appended, default=0) + 1
        for _ in range(40):
            offset = partition.append(2, 0, b"after")
            assert not partition.is_acked(offset)
        assert [r.payload for r in partition.read(start, 100)] == [b"after"] * 40
    items = reopened.definitions.items()
    tickets = [number for number, _, _ in history if number >= durable_ticket]
    assert any(
        definitions_state(history, ticket) == items for ticket in [durable_ticket, *tickets]
    ), what
