"""Recovery from crashes and damage at rest: torn tails, bit flips, unreadable files."""

from __future__ import annotations

import logging
import random
import shutil
import struct
from pathlib import Path

import pytest

from amqpd.store import Store
from amqpd.store.record import FILE_HEADER_BYTES, RECORD_HEADER_BYTES
from tests.store.helpers import (
    SMALL,
    filled_partition,
    flush,
    open_store,
    payload,
    read_all,
    segment_files,
    settle,
)
from tests.support.faulty_fs import FaultyFileSystem


def fill(root: Path, count: int, seed: int = 0, size_max: int = 120) -> list[bytes]:
    """A closed store with one durable log "q" of `count` records; returns their payloads."""
    rng = random.Random(seed)
    store = open_store(root)
    partition = store.create_log("q", durable=True).partition()
    payloads = [payload(rng, size_max) for _ in range(count)]
    for index, body in enumerate(payloads):
        partition.append(1 + index % 200, 1000 + index, body)
        if index % 50 == 0:
            store.write_pending()
    flush(store)
    store.close()
    return payloads


def record_spans(path: Path) -> list[tuple[int, int, int]]:
    """(offset, start, end) of every record in an undamaged segment file."""
    data = path.read_bytes()
    spans = []
    position = FILE_HEADER_BYTES
    while position < len(data):
        _, length, _, offset, _ = struct.unpack_from(">IIBQQ", data, position)
        end = position + RECORD_HEADER_BYTES + length
        spans.append((offset, position, end))
        position = end
    return spans


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    root = tmp_path_factory.mktemp("template")
    return root, fill(root, 400)


def copy_of(template: tuple[Path, list[bytes]], target: Path) -> tuple[Path, list[bytes]]:
    root = target / "store"
    shutil.copytree(template[0], root)
    return root, template[1]


def test_torn_tail_at_every_byte_of_the_last_record(
    template: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    newest = segment_files(template[0])[-1]
    last_offset, last_start, last_end = record_spans(newest)[-1]
    assert last_offset == len(template[1]) - 1
    for cut in range(last_start, last_end):
        root, payloads = copy_of(template, tmp_path / f"cut{cut}")
        with open(segment_files(root)[-1], "r+b") as file:
            file.truncate(cut)
        store = open_store(root)
        partition = store.logs["q"].partition()
        assert [r.payload for r in read_all(partition)] == payloads[:-1], cut
        assert partition.next_offset == last_offset
        assert store.recovery.logs["q"].truncated_bytes == cut - last_start
        # appending after a truncated tail works and survives another restart
        partition.append(1, 0, b"after")
        flush(store)
        store.close()
        again = open_store(root).logs["q"].partition()
        assert [r.payload for r in read_all(again)][-2:] == [payloads[-2], b"after"]
        again.check()
        shutil.rmtree(root)


@pytest.mark.parametrize("junk", ["zeros", "random"])
def test_junk_after_the_last_record_is_truncated(
    template: tuple[Path, list[bytes]], tmp_path: Path, junk: str
) -> None:
    root, payloads = copy_of(template, tmp_path)
    rng = random.Random(5)
    extra = bytes(4096) if junk == "zeros" else rng.randbytes(777)
    with open(segment_files(root)[-1], "ab") as file:
        file.write(extra)
    store = open_store(root)
    assert [r.payload for r in read_all(store.logs["q"].partition())] == payloads
    assert store.recovery.logs["q"].truncated_bytes == len(extra)


@pytest.mark.parametrize("seed", range(40), ids=lambda seed: f"seed={seed}")
def test_bit_flips_in_sealed_segments_are_quarantined(
    template: tuple[Path, list[bytes]], tmp_path: Path, seed: int
) -> None:
    root, payloads = copy_of(template, tmp_path)
    rng = random.Random(seed)
    fs = FaultyFileSystem(rng)
    sealed = segment_files(root)[:-1]
    assert len(sealed) >= 5
    target = rng.choice(sealed)
    spans = record_spans(target)
    size = target.stat().st_size
    in_header = seed % 10 == 0
    if in_header:
        flipped = fs.flip_bits(target, 1, 0, 4)
        lost = {offset for offset, _, _ in spans}
    else:
        low = rng.randrange(FILE_HEADER_BYTES, size)
        flipped = fs.flip_bits(
            target, rng.randint(1, 4), low, min(size, low + rng.choice([8, 300]))
        )
        lost = {offset for offset, start, end in spans if any(start <= p < end for p in flipped)}

    store = open_store(root)  # never raises

    served = {r.offset: r.payload for r in read_all(store.logs["q"].partition())}
    expected = {offset: body for offset, body in enumerate(payloads) if offset not in lost}
    assert served == expected
    report = store.recovery.logs["q"]
    assert report.quarantined
    assert store.metrics.quarantined_bytes == sum(
        q.byte_end - q.byte_start for q in report.quarantined
    )
    quarantined_files = list((root / "quarantine").iterdir())
    assert sum(path.stat().st_size for path in quarantined_files) == store.metrics.quarantined_bytes
    covered: set[int] = set()
    for entry in report.quarantined:
        assert entry.segment == target.name
        assert in_header or any(entry.byte_start <= p < entry.byte_end for p in flipped)
        covered |= set(range(*entry.offsets_lost))
    assert lost <= covered
    assert not covered & set(served)
    assert store.metrics.quarantined_records >= len(lost)
    partition = store.logs["q"].partition()
    assert partition.live_count == len(expected)
    partition.check()
    # still a working store, across another restart
    partition.append(1, 0, b"more")
    settle(store)
    store.close()
    again_store = open_store(root)
    again = again_store.logs["q"].partition()
    assert [r.payload for r in read_all(again)] == [*expected.values(), b"more"]
    # the damaged bytes were cut out of the segment: reported once, not at every start
    assert not again_store.recovery.logs["q"].quarantined
    assert len(list((root / "quarantine").iterdir())) == len(quarantined_files)


def test_quarantine_is_logged_as_an_error(
    template: tuple[Path, list[bytes]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = copy_of(template, tmp_path)
    target = segment_files(root)[1]
    FaultyFileSystem(random.Random(1)).flip_bits(target, 1, 100, 101)
    with caplog.at_level(logging.INFO, logger="amqpd.store"):
        open_store(root)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "log 'q' partition 0 segment " + target.name in errors[0]
    assert "last good offset" in errors[0]
    assert any("store recovered 1 logs" in r.getMessage() for r in caplog.records)


def test_a_bit_flip_in_the_newest_segment_cuts_the_tail_there(
    template: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    root, payloads = copy_of(template, tmp_path)
    newest = segment_files(root)[-1]
    spans = record_spans(newest)
    offset, start, _ = spans[len(spans) // 2]
    FaultyFileSystem(random.Random(2)).flip_bits(newest, 1, start + 4, start + 5)
    store = open_store(root)
    assert [r.payload for r in read_all(store.logs["q"].partition())] == payloads[:offset]


def test_a_damaged_segment_found_by_a_read_is_quarantined_not_raised(
    template: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    root, payloads = copy_of(template, tmp_path)
    store = open_store(root)
    partition = store.logs["q"].partition()
    target = segment_files(root)[2]
    spans = record_spans(target)
    damaged_offset, start, _ = spans[3]
    FaultyFileSystem(random.Random(3)).flip_bits(target, 1, start + 30, start + 31)
    served = {r.offset: r.payload for r in read_all(partition)}
    assert served == {o: b for o, b in enumerate(payloads) if o != damaged_offset}
    assert store.metrics.quarantined_bytes > 0
    assert partition.is_acked(damaged_offset)
    assert list((root / "quarantine").iterdir())
    quarantined = store.metrics.quarantined_bytes
    assert len(read_all(partition)) == len(served)  # known damage is skipped quietly
    assert store.metrics.quarantined_bytes == quarantined


def test_an_empty_newest_segment_is_removed(
    template: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    root, payloads = copy_of(template, tmp_path)
    newest = segment_files(root)[-1]
    empty = newest.with_name(f"{len(payloads):020d}.seg")
    empty.write_bytes(b"AMQS\x00")
    store = open_store(root)
    assert not empty.exists()
    partition = store.logs["q"].partition()
    assert [r.payload for r in read_all(partition)] == payloads
    assert partition.append(1, 0, b"x") == len(payloads)


def test_an_unreadable_newest_header_keeps_offsets_moving_forward(
    template: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    root, payloads = copy_of(template, tmp_path)
    files = segment_files(root)
    base = int(files[-1].name[:20])
    with open(files[-1], "r+b") as file:
        file.write(b"XXXX")
    store = open_store(root)
    partition = store.logs["q"].partition()
    assert [r.payload for r in read_all(partition)] == payloads[:base]
    assert partition.next_offset >= base  # offsets of the lost segment are never reused
    assert partition.append(1, 0, b"new") >= base
    flush(store)
    store.close()
    assert read_all(open_store(root).logs["q"].partition())[-1].payload == b"new"


def test_a_log_with_a_damaged_meta_file_is_quarantined(
    template: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    root, _ = copy_of(template, tmp_path)
    store = open_store(root)
    store.create_log("other", durable=True).partition().append(1, 0, b"fine")
    flush(store)
    directory = store.logs["q"].directory
    store.close()
    meta = directory / "meta"
    meta.write_bytes(meta.read_bytes()[:-3])
    reopened = open_store(root)
    assert list(reopened.logs) == ["other"]
    assert not directory.exists()
    assert list((root / "quarantine").glob(directory.name + "-log*"))


def test_ack_journal_torn_tail_and_mid_journal_damage(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = filled_partition(store, 100, b"r")
    for offset in range(0, 60, 2):  # one ack journal record per flush
        partition.ack(offset)
        flush(store)
    journal = partition.directory / "acks.journal"
    store.close()
    size = journal.stat().st_size
    record_size = (size - FILE_HEADER_BYTES) // 30
    # torn tail: the last ack record is cut short: only that ack is lost
    with open(journal, "r+b") as file:
        file.truncate(size - 3)
    reopened = open_store(tmp_path)
    recovered = reopened.logs["q"].partition()
    assert recovered.live_count == 100 - 29
    assert reopened.recovery.logs["q"].truncated_bytes == record_size - 3
    reopened.close()
    # damage in the middle: replay stops there; later acks are lost (redelivery), kept aside
    FaultyFileSystem(random.Random(4)).flip_bits(
        journal,
        1,
        FILE_HEADER_BYTES + 10 * record_size + 5,
        FILE_HEADER_BYTES + 10 * record_size + 6,
    )
    again = open_store(tmp_path)
    assert again.logs["q"].partition().live_count == 100 - 10
    assert list((tmp_path / "quarantine").glob("*acks.journal*"))
    assert again.metrics.quarantined_bytes > 0


def test_leftover_files_are_cleaned(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    partition.append(1, 0, b"a")
    flush(store)
    store.close()
    (partition.directory / "acks.journal.tmp").write_bytes(b"half a compaction")
    (tmp_path / "definitions" / "definitions.journal.tmp").write_bytes(b"half a compaction")
    (tmp_path / "trash" / "old").mkdir()
    interrupted = tmp_path / "logs" / "0123"
    interrupted.mkdir()
    (interrupted / "meta.tmp").write_bytes(b"")
    Store.open(tmp_path, SMALL).close()
    assert not (partition.directory / "acks.journal.tmp").exists()
    assert not (tmp_path / "definitions" / "definitions.journal.tmp").exists()
    assert not (tmp_path / "trash" / "old").exists()
    assert not interrupted.exists()
