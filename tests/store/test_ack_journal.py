"""The ack journal: an ack is written only once the record it acks is durable."""

from __future__ import annotations

from pathlib import Path

from amqpd.store.acks import ACK_RANGES, decode_ranges
from amqpd.store.record import FILE_HEADER_BYTES, decode_record
from tests.store.helpers import filled_partition, open_store, read_all, segment_files, settle


def journal_ranges(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    position = FILE_HEADER_BYTES
    ranges = []
    while position < len(data):
        kind, _, _, body, position = decode_record(data, position)
        if kind == ACK_RANGES:
            ranges.extend(decode_ranges(body))
    return ranges


def test_acks_wait_for_their_records_to_be_durable(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = store.create_log("q", durable=True).partition()
    journal = partition.directory / "acks.journal"
    for index in range(10):
        partition.append(1, index, b"m")
    partition.ack(3)
    store.write_pending()
    assert partition.is_acked(3)
    assert journal_ranges(journal) == []  # record 3 is written, not durable
    store.sync_now()
    store.write_pending()
    assert journal_ranges(journal) == [(3, 4)]


def test_a_crash_before_fsync_cannot_ack_a_reused_offset(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = filled_partition(store, 10, b"durable")
    durable_size = segment_files(tmp_path)[-1].stat().st_size
    for index in range(10):
        partition.append(1, index, b"volatile")
    partition.ack(5)
    partition.ack(15)
    store.write_pending()
    store.write_pending()
    assert journal_ranges(partition.directory / "acks.journal") == [(5, 6)]
    store.close()
    # the crash: what was never fsynced is gone
    with open(segment_files(tmp_path)[-1], "r+b") as file:
        file.truncate(durable_size)
    reopened = open_store(tmp_path)
    recovered = reopened.logs["q"].partition()
    assert recovered.next_offset == 10
    assert [r.offset for r in read_all(recovered)] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    for index in range(10):
        recovered.append(1, index, b"new")
    assert not recovered.is_acked(15)  # the new record at 15 is live
    settle(reopened)
    reopened.close()
    again = open_store(tmp_path).logs["q"].partition()
    assert [r.payload for r in read_all(again, 10)] == [b"new"] * 10


def test_acks_replay_across_restarts(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = filled_partition(store, 50, b"r")
    partition.ack_range(0, 20)
    partition.ack(25)
    partition.ack(40)
    settle(store)
    store.close()
    recovered = open_store(tmp_path).logs["q"].partition()
    assert recovered.acked_below == 20
    assert recovered.is_acked(25)
    assert recovered.is_acked(40)
    assert recovered.live_count == 28
    recovered.check()


def test_acks_of_unflushed_state_are_lost_only_as_redelivery(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    partition = filled_partition(store, 5, b"r")
    partition.ack(1)  # never written: a crash now redelivers it
    store.close()
    assert open_store(tmp_path).logs["q"].partition().live_count == 5
