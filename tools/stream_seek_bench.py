#!/usr/bin/env python3
"""Seeking in a large stream log: timestamp seeks, recovery, and tag-filtered reads.

Builds, with the store API alone (no broker) in a temporary directory and with fsync
"never" (to be quick), one durable tag_index log of N records (default 10,000,000) of
~100-byte payloads whose timestamps spread evenly over a simulated span (default 7 days).
1% of the records are tagged b"rare", the rest b"common"; the rare ones come in bursts
(--rare-layout bursts, the default: a filter can skip the segments between bursts) or
spread evenly (uniform: every segment holds some, so nothing can be skipped). Each
payload starts with its tag's first byte, which stands in for the broker's per-record
filter. Then it measures:

  (a) offset_for_timestamp at random times (median over --lookups lookups) and the
      first read(offset, 256) after it;
  (b) the same after closing and reopening the store, with the recovery time;
  (c) reading every record with read() against reading only the rare ones with
      next_tagged_offset + read() (records/s and wall time).

Quick check:    python3 tools/stream_seek_bench.py -n 200000
Full run:       python3 tools/stream_seek_bench.py             (~1.3 GB of disk)

Segments are --segment-mib (default 4) MiB, so that 10 million records make some 300
segments. The page cache stays warm across the reopen: (b) measures the store's own
recovery work, not the disk.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amqpd.store import FsyncPolicy, Partition, Store, StoreSettings

RARE = b"rare"
COMMON = b"common"
LOG_NAME = "stream"
BURSTS = 20  # bursts of rare records (--rare-layout bursts)


def is_rare(index: int, count: int, layout: str) -> bool:
    if layout == "uniform":
        return index % 100 == 0
    period = max(count // BURSTS, 1)  # each burst: the first 1% of its period
    return index % period < max(period // 100, 1)


def build(root: Path, settings: StoreSettings, args: argparse.Namespace) -> tuple[int, float]:
    """The log; returns (rare records, seconds)."""
    started = time.perf_counter()
    store = Store.open(root, settings)
    partition = store.create_log(LOG_NAME, durable=True, tag_index=True).partition()
    count = args.n
    span_ms = int(args.span_hours * 3_600_000)
    start_ms = 1_700_000_000_000
    filler = random.Random(1).randbytes(args.payload_bytes - 1)
    rare_body, common_body = b"R" + filler, b"C" + filler
    rare = 0
    append = partition.append
    for index in range(count):
        timestamp_ms = start_ms + index * span_ms // count
        if is_rare(index, count, args.rare_layout):
            append(1, timestamp_ms, rare_body, tag=RARE)
            rare += 1
        else:
            append(1, timestamp_ms, common_body, tag=COMMON)
        if index % 20_000 == 19_999:
            store.write_pending()
            store.sync_now()
    store.write_pending()
    store.sync_now()
    store.close()
    return rare, time.perf_counter() - started


def seeks(partition: Partition, args: argparse.Namespace) -> tuple[float, float]:
    """Median microseconds of offset_for_timestamp and of the first read after it."""
    rng = random.Random(2)
    first = partition.read(0, 1)[0].timestamp_ms
    span_ms = int(args.span_hours * 3_600_000)
    seek_us = []
    read_us = []
    for _ in range(args.lookups):
        target = first + rng.randrange(span_ms)
        started = time.perf_counter()
        offset = partition.offset_for_timestamp(target)
        between = time.perf_counter()
        batch = partition.read(offset, 256)
        ended = time.perf_counter()
        assert batch and batch[0].timestamp_ms >= target, (target, offset)
        seek_us.append((between - started) * 1e6)
        read_us.append((ended - between) * 1e6)
    return statistics.median(seek_us), statistics.median(read_us)


def read_everything(partition: Partition) -> tuple[int, float]:
    started = time.perf_counter()
    offset = 0
    count = 0
    while batch := partition.read(offset, 1000):
        count += len(batch)
        offset = batch[-1].offset + 1
    return count, time.perf_counter() - started


def read_rare(partition: Partition) -> tuple[int, int, float]:
    """(rare records found, records read, seconds) with next_tagged_offset + read."""
    started = time.perf_counter()
    wanted = frozenset({RARE})
    offset = 0
    found = 0
    scanned = 0
    end = partition.next_offset
    while True:
        offset = partition.next_tagged_offset(offset, wanted, False)
        if offset >= end:
            break
        batch = partition.read(offset, 1000)
        if not batch:
            break
        scanned += len(batch)
        found += sum(1 for record in batch if record.payload[:1] == b"R")
        offset = batch[-1].offset + 1
    return found, scanned, time.perf_counter() - started


def report_seeks(label: str, partition: Partition, args: argparse.Namespace) -> None:
    seek_us, read_us = seeks(partition, args)
    print(
        f"{label}: offset_for_timestamp median {seek_us:.1f} us,"
        f" first read(256) after it median {read_us:.1f} us ({args.lookups} lookups)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000_000, help="records in the log")
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--span-hours", type=float, default=7 * 24, help="simulated time span")
    parser.add_argument("--segment-mib", type=float, default=4, help="segment size")
    parser.add_argument("--lookups", type=int, default=101, help="timestamp seeks measured")
    parser.add_argument("--rare-layout", choices=("bursts", "uniform"), default="bursts")
    parser.add_argument("--dir", type=Path, default=None, help="where (default: a temp dir)")
    args = parser.parse_args()
    settings = StoreSettings(
        fsync=FsyncPolicy("never"), segment_bytes_max=int(args.segment_mib * 1024 * 1024)
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        root = Path(directory)
        rare, build_s = build(root, settings, args)
        size = sum(path.stat().st_size for path in root.rglob("*.seg"))
        print(
            f"built {args.n:,} records ({rare:,} rare, {args.rare_layout}) in {build_s:.1f} s:"
            f" {size / 2**20:,.0f} MiB"
        )

        store = Store.open(root, settings)
        partition = store.logs[LOG_NAME].partition()
        print(
            f"segments: {partition.segment_count}; recovery took {store.recovery.duration_s:.2f} s"
            " (the first open after building)"
        )
        report_seeks("(a)", partition, args)
        store.close()

        started = time.perf_counter()
        store = Store.open(root, settings)
        reopen_s = time.perf_counter() - started
        partition = store.logs[LOG_NAME].partition()
        print(f"(b) reopen: recovery {store.recovery.duration_s:.2f} s (open {reopen_s:.2f} s)")
        report_seeks("(b)", partition, args)

        count, all_s = read_everything(partition)
        assert count == args.n, count
        print(f"(c) read all: {count:,} records in {all_s:.2f} s ({count / all_s:,.0f} records/s)")
        found, scanned, rare_s = read_rare(partition)
        assert found == rare, (found, rare)
        print(
            f"(c) read rare: {found:,} rare records in {rare_s:.2f} s"
            f" ({found / rare_s:,.0f} matching records/s; {scanned:,} records read,"
            f" {scanned / count:.1%} of the log)"
        )
        store.close()


if __name__ == "__main__":
    main()
