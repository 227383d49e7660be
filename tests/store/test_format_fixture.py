"""A data folder of disk format version 1, saved: this version must read it, and write the
same bytes for the same operations (a change to either needs a new format version).

Regenerate (only together with a format version change) with:
    python -c "from tests.store.test_format_fixture import build; build(FIXTURE)"
"""

from __future__ import annotations

import shutil
from pathlib import Path

from amqpd.store import Store, StoreSettings
from tests.store.helpers import open_store, read_all

FIXTURE = Path(__file__).parent / "fixtures" / "format_v1"
SETTINGS = StoreSettings(segment_bytes_max=300, index_interval_bytes=64)


def build(root: Path) -> None:
    """The operations that produced the fixture (deterministic)."""
    store = Store.open(root, SETTINGS)
    queue = store.create_log("/ vhost/queue ✓", durable=True)
    stream = store.create_log("stream", durable=True, partitions=2)
    for index in range(30):
        queue.partition().append(1 + index % 3, 1_700_000_000_000 + index, b"message %d" % index)
    stream.partition(1).append(7, 5, b"only", offset=100)
    store.definitions.put(b"queue:/ vhost/queue", b"durable")
    store.definitions.put(b"exchange:x", b"topic")
    store.definitions.delete(b"exchange:x")
    for _ in range(5):
        store.write_pending()
        store.sync_now()
    queue.partition().ack_range(0, 12)
    queue.partition().ack(20)
    queue.partition().note_delivered(25)
    for _ in range(5):
        store.write_pending()
        store.sync_now()
    store.close()
    for leftover in ("quarantine", "trash", "transient"):
        shutil.rmtree(root / leftover)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_the_saved_folder_reads_back(tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(FIXTURE, root)
    store = open_store(root, SETTINGS)
    assert sorted(store.logs) == ["/ vhost/queue ✓", "stream"]
    queue = store.logs["/ vhost/queue ✓"].partition()
    assert queue.segment_count > 1
    assert [(r.offset, r.kind, r.timestamp_ms, r.payload) for r in read_all(queue)] == [
        (index, 1 + index % 3, 1_700_000_000_000 + index, b"message %d" % index)
        for index in range(12, 30)
        if index != 20
    ]
    assert queue.delivered_below == 26
    assert queue.first_offset > 0  # the fully acked segments were deleted
    stream = store.logs["stream"]
    assert stream.partition(0).next_offset == 0
    assert [(r.offset, r.payload) for r in read_all(stream.partition(1))] == [(100, b"only")]
    assert store.definitions.items() == {b"queue:/ vhost/queue": b"durable"}
    assert not any(report.quarantined for report in store.recovery.logs.values())


def test_the_same_operations_write_the_same_bytes(tmp_path: Path) -> None:
    build(tmp_path / "data")
    assert files(tmp_path / "data") == files(FIXTURE)
