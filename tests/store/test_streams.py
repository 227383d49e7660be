"""Store support for streams: per-segment tag sets and their files, keep_acked logs,
drop_before, replay reads (include_acked), segment spans and timestamp seeks."""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

import pytest

from amqpd.store import FsyncPolicy, Partition, SegmentSpan, Store, StoreSettings
from amqpd.store.filesystem import OsFileSystem
from amqpd.store.log import LogMeta
from amqpd.store.record import FormatError
from amqpd.store.tags import TAG_BYTES_MAX, TAGS_PER_SEGMENT_MAX, decode_tags, encode_tags
from tests.store.helpers import flush, open_store, read_all
from tests.support.faulty_fs import FaultyFileSystem

BODY = b"b" * 100
PER = 33  # records of BODY per segment under SMALL (a segment rolls past 4 KiB)
TAGS = [b"red", b"green", b"blue"]


class CountingFs(OsFileSystem):
    """Counts the reads of segment files."""

    def __init__(self) -> None:
        self.segment_reads = 0
        self.fds: dict[int, Path] = {}

    def open_append(self, path: Path) -> int:
        fd = super().open_append(path)
        self.fds[fd] = path
        return fd

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if self.fds.get(fd, Path()).suffix == ".seg":
            self.segment_reads += 1
        return super().pread(fd, size, offset)


def tag_files(root: Path) -> list[Path]:
    return sorted(root.glob("logs/*/p*/*.tags"))


def tagged_log(
    store: Store, count: int, tag_of: dict[int, bytes | None], name: str = "s"
) -> Partition:
    """A durable tag_index log: `count` records, record i tagged as tag_of says (filled in
    with a pattern: segment k's records carry TAGS[k % 3] only), flushed."""
    partition = store.create_log(name, durable=True, tag_index=True).partition()
    for index in range(count):
        segment_number = index // PER
        tag = tag_of.setdefault(index, TAGS[segment_number % 3])
        partition.append(1, 1000 + index, BODY, tag=tag)
    flush(store)
    return partition


def segments_holding(partition: Partition, tag_of: dict[int, bytes | None]) -> list[set]:
    spans = partition.segment_spans()
    return [
        {tag_of[o] for o in range(span.base_offset, span.end_offset) if o in tag_of}
        for span in spans
    ]


def brute_next_tagged(
    partition: Partition, tag_of: dict[int, bytes | None], offset: int, tags: frozenset
) -> int:
    """The exact answer for segments whose sets are known: the first offset >= offset in a
    segment holding a matching record."""
    for span in partition.segment_spans():
        if span.end_offset <= offset:
            continue
        held = {tag_of.get(o) for o in range(span.base_offset, span.end_offset)}
        if held & tags:
            return max(offset, span.base_offset)
    return partition.next_offset


# -- meta ---------------------------------------------------------------------------------


def test_meta_keeps_the_options_and_reads_old_files() -> None:
    meta = LogMeta("s", True, 1, None, tag_index=True, keep_acked=True)
    assert LogMeta.decode(meta.encode()) == meta
    plain = LogMeta("q", True, 2)
    assert b"tag_index" not in plain.encode() and b"keep_acked" not in plain.encode()
    decoded = LogMeta.decode(plain.encode())
    assert (decoded.tag_index, decoded.keep_acked) == (False, False)


def test_meta_with_a_bad_option_is_refused() -> None:
    data = LogMeta("s", True, 1, None, tag_index=True).encode()
    with pytest.raises(FormatError):
        LogMeta.decode(data.replace(b'"tag_index": true', b'"tag_index":    1'))


def test_options_survive_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.create_log("s", durable=True, tag_index=True, keep_acked=True)
    store.create_log("q", durable=True)
    flush(store)
    store.close()
    reopened = open_store(tmp_path)
    assert (reopened.logs["s"].tag_index, reopened.logs["s"].keep_acked) == (True, True)
    assert (reopened.logs["q"].tag_index, reopened.logs["q"].keep_acked) == (False, False)


def test_queue_storage_passes_the_options(tmp_path: Path) -> None:
    from amqpd.server.storage import StoreQueueStorage

    store = open_store(tmp_path)
    storage = StoreQueueStorage(store)
    (partition,) = storage.create_log("s", durable=True, tag_index=True, keep_acked=True)
    assert store.logs["s"].tag_index and store.logs["s"].keep_acked
    partition.append(1, 0, b"x", tag=b"t")
    assert partition.next_tagged_offset(0, frozenset({b"other"}), False) == 1


# -- tag sets in memory ---------------------------------------------------------------------


def test_next_tagged_offset_skips_segments_without_reading_them(tmp_path: Path) -> None:
    fs = CountingFs()
    store = open_store(tmp_path, fs=fs)
    tag_of: dict[int, bytes | None] = {}
    partition = tagged_log(store, PER * 9 + 10, tag_of)
    assert partition.segment_count >= 9
    fs.segment_reads = 0
    for tags in ([b"red"], [b"green"], [b"blue"], [b"red", b"blue"], [b"none"]):
        wanted = frozenset(tags)
        for offset in range(0, partition.next_offset + 2, 7):
            expected = brute_next_tagged(partition, tag_of, offset, wanted)
            if offset > partition.next_offset:
                expected = offset
            assert partition.next_tagged_offset(offset, wanted, False) == expected
    assert fs.segment_reads == 0


def test_filtered_reading_finds_every_matching_record(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = open_store(tmp_path)
    partition = store.create_log("s", durable=True, tag_index=True).partition()
    tag_of: dict[int, bytes | None] = {}
    for index in range(2000):
        # long runs of one tag, so that whole segments hold no "rare"
        tag = b"rare" if index % 400 < 20 else (None if rng.random() < 0.01 else b"common")
        tag_of[partition.append(1, index, BODY, tag=tag)] = tag
    flush(store)
    for wanted, untagged in ((frozenset({b"rare"}), False), (frozenset(), True)):
        found = []
        offset = 0
        visited = 0
        while True:
            offset = partition.next_tagged_offset(offset, wanted, untagged)
            batch = partition.read(offset, 35)
            if not batch:
                break
            visited += len(batch)
            found += [
                r.offset
                for r in batch
                if tag_of[r.offset] in wanted or (untagged and tag_of[r.offset] is None)
            ]
            offset = batch[-1].offset + 1
        expected = [o for o, t in tag_of.items() if t in wanted or (untagged and t is None)]
        assert found == expected
        if not untagged:
            assert visited < 2000 // 2  # most segments were skipped


def test_untagged_records_are_kept_apart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("s", durable=False, tag_index=True).partition()
    for _ in range(40):
        partition.append(1, 0, BODY, tag=b"a")
    first_end = partition.segment_spans()[0].end_offset
    for _ in range(40):
        partition.append(1, 0, BODY)
    assert partition.next_tagged_offset(0, frozenset(), True) == first_end
    assert partition.next_tagged_offset(0, frozenset({b"a"}), False) == 0
    assert partition.next_tagged_offset(first_end, frozenset({b"a"}), False) >= first_end


def test_a_set_past_its_bounds_counts_as_unknown(tmp_path: Path) -> None:
    store = open_store(tmp_path, StoreSettings())  # one segment holds them all
    partition = store.create_log("s", durable=False, tag_index=True).partition()
    for number in range(TAGS_PER_SEGMENT_MAX + 1):
        partition.append(1, 0, b"", tag=b"t%d" % number)
    assert partition.next_tagged_offset(0, frozenset({b"never"}), False) == 0
    other = store.create_log("t", durable=False, tag_index=True).partition()
    other.append(1, 0, b"", tag=b"x" * (TAG_BYTES_MAX + 1))
    assert other.next_tagged_offset(0, frozenset({b"never"}), False) == 0
    plain = store.create_log("p", durable=False).partition()
    plain.append(1, 0, b"", tag=b"ignored")
    assert plain.next_tagged_offset(0, frozenset({b"never"}), False) == 0  # no index: unknown


# -- tag files ------------------------------------------------------------------------------


def test_tag_file_codec() -> None:
    data = encode_tags(35, 69, {b"b", b"a", b""}, True)
    assert decode_tags(data) == (35, 69, {b"a", b"b", b""}, True)
    for cut in (1, 5, len(data) - 1):
        with pytest.raises(FormatError):
            decode_tags(data[:cut])
    damaged = bytearray(data)
    damaged[-2] ^= 0x40
    with pytest.raises(FormatError):
        decode_tags(bytes(damaged))


def test_sealed_segments_get_tag_files_and_a_restart_knows_them(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    tag_of: dict[int, bytes | None] = {}
    partition = tagged_log(store, PER * 6 + 3, tag_of)
    names = [path.name for path in tag_files(tmp_path)]
    sealed = [name.replace(".seg", ".tags") for name in partition.segment_names[:-1]]
    assert names == sealed
    for path in tag_files(tmp_path):
        base, _last, tags, untagged = decode_tags(path.read_bytes())
        assert tags == {tag_of[base]} and not untagged
    store.close()
    reopened = open_store(tmp_path)
    partition = reopened.logs["s"].partition()
    head_base = partition.segment_spans()[-1].base_offset
    # sealed segments: known; the newest: unknown (may hold anything)
    assert partition.next_tagged_offset(0, frozenset({b"green"}), False) == PER
    assert partition.next_tagged_offset(PER + 1, frozenset({b"none"}), False) == head_base
    # appending to the recovered head, then rolling: its set stays unknown, no stale file
    for _ in range(40):
        partition.append(1, 0, BODY, tag=b"late")
    flush(reopened)
    directory = next(tmp_path.glob("logs/*/p0"))
    assert not (directory / f"{head_base:020d}.tags").exists()
    reopened.close()
    again = open_store(tmp_path)
    partition = again.logs["s"].partition()
    assert partition.next_tagged_offset(head_base, frozenset({b"none"}), False) == head_base


def test_missing_damaged_or_stale_tag_files_mean_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(tmp_path)
    tag_of: dict[int, bytes | None] = {}
    tagged_log(store, PER * 6 + 3, tag_of)
    store.close()
    files = tag_files(tmp_path)
    files[0].unlink()  # segment 0: missing
    data = bytearray(files[1].read_bytes())
    data[-1] ^= 0xFF
    files[1].write_bytes(bytes(data))  # segment PER: damaged
    base, last, tags, untagged = decode_tags(files[2].read_bytes())
    files[2].write_bytes(encode_tags(base, last - 1, tags, untagged))  # 2 * PER: too old
    orphan = files[0].with_name(f"{10**9:020d}.tags")
    orphan.write_bytes(encode_tags(10**9, 10**9, {b"x"}, False))
    with caplog.at_level(logging.WARNING, "amqpd.store"):
        reopened = open_store(tmp_path)
    assert "unexpected file" not in caplog.text
    partition = reopened.logs["s"].partition()
    nothing = frozenset({b"none"})
    assert partition.next_tagged_offset(0, nothing, False) == 0
    assert partition.next_tagged_offset(PER, nothing, False) == PER
    assert partition.next_tagged_offset(2 * PER, nothing, False) == 2 * PER
    head_base = partition.segment_spans()[-1].base_offset
    assert partition.next_tagged_offset(3 * PER, nothing, False) == head_base  # valid ones
    assert not orphan.exists() and not files[1].exists()
    assert reopened.metrics.quarantined_bytes == 0
    read_all(partition)
    partition.check()


def test_a_torn_tag_file_write_leaves_the_set_unknown(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(3))
    store = open_store(tmp_path, fs=fs)
    partition = store.create_log("s", durable=True, tag_index=True).partition()
    for _ in range(PER):
        partition.append(1, 0, BODY, tag=b"a")
    flush(store)
    fs.tear_next_write(keep=10, match=lambda path: path.suffix == ".tags")
    for _ in range(40):
        partition.append(1, 0, BODY, tag=b"b")
    flush(store)  # the tag file's write failed: logged, the store goes on
    assert partition.next_tagged_offset(0, frozenset({b"b"}), False) == PER  # memory knows
    store.close()
    reopened = open_store(tmp_path)
    partition = reopened.logs["s"].partition()
    assert partition.next_tagged_offset(0, frozenset({b"b"}), False) == 0
    assert len(read_all(partition)) == PER + 40


def test_deleting_a_segment_deletes_its_tag_file(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    tag_of: dict[int, bytes | None] = {}
    partition = tagged_log(store, PER * 4 + 3, tag_of)
    assert len(tag_files(tmp_path)) == partition.segment_count - 1
    partition.ack_range(0, 2 * PER)
    flush(store)
    assert partition.first_offset == 2 * PER
    assert [p.name.replace(".tags", ".seg") for p in tag_files(tmp_path)] == (
        partition.segment_names[:-1]
    )


def test_quarantined_segment_takes_its_tag_file_along(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    tag_of: dict[int, bytes | None] = {}
    partition = tagged_log(store, PER * 4 + 3, tag_of)
    second = next(tmp_path.glob("logs/*/p0")) / partition.segment_names[1]
    store.close()
    data = bytearray(second.read_bytes())
    data[0:4] = b"XXXX"  # an unreadable header: the whole segment is quarantined
    second.write_bytes(bytes(data))
    reopened = open_store(tmp_path)
    partition = reopened.logs["s"].partition()
    assert not second.with_suffix(".tags").exists()
    assert len(tag_files(tmp_path)) == partition.segment_count - 1
    partition.check()


@pytest.mark.parametrize("seed", range(12), ids=lambda seed: f"seed={seed}")
def test_power_cut_never_leaves_a_wrong_tag_set(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fs = FaultyFileSystem(rng)
    settings = StoreSettings(
        fsync=FsyncPolicy("always"), segment_bytes_max=1024, index_interval_bytes=256
    )
    store = open_store(tmp_path, settings, fs=fs)
    partition = store.create_log("s", durable=True, tag_index=True).partition()
    store.sync_now()
    tag_of: dict[int, bytes | None] = {}
    batch = None
    for _ in range(rng.randint(40, 150)):
        action = rng.random()
        if action < 0.6:
            tag = rng.choice([b"a", b"b", b"c", None])
            for _ in range(rng.randint(1, 12)):
                tag_of[partition.append(1, 0, rng.randbytes(rng.randint(0, 80)), tag=tag)] = tag
        elif action < 0.75:
            store.write_pending()
        elif batch is None:
            batch = store.begin_sync()
        else:
            store.sync_files(batch)
            store.end_sync(batch)
            batch = None
    durable = partition.durable_offset
    store.close()
    what = fs.crash()
    reopened = open_store(tmp_path, settings)
    assert reopened.metrics.quarantined_bytes == 0, what
    partition = reopened.logs["s"].partition()
    records = read_all(partition)
    assert {r.offset for r in records} >= {o for o in tag_of if o < durable}
    # every surviving record is found by a filter on its own tag
    for record in records:
        tag = tag_of[record.offset]
        wanted = frozenset() if tag is None else frozenset({tag})
        assert partition.next_tagged_offset(record.offset, wanted, tag is None) == record.offset
        assert partition.next_tagged_offset(0, wanted, tag is None) <= record.offset
    partition.check()


# -- keep_acked, include_acked, drop_before -----------------------------------------------


def kept_log(store: Store, count: int, durable: bool = True, name: str = "k") -> Partition:
    partition = store.create_log(name, durable=durable, keep_acked=True).partition()
    for index in range(count):
        partition.append(1, 1000 + index, b"%d" % index + BODY)
    flush(store)
    return partition


def test_include_acked_reads_return_acked_records_still_stored(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    for index in range(30):  # one segment: acked records stay stored
        partition.append(1, index, b"%d" % index)
    flush(store)
    partition.ack_range(0, 10)
    partition.ack(15)
    assert [r.offset for r in partition.read(0)] == [*range(10, 15), *range(16, 30)]
    assert [r.offset for r in partition.read(0, include_acked=True)] == list(range(30))
    assert [r.offset for r in partition.read(12, 3, include_acked=True)] == [12, 13, 14]
    # consecutive reads from where the last ended (the replay cursor)
    seen = []
    offset = 0
    while batch := partition.read(offset, 7, include_acked=True):
        seen += [r.payload for r in batch]
        offset = batch[-1].offset + 1
    assert seen == [b"%d" % index for index in range(30)]
    assert partition.read(30, include_acked=True) == []
    assert partition.read(0, 0, include_acked=True) == []


def test_keep_acked_log_keeps_acked_segments_across_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = kept_log(store, 200)
    segments = partition.segment_count
    partition.ack_range(0, 150)
    flush(store)
    assert partition.segment_count == segments
    assert partition.live_count == 50 and partition.first_offset == 0
    assert len(read_all(partition)) == 50
    assert len(partition.read(0, 1000, 1 << 30, include_acked=True)) == 200
    store.close()
    reopened = open_store(tmp_path)
    partition = reopened.logs["k"].partition()
    flush(reopened)
    assert partition.segment_count == segments
    assert partition.live_count == 50 and partition.first_offset == 0
    assert [r.offset for r in partition.read(0, 1000, 1 << 30, include_acked=True)] == list(
        range(200)
    )
    partition.check()


def test_an_ordinary_log_still_deletes_acked_segments(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    for _ in range(200):
        partition.append(1, 0, BODY)
    flush(store)
    partition.ack_range(0, 150)
    flush(store)
    assert partition.first_offset > 100


@pytest.mark.parametrize("durable", [True, False])
def test_drop_before(tmp_path: Path, durable: bool) -> None:
    store = open_store(tmp_path)
    partition = kept_log(store, 200, durable)
    spans = partition.segment_spans()
    partition.ack_range(0, 10)  # acked records dropped do not count again
    live = partition.live_count
    assert partition.drop_before(spans[0].end_offset - 1) == 0  # not a whole segment
    cut = spans[3].base_offset
    assert partition.drop_before(cut + 5) == cut - 10
    assert partition.live_count == live - (cut - 10)
    assert partition.first_offset == cut
    assert partition.segment_spans() == spans[3:]
    assert partition.read(0)[0].offset == cut
    assert partition.read(0, include_acked=True)[0].offset == cut
    assert partition.offset_for_timestamp(0) == cut
    assert partition.next_tagged_offset(0, frozenset(), True) == cut
    assert partition.drop_before(cut) == 0
    flush(store)
    assert partition.segment_count == len(spans) - 3  # the files are gone
    assert len(list(tmp_path.glob("*/*/p0/*.seg"))) == len(spans) - 3
    # never the newest
    assert partition.drop_before(10**9) == spans[-1].base_offset - cut
    assert partition.segment_spans() == [spans[-1]]
    partition.check()


def test_drop_before_with_a_restart_between(tmp_path: Path) -> None:
    store = open_store(tmp_path, StoreSettings(segment_bytes_max=4096, ack_journal_bytes_max=256))
    partition = kept_log(store, 300)
    spans = partition.segment_spans()
    partition.ack_range(0, 40)
    flush(store)
    partition.drop_before(spans[2].base_offset)
    for offset in range(250, 280):  # enough acks for the journal to be compacted
        partition.ack(offset)
        flush(store)
    live = partition.live_count
    store.close()
    reopened = open_store(tmp_path)
    partition = reopened.logs["k"].partition()
    assert partition.first_offset == spans[2].base_offset
    assert partition.live_count == live
    assert partition.segment_spans() == spans[2:]
    assert partition.read(0, include_acked=True)[0].offset == spans[2].base_offset
    partition.check()


class NoSegmentRemoval(OsFileSystem):
    def remove(self, path: Path) -> None:
        if path.suffix == ".seg":
            raise PermissionError(13, "refused", str(path))
        super().remove(path)


def test_a_restart_removes_dropped_segments_still_there(tmp_path: Path) -> None:
    store = open_store(tmp_path, fs=NoSegmentRemoval())
    partition = kept_log(store, 200)
    spans = partition.segment_spans()
    partition.drop_before(spans[3].base_offset)
    flush(store)  # the journal says so, the files could not be removed
    assert len(list(tmp_path.glob("*/*/p0/*.seg"))) == len(spans)
    store.close()
    reopened = open_store(tmp_path)
    partition = reopened.logs["k"].partition()
    assert len(list(tmp_path.glob("*/*/p0/*.seg"))) == len(spans) - 3
    assert partition.first_offset == spans[3].base_offset
    assert partition.read(0, include_acked=True)[0].offset == spans[3].base_offset
    assert reopened.metrics.quarantined_bytes == 0
    partition.check()


@pytest.mark.parametrize("seed", range(12), ids=lambda seed: f"seed={seed}")
def test_power_cut_around_drop_before(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fs = FaultyFileSystem(rng)
    settings = StoreSettings(
        fsync=FsyncPolicy("always"),
        segment_bytes_max=1024,
        index_interval_bytes=256,
        ack_journal_bytes_max=512,
    )
    store = open_store(tmp_path, settings, fs=fs)
    partition = store.create_log("k", durable=True, keep_acked=True).partition()
    store.sync_now()
    appended: dict[int, bytes] = {}
    dropped_durably = 0  # a drop followed by a whole flush
    batch = None
    for _ in range(rng.randint(40, 150)):
        action = rng.random()
        if action < 0.45:
            for _ in range(rng.randint(1, 12)):
                body = rng.randbytes(rng.randint(0, 80))
                appended[partition.append(1, 0, body)] = body
        elif action < 0.55 and appended:
            partition.ack(rng.choice(list(appended)))
        elif action < 0.62:
            partition.drop_before(rng.randint(0, partition.next_offset))
        elif action < 0.65 and batch is None:
            below = partition.first_offset
            flush(store)
            dropped_durably = below
        elif action < 0.8:
            store.write_pending()
        elif batch is None:
            batch = store.begin_sync()
        else:
            store.sync_files(batch)
            store.end_sync(batch)
            batch = None
    store.close()
    what = fs.crash()
    reopened = open_store(tmp_path, settings)
    assert reopened.metrics.quarantined_bytes == 0, what
    partition = reopened.logs["k"].partition()
    stored = partition.read(0, 10**6, 1 << 30, include_acked=True)
    for record in stored:
        assert appended[record.offset] == record.payload
        assert record.offset >= partition.first_offset >= dropped_durably
    live = read_all(partition)
    assert {r.offset for r in live} <= {r.offset for r in stored}
    partition.check()
    spans = partition.segment_spans()
    assert spans[0].base_offset <= partition.first_offset < spans[0].end_offset or (len(spans) == 1)


# -- spans and timestamps -------------------------------------------------------------------


def test_segment_spans(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    assert partition.segment_spans() == [SegmentSpan(0, 0, 0, 16)]
    for index in range(100):
        partition.append(1, 5000 - index if index == 50 else index, BODY)
    spans = partition.segment_spans()
    assert spans[0].base_offset == 0 and spans[-1].end_offset == 100
    assert all(a.end_offset == b.base_offset for a, b in itertools.pairwise(spans))
    assert max(span.timestamp_max_ms for span in spans) == 4950
    flush(store)
    sizes = {path.name: path.stat().st_size for path in tmp_path.glob("logs/*/p0/*.seg")}
    assert [span.size_bytes for span in spans] == [sizes[n] for n in partition.segment_names]


@pytest.mark.parametrize("reopen", [False, True])
def test_offset_for_timestamp_matches_a_scan(tmp_path: Path, reopen: bool) -> None:
    rng = random.Random(11)
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    stamps: list[int] = []
    clock = 1000
    for index in range(3000):
        clock += rng.randint(0, 3)
        if index in (700, 2100):
            clock -= 500  # the clock stepped back
        stamps.append(clock)
        partition.append(1, clock, BODY[: rng.randint(0, 100)])
    flush(store)
    if reopen:
        store.close()
        store = open_store(tmp_path)
        partition = store.logs["q"].partition()
    for target in [0, 999, 1000, *rng.sample(range(min(stamps), max(stamps) + 2), 200)]:
        expected = next((o for o, s in enumerate(stamps) if s >= target), 3000)
        assert partition.offset_for_timestamp(target) == expected, target
    assert partition.offset_for_timestamp(max(stamps) + 1) == 3000
    # after a drop, only what is still stored counts
    cut = partition.segment_spans()[5].base_offset
    partition.drop_before(cut)
    assert partition.offset_for_timestamp(0) == cut
    target = stamps[cut + 10]
    expected = next(o for o in range(cut, 3000) if stamps[o] >= target)
    assert partition.offset_for_timestamp(target) == expected
