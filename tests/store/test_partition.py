"""Appends, reads, acks, segments and timestamps of one partition (no faults)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from amqpd.store import Record, Store, StoreSettings
from amqpd.store.segment import Segment
from tests.store.helpers import (
    SMALL,
    filled_partition,
    flush,
    open_store,
    payload,
    read_all,
    segment_files,
    settle,
    tick,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path)


def test_append_returns_offsets_and_reads_unwritten_records(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    assert [partition.append(1, 10, b"a"), partition.append(2, 11, b"bb")] == [0, 1]
    assert partition.written_offset == 0
    assert partition.read(0) == [Record(0, 1, 10, b"a"), Record(1, 2, 11, b"bb")]
    store.write_pending()
    assert partition.written_offset == 2
    assert partition.durable_offset == 0
    partition.append(3, 12, b"ccc")
    assert [r.payload for r in partition.read(0)] == [b"a", b"bb", b"ccc"]
    assert partition.read(2) == [Record(2, 3, 12, b"ccc")]
    assert partition.read(3) == []


def test_bad_appends_change_nothing(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    partition.append(1, 0, b"x")
    for kind, offset in ((0, None), (256, None), (1, 0), (1, -3)):
        with pytest.raises(ValueError):
            partition.append(kind, 0, b"y", offset)
    with pytest.raises(ValueError):
        partition.append(1, -1, b"y")
    assert partition.next_offset == 1
    assert partition.live_count == 1
    partition.check()


def test_gaps_count_as_acked(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    partition.append(1, 0, b"a")
    assert partition.append(1, 0, b"b", offset=10) == 10
    assert partition.append(1, 0, b"c") == 11
    assert partition.is_acked(5)
    assert not partition.is_acked(10)
    assert partition.live_count == 3
    assert [r.offset for r in partition.read(0)] == [0, 10, 11]
    partition.ack(0)
    assert partition.acked_below == 10
    partition.ack(7)  # never existed: ignored
    partition.ack(500)  # not yet appended: ignored
    assert partition.live_count == 2
    partition.check()


def test_ack_and_ack_range(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    for index in range(20):
        partition.append(1, index, bytes([index]))
    partition.ack(3)
    partition.ack(3)
    partition.ack_range(5, 9)
    partition.ack_range(15, 100)
    assert partition.live_count == 20 - 1 - 4 - 5
    assert partition.acked_below == 0
    partition.ack_range(0, 3)
    assert partition.acked_below == 4
    assert [r.offset for r in partition.read(0)] == [4, 9, 10, 11, 12, 13, 14]
    partition.check()


def test_segments_roll_and_reads_cross_them(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    rng = random.Random(1)
    payloads = [payload(rng) for _ in range(200)]
    for index, body in enumerate(payloads):
        partition.append(1, index, body)
        if index % 37 == 0:
            store.write_pending()
    assert partition.segment_count > 3
    assert [r.payload for r in read_all(partition)] == payloads  # partly unwritten
    flush(store)
    names = partition.segment_names
    assert names == sorted(names)
    assert [r.payload for r in read_all(partition, batch=7)] == payloads
    for name in names:
        size = (partition.directory / name).stat().st_size
        assert size <= SMALL.segment_bytes_max + 25 + 200


def test_fully_acked_sealed_segments_are_deleted_after_their_acks_are_journaled(
    store: Store,
) -> None:
    partition = filled_partition(store, 300, b"x" * 50)
    segments = partition.segment_count
    bases = [int(name[:20]) for name in partition.segment_names]
    partition.ack_range(0, bases[2])
    assert partition.segment_count == segments  # nothing happens before write_pending
    flush(store)
    assert partition.segment_count == segments - 2
    assert partition.first_offset == bases[2]
    # a sealed segment in the middle goes too; the first one stays
    partition.ack_range(bases[3], bases[4])
    flush(store)
    assert partition.segment_count == segments - 3
    assert partition.first_offset == bases[2]
    # the newest segment never goes, even when everything is acked
    partition.ack_range(0, partition.next_offset)
    settle(store)
    assert partition.segment_count == 1
    assert partition.live_count == 0
    assert partition.read(0) == []
    assert len(segment_files(store.root)) == 1
    partition.check()


def test_acks_of_records_not_yet_durable_delay_deletion(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    for index in range(300):
        partition.append(1, index, b"x" * 50)
    partition.ack_range(0, 300)
    store.write_pending()
    assert partition.durable_offset == 0
    segments = partition.segment_count
    assert segments > 2
    store.write_pending()
    assert partition.segment_count == segments
    flush(store)  # the records become durable, then the acks are written, then segments go
    assert partition.segment_count == 1


def test_delivered_watermark(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    for index in range(10):
        partition.append(1, index, b"m")
    partition.note_delivered(4)
    partition.note_delivered(2)
    partition.note_delivered(99)  # capped at next_offset
    assert partition.delivered_below == 10
    settle(store)
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.logs["q"].partition().delivered_below == 10


def test_the_delivered_watermark_is_written_before_its_records_are_durable(
    tmp_path: Path,
) -> None:
    """A delivery may leave before the fsync that makes its record durable: the mark must
    already be in the OS then, so that a crash (the process dies, the OS keeps what it was
    handed) brings the message back flagged redelivered."""
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    tick(store)  # the log exists durably; what follows is only written, never synced
    for index in range(3):
        partition.append(1, index, b"m")
    partition.note_delivered(1)
    store.write_pending()
    assert partition.durable_offset == 0
    store.close()  # no fsync: what was written is what a killed process leaves
    reopened = open_store(tmp_path)
    recovered = reopened.logs["q"].partition()
    assert recovered.next_offset == 3
    assert recovered.delivered_below == 2


def test_read_limits(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    for index in range(50):
        partition.append(1, index, b"y" * 100)
    store.write_pending()
    assert len(partition.read(0, max_records=7)) == 7
    assert len(partition.read(0, max_bytes=350)) == 4  # the record that reaches the limit counts
    assert len(partition.read(0, max_bytes=1)) == 1
    assert partition.read(0, max_records=0) == []
    assert [r.offset for r in partition.read(45)] == [45, 46, 47, 48, 49]


def test_sequential_reads_use_the_cursor(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    partition = filled_partition(store, 400, b"z" * 30)
    seeks = []
    original = Segment.position_for

    def counting(segment: Segment, offset: int) -> tuple[int, int]:
        seeks.append(offset)
        return original(segment, offset)

    monkeypatch.setattr(Segment, "position_for", counting)
    offset = 0
    got = []
    while batch := partition.read(offset, 9):
        got.extend(batch)
        offset = batch[-1].offset + 1
    assert len(got) == 400
    assert seeks == [0]
    partition.append(1, 0, b"later")
    assert partition.read(offset)[0].payload == b"later"
    assert seeks == [0]


def test_random_reads_match_the_model(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    model: dict[int, bytes] = {}
    for step in range(1500):
        roll = rng.random()
        if roll < 0.6:
            gap = rng.random() < 0.05
            body = payload(rng, 120)
            offset = partition.append(
                rng.randint(1, 255), step, body, partition.next_offset + 3 if gap else None
            )
            model[offset] = body
        elif roll < 0.8 and model:
            offset = rng.choice(list(model))
            partition.ack(offset)
            del model[offset]
        elif roll < 0.85:
            flush(store)
        else:
            start = rng.randrange(partition.next_offset + 2)
            count = rng.randint(1, 30)
            expected = sorted(o for o in model if o >= start)[:count]
            assert [r.offset for r in partition.read(start, count)] == expected
            assert all(model[r.offset] == r.payload for r in partition.read(start, count))
    assert partition.live_count == len(model)
    partition.check()
    settle(store)
    store.close()
    reopened = open_store(tmp_path).logs["q"].partition()
    assert {r.offset: r.payload for r in read_all(reopened)} == model
    reopened.check()


@pytest.mark.parametrize("monotonic", [True, False], ids=["monotonic", "shuffled"])
def test_offset_for_timestamp(store: Store, monotonic: bool) -> None:
    rng = random.Random(3)
    partition = store.create_log("q", durable=True).partition()
    stamps = sorted(rng.randrange(10_000) for _ in range(500))
    if not monotonic:
        stamps = [stamp + rng.randint(-300, 300) for stamp in stamps]
        stamps = [max(stamp, 0) for stamp in stamps]
    for index, stamp in enumerate(stamps):
        partition.append(1, stamp, b"t" * 20)
        if index == 250:
            store.write_pending()  # half written, half pending
    for target in [0, 1, 5_000, 9_999, 10_500, *rng.sample(range(11_000), 60)]:
        expected = next(
            (offset for offset, stamp in enumerate(stamps) if stamp >= target), len(stamps)
        )
        assert partition.offset_for_timestamp(target) == expected, target


def test_partitions_are_independent(store: Store) -> None:
    log = store.create_log("multi", durable=True, partitions=3)
    assert [p.index for p in log.partitions] == [0, 1, 2]
    log.partition(1).append(1, 0, b"one")
    log.partition(2).append(1, 0, b"two")
    log.partition(2).append(1, 0, b"three")
    assert [p.next_offset for p in log.partitions] == [0, 1, 2]
    flush(store)
    store.close()
    reopened = open_store(store.root).logs["multi"]
    assert [r.payload for r in read_all(reopened.partition(2))] == [b"two", b"three"]
    assert reopened.partition(0).read(0) == []


def test_log_names_are_anything_and_unique(store: Store) -> None:
    names = ["/", "vhost/queue with spaces", "ünïcødé ✓", "a" * 500, ".."]
    for name in names:
        store.create_log(name, durable=True).partition().append(1, 0, name.encode())
    with pytest.raises(ValueError, match="exists"):
        store.create_log("/", durable=False)
    flush(store)
    store.close()
    reopened = open_store(store.root)
    assert sorted(reopened.logs) == sorted(names)
    for name in names:
        assert reopened.logs[name].partition().read(0)[0].payload == name.encode()


def test_delete_log_and_create_it_again(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    partition.append(1, 0, b"old")
    flush(store)
    store.delete_log("q")
    assert "q" not in store.logs
    assert not segment_files(store.root)
    fresh = store.create_log("q", durable=True).partition()
    assert fresh.next_offset == 0
    fresh.append(1, 0, b"new")
    flush(store)
    store.close()
    assert [r.payload for r in read_all(open_store(store.root).logs["q"].partition())] == [b"new"]


def test_transient_logs_are_never_fsynced_and_gone_after_reopen(tmp_path: Path) -> None:
    from tests.support.faulty_fs import FaultyFileSystem

    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, fs=fs)
    partition = store.create_log("paged", durable=False).partition()
    for index in range(100):
        partition.append(1, index, b"p" * 40)
    fsyncs = fs.fsyncs
    result = flush(store)
    assert result is not None
    assert result.advanced == [partition]
    assert fs.fsyncs == fsyncs
    assert list(tmp_path.glob("transient/*/p0/*.seg"))
    assert not list(tmp_path.glob("logs/*"))
    assert len(read_all(partition)) == 100
    partition.ack_range(0, 100)
    store.write_pending()
    assert partition.segment_count == 1
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.logs == {}
    assert not list(tmp_path.glob("transient/*"))


def test_discard_kinds_count_as_acked_at_recovery(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    for index in range(60):
        partition.append(9 if index % 3 == 0 else 1, index, b"k")
    flush(store)
    store.close()
    reopened = open_store(tmp_path, discard_kinds=frozenset({9}))
    recovered = reopened.logs["q"].partition()
    assert recovered.live_count == 40
    assert all(record.kind == 1 for record in read_all(recovered))
    assert reopened.recovery.logs["q"].live == 40
    reopened.close()
    # persisted: without discard_kinds they stay acked
    again = open_store(tmp_path).logs["q"].partition()
    assert again.live_count == 40
    again.check()


def test_metrics_follow_segments(tmp_path: Path) -> None:
    store = open_store(tmp_path, StoreSettings(segment_bytes_max=1000))
    partition = filled_partition(store, 100, b"x" * 75)
    files = segment_files(tmp_path)
    assert store.metrics.segments == len(files) == partition.segment_count
    assert store.metrics.stored_bytes == sum(path.stat().st_size for path in files)
    assert store.metrics.fsync_count >= len(files)
    store.delete_log("q")
    assert store.metrics.segments == 0
    assert store.metrics.stored_bytes == 0


def test_reads_skip_a_deleted_middle_segment_and_a_stale_cursor(store: Store) -> None:
    partition = filled_partition(store, 300, b"w" * 50)
    bases = [int(name[:20]) for name in partition.segment_names]
    first = partition.read(bases[2], 2)  # the cursor now sits in segment 2
    assert [r.offset for r in first] == [bases[2], bases[2] + 1]
    partition.ack_range(bases[2], bases[3])
    settle(store)
    assert int(partition.segment_names[2][:20]) == bases[3]
    assert partition.read(bases[2] + 2, 1)[0].offset == bases[3]
    expected = [*range(bases[2]), *range(bases[3], 300)]
    assert [r.offset for r in read_all(partition, batch=13)] == expected
    partition.check()


def test_close_leaves_no_file_open(tmp_path: Path) -> None:
    from tests.support.faulty_fs import FaultyFileSystem

    fs = FaultyFileSystem(random.Random(0))
    store = open_store(tmp_path, fs=fs)
    for name, durable in (("a", True), ("b", False)):
        partition = store.create_log(name, durable=durable, partitions=2).partition(1)
        for index in range(200):
            partition.append(1, index, b"o" * 30)
        partition.ack_range(0, 10)
    store.definitions.put(b"k", b"v")
    settle(store)
    read_all(store.logs["a"].partition(1))
    store.close()
    assert fs._paths == {}


def test_reads_keep_up_with_unwritten_records(store: Store) -> None:
    partition = store.create_log("q", durable=True).partition()
    got: list[int] = []
    offset = 0
    for index in range(2000):
        partition.append(1, index, b"u%d" % index)
        if index % 3 == 0:
            batch = partition.read(offset, 5)
            got.extend(record.offset for record in batch)
            offset = got[-1] + 1 if got else 0
        if index % 500 == 499:
            store.write_pending()
    got.extend(record.offset for record in read_all(partition, offset, 7))
    assert got == list(range(2000))
    rng = random.Random(11)
    for start in rng.sample(range(2000), 50):
        assert partition.read(start, 1)[0].payload == b"u%d" % start


def test_counters_survive_a_restart_until_their_records_are_acked(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    for index in range(5):
        partition.append(1, index, b"m")
    partition.set_counter(1, 3)
    partition.set_counter(2, 1)
    partition.set_counter(2, 2)  # the last value wins
    partition.set_counter(3, 7)
    partition.set_counter(99, 1)  # never appended: ignored
    partition.ack(3)
    partition.set_counter(3, 8)  # acked: ignored
    assert [partition.counter(offset) for offset in range(5)] == [0, 3, 2, 0, 0]
    settle(store)
    store.close()
    reopened = open_store(tmp_path).logs["q"].partition()
    assert [reopened.counter(offset) for offset in range(5)] == [0, 3, 2, 0, 0]
    reopened.ack_range(0, 2)
    assert reopened.counter(1) == 0


def test_counters_are_kept_through_journal_compactions(tmp_path: Path) -> None:
    store = open_store(tmp_path)  # SMALL: the ack journal compacts past 2 KiB
    partition = store.create_log("q", durable=True).partition()
    for index in range(600):
        partition.append(1, index, b"m")
    settle(store)
    partition.set_counter(599, 4)
    journal = partition.directory / "acks.journal"
    for offset in range(598):  # one journal record per ack: it compacts again and again
        partition.ack(offset)
        settle(store)
    assert journal.stat().st_size < 2048
    store.close()
    reopened = open_store(tmp_path).logs["q"].partition()
    assert reopened.counter(599) == 4
    assert reopened.live_count == 2


def test_a_log_with_its_own_index_interval_keeps_it_across_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path, StoreSettings())  # a 64 KiB interval
    dense = store.create_log("dense", durable=True, index_interval_bytes=1024).partition()
    sparse = store.create_log("sparse", durable=True).partition()
    for number in range(2_000):
        dense.append(1, number, b"%06d" % number * 16)
        sparse.append(1, number, b"%06d" % number * 16)
    flush(store)
    store.close()

    store = open_store(tmp_path, StoreSettings())
    dense, sparse = store.logs["dense"].partition(), store.logs["sparse"].partition()
    assert store.logs["dense"].index_interval_bytes == 1024
    assert store.logs["sparse"].index_interval_bytes is None
    dense_entries = sum(len(s.index_positions) for s in dense._segments)
    sparse_entries = sum(len(s.index_positions) for s in sparse._segments)
    assert dense_entries > 30 * sparse_entries
    for number in random.Random(3).sample(range(2_000), 200):
        (record,) = dense.read(number, max_records=1)
        assert (record.offset, record.payload) == (number, b"%06d" % number * 16)


def test_an_index_interval_below_the_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="256 bytes at least"):
        open_store(tmp_path).create_log("tiny", durable=True, index_interval_bytes=64)
