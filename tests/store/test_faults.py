"""Faults while running: failed fsync, a full disk, torn writes, failed truncation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from amqpd.store import Store, StoreBroken, WriteFailed
from tests.store.helpers import (
    assert_whole_records,
    filled_partition,
    flush,
    open_store,
    payload,
    read_all,
    segment_files,
    settle,
    tick,
)
from tests.support.faulty_fs import FaultyFileSystem, journals_only, segments_only

SEEDS = range(12)


def seeded(seed: int) -> str:
    return f"seed={seed}"


@pytest.mark.parametrize("seed", SEEDS, ids=seeded)
def test_failed_fsync_breaks_the_store_and_keeps_what_was_durable(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    fs = FaultyFileSystem(rng)
    store = open_store(tmp_path, fs=fs)
    log = store.create_log("q", durable=True, partitions=2)
    bodies: dict[tuple[int, int], bytes] = {}
    for _ in range(rng.randint(1, 6)):
        for _ in range(rng.randint(1, 80)):
            partition = log.partition(rng.randrange(2))
            body = payload(rng)
            bodies[partition.index, partition.append(1, 0, body)] = body
        flush(store)
    durable = [partition.durable_offset for partition in log.partitions]
    for _ in range(rng.randint(1, 80)):
        partition = log.partition(rng.randrange(2))
        body = payload(rng)
        bodies[partition.index, partition.append(1, 0, body)] = body
    store.write_pending()
    fs.fail_fsync(match=segments_only)
    result = store.sync_now()
    assert result is not None
    assert result.advanced == []
    assert isinstance(store.broken, OSError)
    assert result.lost == {
        partition: (durable[partition.index], partition.written_offset)
        for partition in log.partitions
        if partition.written_offset > durable[partition.index]
    }
    assert [partition.durable_offset for partition in log.partitions] == durable
    with pytest.raises(StoreBroken):
        store.begin_sync()
    store.close()
    reopened = open_store(tmp_path).logs["q"]
    for partition in reopened.partitions:
        records = read_all(partition)
        offsets = [record.offset for record in records]
        assert offsets == list(range(len(offsets)))  # a valid prefix
        assert len(offsets) >= durable[partition.index]
        for record in records:
            assert bodies[partition.index, record.offset] == record.payload


@pytest.mark.parametrize("seed", SEEDS, ids=seeded)
@pytest.mark.parametrize("fault", ["enospc", "torn"])
def test_a_failed_segment_write_drops_whole_records_only(
    tmp_path: Path, seed: int, fault: str
) -> None:
    rng = random.Random(seed)
    fs = FaultyFileSystem(rng)
    store = open_store(tmp_path, fs=fs)
    partition = store.create_log("q", durable=True).partition()
    kept: dict[int, bytes] = {}
    for _ in range(rng.randint(0, 120)):
        body = payload(rng)
        kept[partition.append(1, 0, body)] = body
    flush(store)
    doomed = {partition.append(1, 0, payload(rng)) for _ in range(rng.randint(1, 60))}
    if fault == "enospc":
        fs.fill_disk_after(rng.randrange(2000), match=segments_only)
    else:
        fs.tear_next_write(match=segments_only)
    try:
        store.write_pending()
    except WriteFailed as failure:
        assert list(failure.lost) == [partition]
        start, end = failure.lost[partition]
        assert end == partition.next_offset
        assert min(doomed) <= start
        for offset in range(start, end):
            assert partition.is_acked(offset)
        for offset in doomed - set(range(start, end)):
            kept[offset] = b""  # written before the one that failed: kept
    else:  # the disk had room for it all after all
        kept.update(dict.fromkeys(doomed, b""))
    assert partition.written_offset <= partition.next_offset  # a new segment may wait
    for path in segment_files(tmp_path):  # no partial record in any file
        assert_whole_records(path)
    fs.free_space()
    after = {}
    for _ in range(rng.randint(1, 40)):
        body = payload(rng)
        after[partition.append(1, 0, body)] = body
    settle(store)
    assert partition.durable_offset == partition.next_offset
    store.close()
    reopened_store = open_store(tmp_path)
    assert reopened_store.recovery.logs["q"].truncated_bytes == 0
    assert not reopened_store.recovery.logs["q"].quarantined
    records = {r.offset: r.payload for r in read_all(reopened_store.logs["q"].partition())}
    expected = {**kept, **after}
    assert sorted(records) == sorted(expected)
    for offset, body in expected.items():
        if body:
            assert records[offset] == body
    reopened_store.logs["q"].partition().check()


def test_a_failed_write_of_a_new_segment_leaves_no_empty_file_behind(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, fs=fs)
    partition = store.create_log("q", durable=True).partition()
    for _ in range(100):
        partition.append(1, 0, b"x" * 100)  # several segments
    tick(store)  # the first segment is written and durable; the second waited for that
    assert partition.segment_count > 2
    start = partition.written_offset
    assert 0 < start < 100
    fs.fill_disk_after(10, match=segments_only)  # the second segment's header does not fit
    with pytest.raises(WriteFailed) as failure:
        store.write_pending()
    assert failure.value.lost == {partition: (start, 100)}
    assert partition.segment_count == 2
    assert segment_files(tmp_path)[-1].stat().st_size == 0
    fs.free_space()
    partition.append(1, 0, b"later")
    settle(store)
    store.close()
    reopened = open_store(tmp_path)
    offsets = [r.offset for r in read_all(reopened.logs["q"].partition())]
    assert offsets == [*range(start), 100]
    assert reopened.recovery.logs["q"].truncated_bytes == 0


def test_a_failed_truncate_after_a_failed_write_breaks_the_store(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, fs=fs)
    partition = store.create_log("q", durable=True).partition()
    partition.append(1, 0, b"a")
    flush(store)
    partition.append(1, 0, b"b")
    fs.tear_next_write(keep=10, match=segments_only)
    fs.fail_truncate()
    with pytest.raises(WriteFailed):
        store.write_pending()
    assert store.broken is not None
    with pytest.raises(StoreBroken):
        store.begin_sync()
    store.close()
    reopened = open_store(tmp_path)  # recovery cuts the torn bytes
    assert [r.payload for r in read_all(reopened.logs["q"].partition())] == [b"a"]


def test_a_failed_journal_write_is_retried(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, fs=fs)
    partition = filled_partition(store, 10, b"m")
    partition.ack_range(0, 5)
    fs.tear_next_write(keep=7, match=journals_only)
    with pytest.raises(WriteFailed) as failure:
        store.write_pending()
    assert failure.value.lost == {}
    ticket = store.definitions.put(b"k", b"v")
    fs.fill_disk_after(0, match=journals_only)
    with pytest.raises(WriteFailed):
        store.write_pending()
    store.sync_now()
    assert store.definitions.durable_ticket < ticket
    fs.free_space()
    flush(store)
    assert store.definitions.durable_ticket == ticket
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.logs["q"].partition().live_count == 5
    assert reopened.definitions.items() == {b"k": b"v"}


@pytest.mark.parametrize("seed", range(25), ids=seeded)
def test_random_faults_never_lose_what_was_confirmed(tmp_path: Path, seed: int) -> None:
    """Appends, acks, flushes and faults at random; then reopen on a healthy disk.

    Whatever was durable (below durable_offset, not lost, not acked-and-journaled) is there;
    nothing is there that was not appended; offsets only grow.
    """
    rng = random.Random(seed)
    fs = FaultyFileSystem(rng)
    store = open_store(tmp_path, fs=fs)
    partition = store.create_log("q", durable=True).partition()
    appended: dict[int, bytes] = {}
    acked: set[int] = set()
    lost: set[int] = set()
    for _ in range(rng.randint(20, 60)):
        action = rng.random()
        if action < 0.5:
            for _ in range(rng.randint(1, 30)):
                body = payload(rng)
                appended[partition.append(1, 0, body)] = body
        elif action < 0.65 and appended:
            offset = rng.choice(list(appended))
            partition.ack(offset)
            acked.add(offset)
        elif action < 0.75:
            if rng.random() < 0.5:
                fs.fill_disk_after(rng.randrange(3000))
            else:
                fs.tear_next_write()
        elif action < 0.8:
            fs.free_space()
        else:
            try:
                store.write_pending()
            except WriteFailed as failure:
                for start, end in failure.lost.values():
                    lost.update(range(start, end))
            if rng.random() < 0.05:
                fs.fail_fsync()
            if store.broken is None:
                result = store.sync_now()
                if result is not None and result.lost:
                    break
    durable = partition.durable_offset
    store.close()
    recovered = open_store(tmp_path).logs["q"].partition()
    records = read_all(recovered)
    offsets = [record.offset for record in records]
    assert offsets == sorted(set(offsets))
    for record in records:
        assert appended[record.offset] == record.payload
        assert record.offset not in lost
    must_have = {o for o in appended if o < durable} - lost - acked
    assert must_have <= set(offsets)
    recovered.check()


def test_journal_fsync_failure_also_breaks_the_store(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(0))
    store: Store = open_store(tmp_path, fs=fs)
    store.definitions.put(b"a", b"1")
    store.write_pending()
    fs.fail_fsync(match=journals_only)
    result = store.sync_now()
    assert result is not None
    assert store.broken is not None
    assert store.definitions.durable_ticket == 0


def test_one_partition_failing_does_not_stop_the_others(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, fs=fs)
    good = store.create_log("good", durable=True).partition()
    bad = store.create_log("bad", durable=True).partition()
    bad_dir = bad.directory
    for index in range(20):
        good.append(1, index, b"g")
        bad.append(1, index, b"b")
    fs.fill_disk_after(0, match=lambda path: bad_dir in path.parents)
    with pytest.raises(WriteFailed) as failure:
        store.write_pending()
    assert failure.value.lost == {bad: (0, 20)}
    assert good.written_offset == 20
    assert bad.live_count == 0
    result = store.sync_now()
    assert result is not None
    assert set(result.advanced) == {good, bad}
    fs.free_space()
    assert bad.append(1, 0, b"again") == 20
    settle(store)
    store.close()
    reopened = open_store(tmp_path)
    assert len(read_all(reopened.logs["good"].partition())) == 20
    assert [r.offset for r in read_all(reopened.logs["bad"].partition())] == [20]
