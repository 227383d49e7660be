"""A larger run to catch quadratic behaviour (no timing assertions)."""

from __future__ import annotations

from pathlib import Path

from amqpd.store import StoreSettings
from tests.store.helpers import flush, open_store

COUNT = 300_000
SETTINGS = StoreSettings(segment_bytes_max=1 << 20, index_interval_bytes=16 * 1024)


def test_hundreds_of_thousands_of_records(tmp_path: Path) -> None:
    store = open_store(tmp_path, SETTINGS)
    partition = store.create_log("big", durable=True).partition()
    append = partition.append
    for index in range(COUNT):
        append(1, index, index.to_bytes(4, "big") * 5)
        if index % 10_000 == 9_999:
            store.write_pending()
    flush(store)
    assert partition.segment_count > 10
    partition.ack_range(0, 100_000)
    for offset in range(100_001, 200_000, 2):
        partition.ack(offset)
    flush(store)
    flush(store)
    store.close()

    reopened = open_store(tmp_path, SETTINGS)
    recovered = reopened.logs["big"].partition()
    report = reopened.recovery.logs["big"]
    assert report.live == recovered.live_count == COUNT - 100_000 - 50_000
    assert recovered.memory_bytes() < 1 << 20
    seen = 0
    offset = 0
    expected_next = 100_000
    while batch := recovered.read(offset):
        for record in batch:
            assert record.offset == expected_next
            assert record.payload == record.offset.to_bytes(4, "big") * 5
            expected_next += 2 if expected_next < 200_000 else 1
        seen += len(batch)
        offset = batch[-1].offset + 1
    assert seen == recovered.live_count
    assert recovered.offset_for_timestamp(250_000) == 250_000
    # random reads through the sparse index
    for target in range(100_000, COUNT, 9_973):
        first = recovered.read(target, 1)[0].offset
        assert first == target + (1 if 100_000 < target < 200_000 and target % 2 else 0)
