"""What the store counts and what recovery found. Values and counters only.

Imports attrs and the standard library only.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

import attrs

# Upper bounds (seconds) of the sync-batch latency histogram's buckets; +Inf is implied.
SYNC_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@attrs.define
class StoreMetrics:
    """Counters for the whole store; the caller exports them."""

    segments: int = 0  # segment files that exist (durable and transient)
    stored_bytes: int = 0  # bytes written to segment files that still exist
    quarantined_records: int = 0  # offsets lost to damage (upper bound: gaps included)
    quarantined_bytes: int = 0  # damaged bytes moved or copied to quarantine/
    fsync_count: int = 0  # fsync calls on files and directories
    fsync_seconds_total: float = 0.0  # time spent in sync_files
    last_fsync_seconds: float = 0.0  # time the last sync_files took
    write_errors: int = 0  # failed writes (each dropped batch or journal write)
    sync_batches: int = 0  # sync_files calls that synced (each one group commit)
    # How long each of them took: counts per SYNC_BUCKETS_S bucket (not cumulative; the
    # last one is past the largest bound).
    sync_buckets: list[int] = attrs.field(factory=lambda: [0] * (len(SYNC_BUCKETS_S) + 1))

    def observe_sync(self, files: int, seconds: float) -> None:
        """One group commit: `files` fsyncs (files and directories) in `seconds`."""
        self.fsync_count += files
        self.fsync_seconds_total += seconds
        self.last_fsync_seconds = seconds
        self.sync_batches += 1
        self.sync_buckets[bisect_left(SYNC_BUCKETS_S, seconds)] += 1


@attrs.frozen
class Quarantined:
    """One damaged byte range that recovery (or a read) set aside."""

    partition: int
    segment: str  # file name
    byte_start: int
    byte_end: int
    offsets_lost: tuple[int, int]  # [start, end): the offsets the damaged bytes may have held


@attrs.define
class LogRecovery:
    """What recovery found in one log, summed over its partitions."""

    records: int = 0  # valid records scanned
    live: int = 0  # of them, not acked
    segments: int = 0
    truncated_bytes: int = 0  # torn tails cut off newest segments and journals
    quarantined: list[Quarantined] = attrs.field(factory=list)


@attrs.frozen
class RecoveryReport:
    duration_s: float
    logs: dict[str, LogRecovery]
    definitions_truncated_bytes: int = 0
