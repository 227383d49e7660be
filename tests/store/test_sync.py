"""Group commit: dirty notifications, sync batches, the worker thread, fsync policies."""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path

import pytest

from amqpd.store import FsyncPolicy, Partition, Store, StoreSettings, SyncBatch
from tests.store.helpers import SMALL, filled_partition, flush, open_store, read_all
from tests.support.faulty_fs import FaultyFileSystem


def test_begin_sync_has_nothing_to_do_until_something_is_written(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.begin_sync() is None
    partition = store.create_log("q", durable=True).partition()
    store.sync_now()  # the new log's directories and meta file
    assert store.begin_sync() is None
    partition.append(1, 0, b"a")
    assert store.begin_sync() is None  # appended, not written
    store.write_pending()
    batch = store.begin_sync()
    assert batch is not None
    assert batch.offsets == {partition: 1}
    assert store.begin_sync() is None  # nothing new since that batch began
    store.sync_files(batch)
    result = store.end_sync(batch)
    assert result.advanced == [partition]
    assert partition.durable_offset == 1
    assert store.begin_sync() is None


def test_on_dirty_fires_once_per_transition(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    calls = []
    store.on_dirty = lambda: calls.append(store.dirty)
    partition = store.create_log("q", durable=True).partition()
    for index in range(5):
        partition.append(1, index, b"x")
    store.definitions.put(b"k", b"v")
    assert calls == [True]
    store.write_pending()
    assert not store.dirty
    partition.ack(0)
    partition.ack(1)
    assert len(calls) == 2
    store.write_pending()  # the acks wait: their records are not durable yet
    assert len(calls) == 2
    store.sync_now()  # now they can be written: dirty again
    assert len(calls) == 3
    store.write_pending()
    partition.note_delivered(3)
    assert len(calls) == 4


def test_sync_files_runs_in_a_worker_while_the_caller_keeps_going(tmp_path: Path) -> None:
    store = open_store(tmp_path, StoreSettings())
    partition = store.create_log("q", durable=True).partition()
    for index in range(100):
        partition.append(1, index, b"first")
    store.write_pending()
    batch = store.begin_sync()
    assert batch is not None
    errors: list[BaseException] = []

    def worker(batch: SyncBatch) -> None:
        try:
            store.sync_files(batch)
        except BaseException as error:  # handed to end_sync, as the shell does
            errors.append(error)

    thread = threading.Thread(target=worker, args=(batch,))
    thread.start()
    for index in range(100):
        partition.append(1, index, b"second")
    store.write_pending()
    thread.join()
    result = store.end_sync(batch, errors[0] if errors else None)
    assert result.advanced == [partition]
    assert partition.durable_offset == 100
    assert partition.written_offset == 200
    flush(store)
    assert partition.durable_offset == 200


def test_a_log_deleted_during_a_sync_keeps_its_files_open_until_end_sync(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, fs=fs)
    doomed = store.create_log("doomed", durable=True).partition()
    kept = store.create_log("kept", durable=True).partition()
    for _ in range(200):
        doomed.append(1, 0, b"d" * 30)
        kept.append(1, 0, b"k")
    doomed.ack_range(0, 10)
    store.write_pending()
    batch = store.begin_sync()
    assert batch is not None
    directory = store.logs["doomed"].directory
    held = [handle.fd for handle in batch.handles if directory in handle.path.parents]
    assert len(held) >= 2  # the first segment and the meta file
    store.delete_log("doomed")
    assert not directory.exists()
    assert all(fd in fs._paths for fd in held)
    store.sync_files(batch)  # no EBADF: the descriptors are still open
    result = store.end_sync(batch)
    assert result.advanced == [kept]
    assert not any(fd in fs._paths for fd in held)
    assert not list(tmp_path.glob("trash/*"))
    store.close()
    assert list(open_store(tmp_path).logs) == ["kept"]


@pytest.mark.parametrize("mode", ["never", "interval", "always"])
def test_fsync_policies(tmp_path: Path, mode: str) -> None:
    policy = FsyncPolicy.parse(mode if mode != "interval" else 100)
    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, StoreSettings(fsync=policy, segment_bytes_max=2048), fs=fs)
    partition = store.create_log("q", durable=True).partition()
    for index in range(100):
        partition.append(1, index, b"x" * 20)
    store.definitions.put(b"a", b"b")
    fsyncs = fs.fsyncs + fs.directory_fsyncs
    result = flush(store)
    assert result is not None
    assert result.advanced == [partition]
    assert partition.durable_offset == 100
    assert result.definitions_ticket == store.definitions.durable_ticket == 1
    if mode == "never":
        assert fs.fsyncs + fs.directory_fsyncs == fsyncs
        assert store.metrics.fsync_count == 0
    else:
        assert fs.fsyncs > fsyncs
        assert fs.directory_fsyncs > 0
        assert store.metrics.fsync_count > 0
        assert store.metrics.last_fsync_seconds >= 0


def test_ack_journal_compaction_in_a_sync_batch(tmp_path: Path) -> None:
    settings = StoreSettings(ack_journal_bytes_max=1024, segment_bytes_max=1 << 20)
    store = open_store(tmp_path, settings)
    partition = filled_partition(store, 400, b"c")
    journal = partition.directory / "acks.journal"
    sizes = []
    for offset in [*range(0, 100), *range(101, 400, 2)]:  # one ack record per flush
        partition.ack(offset)
        flush(store)
        sizes.append(journal.stat().st_size)
    assert max(sizes) > 1024
    drops = sum(1 for before, after in itertools.pairwise(sizes) if after < before)
    assert drops >= 2  # compacted, grew again, compacted again
    assert not list(partition.directory.glob("*.tmp"))
    store.close()
    reopened = open_store(tmp_path, settings).logs["q"].partition()
    assert reopened.live_count == 150
    assert [r.offset for r in read_all(reopened)] == [100, *range(102, 400, 2)]


def test_ack_journal_compaction_under_fsync_never(tmp_path: Path) -> None:
    settings = StoreSettings(
        fsync=FsyncPolicy("never"), ack_journal_bytes_max=512, segment_bytes_max=1 << 20
    )
    store = open_store(tmp_path, settings)
    partition = filled_partition(store, 300, b"c")
    journal = partition.directory / "acks.journal"
    sizes = []
    for offset in range(200):
        partition.ack(offset)
        flush(store)
        sizes.append(journal.stat().st_size)
    assert sum(1 for before, after in itertools.pairwise(sizes) if after < before) >= 10
    assert max(sizes) < 512 + 64
    store.close()
    assert open_store(tmp_path, settings).logs["q"].partition().live_count == 100


def test_end_sync_refuses_a_foreign_batch(tmp_path: Path) -> None:
    store = open_store(tmp_path, SMALL)
    store.definitions.put(b"x", b"y")
    store.write_pending()
    batch = store.begin_sync()
    assert batch is not None
    store.end_sync(batch)
    with pytest.raises(RuntimeError, match="not the oldest in flight"):
        store.end_sync(batch)


def two_batches_in_flight(tmp_path: Path) -> tuple[Store, Partition, SyncBatch, SyncBatch]:
    """A durable partition with offset 0 in one sync batch and offset 1 in the next."""
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    store.sync_now()
    partition.append(1, 0, b"first")
    store.write_pending()
    first = store.begin_sync()
    partition.append(1, 0, b"second")
    store.write_pending()
    second = store.begin_sync()
    assert first is not None and second is not None
    return store, partition, first, second


def test_overlapping_batches_end_in_the_order_they_began(tmp_path: Path) -> None:
    store, partition, first, second = two_batches_in_flight(tmp_path)
    assert (first.offsets, second.offsets) == ({partition: 1}, {partition: 2})
    store.sync_files(second)  # the later fsync may finish first ...
    with pytest.raises(RuntimeError, match="not the oldest in flight"):
        store.end_sync(second)  # ... but it is applied only after the earlier one
    store.sync_files(first)
    store.end_sync(first)
    assert partition.durable_offset == 1
    store.end_sync(second)
    assert partition.durable_offset == 2


def test_after_a_failed_batch_the_ones_behind_it_prove_nothing(tmp_path: Path) -> None:
    store, partition, first, second = two_batches_in_flight(tmp_path)
    assert store.end_sync(first, OSError("fsync failed")).lost == {partition: (0, 1)}
    store.sync_files(second)  # this fsync succeeded, yet the page cache may have lost data
    result = store.end_sync(second)
    assert result.lost == {partition: (0, 2)}
    assert partition.durable_offset == 0


def test_a_compaction_in_flight_is_not_begun_again_by_the_next_batch(tmp_path: Path) -> None:
    settings = StoreSettings(ack_journal_bytes_max=256, segment_bytes_max=1 << 20)
    store = open_store(tmp_path, settings)
    partition = filled_partition(store, 100, b"c")
    for offset in range(0, 100, 2):
        partition.ack(offset)
        store.write_pending()
        batch = store.begin_sync()
        if batch is not None and batch.compactions:
            break
        if batch is not None:
            store.sync_files(batch)
            store.end_sync(batch)
    else:
        pytest.fail("the ack journal never asked to be compacted")
    compacting = batch
    partition.append(1, 100, b"d")
    store._compaction_wanted(partition)  # asked again while the first one runs
    store.write_pending()
    overlapping = store.begin_sync()
    assert overlapping is not None and not overlapping.compactions
    for each in (compacting, overlapping):
        store.sync_files(each)
        store.end_sync(each)
    later = store.begin_sync()
    assert later is not None and [c.partition for c in later.compactions] == [partition]
    store.sync_files(later)
    store.end_sync(later)
    store.close()
    reopened = open_store(tmp_path, settings).logs["q"].partition()
    acked = set(range(0, offset + 1, 2))
    assert [r.offset for r in read_all(reopened)] == [o for o in range(101) if o not in acked]


def test_a_new_segment_waits_for_the_one_before_it_to_be_durable(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    for index in range(200):
        partition.append(1, index, b"s" * 60)
    assert partition.segment_count > 2
    store.write_pending()
    first = partition.written_offset
    assert 0 < first < 200
    assert len(list(partition.directory.glob("*.seg"))) == 1  # no second file yet
    assert store.sync_wanted
    assert len(read_all(partition)) == 200  # waiting records are readable
    store.write_pending()
    assert partition.written_offset == first
    store.sync_now()
    assert not store.sync_wanted
    assert partition.durable_offset == first
    store.write_pending()
    assert partition.written_offset > first
    flush(store)
    assert partition.durable_offset == 200


def test_under_fsync_never_segments_are_not_held_back(tmp_path: Path) -> None:
    store = open_store(tmp_path, StoreSettings(fsync=FsyncPolicy("never"), segment_bytes_max=1024))
    partition = store.create_log("q", durable=True).partition()
    for index in range(200):
        partition.append(1, index, b"s" * 60)
    store.write_pending()
    assert partition.written_offset == 200
    assert not store.sync_wanted
