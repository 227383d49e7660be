"""Shared helpers for the store tests: small settings, flushing, reading everything back."""

from __future__ import annotations

import random
from pathlib import Path

from amqpd.store import Partition, Record, Store, StoreSettings, SyncResult
from amqpd.store.filesystem import FileSystem
from amqpd.store.record import FILE_HEADER_BYTES, SEGMENT_MAGIC, decode_file_header, decode_record

# Small limits so that a few hundred records roll several segments and journals compact.
SMALL = StoreSettings(
    segment_bytes_max=4096,
    index_interval_bytes=256,
    ack_journal_bytes_max=2048,
    read_bytes_max=8192,
)


opened: list[Store] = []  # closed after each test by conftest.py


def open_store(
    root: Path,
    settings: StoreSettings = SMALL,
    fs: FileSystem | None = None,
    discard_kinds: frozenset[int] = frozenset(),
) -> Store:
    store = Store.open(root, settings, fs, discard_kinds=discard_kinds)
    opened.append(store)
    return store


def tick(store: Store) -> SyncResult | None:
    """One tick of the shell: write_pending, then one whole sync batch."""
    store.write_pending()
    return store.sync_now()


def flush(store: Store) -> SyncResult | None:
    """Tick until nothing is left to write or sync: every record durable, every ack written.

    (Acks become writable only once their records are durable, and a new segment gets bytes
    only once the one before it is durable, so this can take a few ticks.) Returns what the
    ticks did, merged.
    """
    advanced: dict[Partition, None] = {}
    merged: SyncResult | None = None
    for _ in range(10_000):
        result = tick(store)
        if result is None:
            if not store.dirty:
                return merged
            continue
        advanced.update(dict.fromkeys(result.advanced))
        merged = SyncResult(list(advanced), result.definitions_ticket, result.lost)
        if result.lost:
            return merged
    raise AssertionError("the store never settles")


settle = flush


def filled_partition(store: Store, count: int, body: bytes, name: str = "q") -> Partition:
    """A new durable log's partition holding `count` records of kind 1 (record i stamped
    i), flushed: every record durable."""
    partition = store.create_log(name, durable=True).partition()
    for index in range(count):
        partition.append(1, index, body)
    flush(store)
    return partition


def read_all(partition: Partition, offset: int = 0, batch: int = 1000) -> list[Record]:
    records: list[Record] = []
    while True:
        got = partition.read(offset, batch)
        if not got:
            return records
        records.extend(got)
        offset = got[-1].offset + 1


def payload(rng: random.Random, size_max: int = 200) -> bytes:
    return rng.randbytes(rng.randint(0, size_max))


def segment_files(root: Path) -> list[Path]:
    return sorted(root.glob("logs/*/p*/*.seg"))


def assert_whole_records(path: Path) -> int:
    """Every byte of a segment file is its header or a whole valid record; returns the count."""
    data = path.read_bytes()
    if not data:
        return 0  # created, then its first write failed and was cut back
    decode_file_header(data[:FILE_HEADER_BYTES], SEGMENT_MAGIC)
    position = FILE_HEADER_BYTES
    count = 0
    while position < len(data):
        position = decode_record(data, position)[4]
        count += 1
    return count
