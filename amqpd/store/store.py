"""The store: named logs of opaque records, the definitions journal, group commit, recovery.

The store knows nothing of AMQP. It is synchronous and does no I/O of its own accord: the
caller (an anyio shell) drives it.

- `append`, `ack`, `put`... only change memory and mark the store dirty (`on_dirty`, once per
  transition from clean to dirty; it may also fire from write_pending and end_sync, so it
  should only schedule a write, not call the store back).
- `write_pending` (caller's thread) writes every buffered byte, one write per file, never
  fsyncs. A failed write raises WriteFailed after the other files are written; dropped
  records are named, journal records are kept and retried by the next write_pending.
- Group commit: `begin_sync` (caller's thread) captures what has been written; `sync_files`
  (a worker thread) fsyncs it; `end_sync` (caller's thread) raises durable offsets and the
  definitions' durable ticket, which may make acks writable (dirty again). Batches may
  overlap (sync_files on several threads) but end in the order they began; once one has
  failed, the ones behind it fail too. Ack journal compactions ride in a batch (written
  and fsynced by sync_files; one per partition at a time), so write_pending never fsyncs.
- A new segment of a durable log gets bytes only once the one before it is durable (see
  partition.py); `sync_wanted` says a segment is waiting, for callers syncing on a timer.
- After a failed fsync nothing written since the last good one can be trusted (fsyncgate):
  the store is broken, and says which offsets will never be confirmed.

Durable logs live under root/logs, transient ones (paged messages, never fsynced, wiped at
open) under root/transient; see record.py for the layout and the byte format.

Imports the standard library, attrs and store.* only; never anyio or asyncio, nothing of
amqpd outside store/.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final

import attrs

from amqpd.store.definitions import DefinitionsJournal
from amqpd.store.files import FileHandle, free_name, remove_tree, write_atomic
from amqpd.store.filesystem import FileSystem, OsFileSystem
from amqpd.store.log import (
    INDEX_INTERVAL_MIN,
    META_NAME,
    PARTITIONS_MAX,
    Log,
    LogMeta,
    directory_name,
    partition_directory,
)
from amqpd.store.metrics import LogRecovery, RecoveryReport, StoreMetrics
from amqpd.store.partition import Partition, partition_class
from amqpd.store.record import FormatError
from amqpd.store.settings import StoreSettings

log = logging.getLogger("amqpd.store")

LOGS_DIR: Final = "logs"
TRANSIENT_DIR: Final = "transient"
DEFINITIONS_DIR: Final = "definitions"
QUARANTINE_DIR: Final = "quarantine"
TRASH_DIR: Final = "trash"


class WriteFailed(Exception):
    """write_pending could not write everything (ENOSPC, EIO...).

    `lost` names, per partition, the offsets [start, end) whose records were dropped: they
    count as absent (acked) and will never be durable. Journal records that could not be
    written stay buffered and are retried by the next write_pending (lost may be empty).
    """

    def __init__(self, lost: dict[Partition, tuple[int, int]], error: OSError) -> None:
        ranges = ", ".join(
            f"{partition.log.name!r}[{partition.index}] [{start}, {end})"
            for partition, (start, end) in lost.items()
        )
        super().__init__(f"write failed: {error}" + (f"; lost {ranges}" if ranges else ""))
        self.lost = lost
        self.error = error


class StoreBroken(Exception):
    """An fsync failed earlier: nothing written since the last good sync can be trusted."""


@attrs.frozen(eq=False)
class Compaction:
    """An ack journal to replace by one snapshot record."""

    partition: Partition
    temporary: Path
    path: Path
    data: bytes


@attrs.define(eq=False)
class SyncBatch:
    """What one group commit makes durable, captured by begin_sync."""

    handles: list[FileHandle]  # files to fsync (held open until end_sync)
    directories: list[Path]  # directories whose entries changed
    offsets: dict[Partition, int]  # per partition: written_offset at capture
    definitions_ticket: int
    compactions: list[Compaction]
    fsync: bool  # False under FsyncPolicy "never"
    compacted: dict[Partition, int] = attrs.field(factory=dict)  # new journal sizes


@attrs.frozen
class SyncResult:
    advanced: list[Partition]  # partitions whose durable_offset rose
    definitions_ticket: int  # the definitions' durable ticket now
    lost: dict[Partition, tuple[int, int]]  # after a failed sync: never to be durable


class Store:
    def __init__(self, root: Path, settings: StoreSettings, fs: FileSystem) -> None:
        self.root = root
        self.settings = settings
        self.fs = fs
        self.metrics = StoreMetrics()
        self.logs: dict[str, Log] = {}
        self.on_dirty: Callable[[], None] | None = None
        self.broken: BaseException | None = None
        self.recovery = RecoveryReport(0.0, {})
        self.quarantine_dir = root / QUARANTINE_DIR
        self._directories: dict[Path, Log] = {}
        self._dirty = False
        self._writing = False
        self._dirty_partitions: dict[Partition, None] = {}
        self._retry_partitions: dict[Partition, None] = {}  # journal writes that failed
        self._written_partitions: dict[Partition, None] = {}
        self._compactions: dict[Partition, None] = {}
        self._unsynced: dict[FileHandle, None] = {}
        self._unsynced_dirs: dict[Path, None] = {}
        self._written_any = False
        self._holding_back = False
        self._batches: deque[SyncBatch] = deque()  # in flight, oldest first
        self.definitions: DefinitionsJournal

    # -- opening and recovery -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: Path,
        settings: StoreSettings,
        fs: FileSystem | None = None,
        *,
        discard_kinds: frozenset[int] = frozenset(),
    ) -> Store:
        """Open (creating) the store at `root` and recover every durable log.

        Damage never stops this: torn tails are cut off, damaged bytes are quarantined and
        logged, and everything else is served. Records of a kind in discard_kinds count as
        acked (and that is persisted).
        """
        started = time.perf_counter()
        store = cls(root, settings, fs if fs is not None else OsFileSystem())
        fs = store.fs
        fsync = settings.fsync.mode != "never"
        created = not fs.exists(root / LOGS_DIR)
        for name in (LOGS_DIR, DEFINITIONS_DIR, QUARANTINE_DIR):
            fs.makedirs(root / name)
        for name in (TRANSIENT_DIR, TRASH_DIR):
            remove_tree(fs, root / name)
            fs.makedirs(root / name)
        if created and fsync:
            fs.fsync_dir(root)
        store.definitions, definitions_truncated = DefinitionsJournal.open(
            store,
            root / DEFINITIONS_DIR,
            store.quarantine_dir,
            store._definitions_changed,
            fsync=fsync,
        )
        reports: dict[str, LogRecovery] = {}
        logs_dir = root / LOGS_DIR
        for name in sorted(fs.listdir(logs_dir)):
            directory = logs_dir / name
            meta = store._read_meta(directory)
            if meta is None:
                continue
            report = reports[meta.name] = LogRecovery()
            durable_log = Log(
                meta.name,
                True,
                directory,
                meta.index_interval_bytes,
                tag_index=meta.tag_index,
                keep_acked=meta.keep_acked,
            )
            kind = partition_class(durable_log)
            for index in range(meta.partitions):
                partition_dir = partition_directory(directory, index)
                fs.makedirs(partition_dir)
                durable_log.partitions.append(
                    kind.recover(durable_log, index, partition_dir, store, discard_kinds, report)
                )
            store.logs[meta.name] = durable_log
            store._directories[directory] = durable_log
        try:
            for _ in range(3):  # acks of discarded kinds, then deletion of acked segments
                store.write_pending()
                if store.sync_now() is None:
                    break
        except (WriteFailed, StoreBroken, OSError) as error:
            log.error("store: writing after recovery failed: %s", error)
        store._dirty = False
        store.recovery = RecoveryReport(
            time.perf_counter() - started, reports, definitions_truncated
        )
        store._log_recovery()
        return store

    def _read_meta(self, directory: Path) -> LogMeta | None:
        fs = self.fs
        if not fs.is_dir(directory):
            log.warning("store: ignoring %s, not a log directory", directory)
            return None
        path = directory / META_NAME
        if not fs.exists(path):
            if fs.exists(path.with_name(META_NAME + ".tmp")):
                log.warning("store: removing %s, a log whose creation was interrupted", directory)
                remove_tree(fs, directory)
                return None
            self._quarantine_log(directory, "no meta file")
            return None
        fd = fs.open_read(path)
        try:
            data = fs.pread(fd, fs.file_size(fd), 0)
        finally:
            fs.close(fd)
        try:
            meta = LogMeta.decode(data)
        except FormatError as error:
            self._quarantine_log(directory, f"unreadable meta file: {error}")
            return None
        if directory.name != directory_name(meta.name):
            self._quarantine_log(directory, f"meta names another log: {meta.name!r}")
            return None
        if not meta.durable:
            self._quarantine_log(directory, "meta says transient")
            return None
        return meta

    def _quarantine_log(self, directory: Path, reason: str) -> None:
        target = free_name(self.fs, self.quarantine_dir, f"{directory.name}-log")
        log.error("store: log directory %s: %s; moved to %s", directory, reason, target)
        self.fs.rename(directory, target)
        self.entries_changed(directory.parent, durable=True)

    def _log_recovery(self) -> None:
        report = self.recovery
        logs = report.logs.values()
        log.info(
            "store recovered %d logs in %.3f s: %d records (%d live) in %d segments;"
            " %d torn bytes truncated; %d damaged ranges quarantined",
            len(report.logs),
            report.duration_s,
            sum(found.records for found in logs),
            sum(found.live for found in logs),
            sum(found.segments for found in logs),
            sum(found.truncated_bytes for found in logs) + report.definitions_truncated_bytes,
            sum(len(found.quarantined) for found in logs),
        )

    # -- logs ---------------------------------------------------------------------------------

    def create_log(
        self,
        name: str,
        *,
        durable: bool,
        partitions: int = 1,
        index_interval_bytes: int | None = None,
        tag_index: bool = False,
        keep_acked: bool = False,
    ) -> Log:
        """A new, empty log. ValueError if the name exists.

        `index_interval_bytes`: the log's own sparse-index interval (for logs read at
        random offsets, a small one); the store's setting when None. `tag_index`: segments
        keep the set of tags appended with their records (Partition.next_tagged_offset).
        `keep_acked`: fully acked segments are kept (read(include_acked=True) replays
        them) until Partition.drop_before removes them. Both are kept in the meta file."""
        if name in self.logs:
            raise ValueError(f"log {name!r} exists")
        if not 1 <= partitions <= PARTITIONS_MAX:
            raise ValueError(f"a log has 1..{PARTITIONS_MAX} partitions, not {partitions}")
        if index_interval_bytes is not None and index_interval_bytes < INDEX_INTERVAL_MIN:
            raise ValueError(f"an index interval is {INDEX_INTERVAL_MIN} bytes at least")
        fs = self.fs
        parent = self.root / (LOGS_DIR if durable else TRANSIENT_DIR)
        directory = parent / directory_name(name)
        other = self._directories.get(directory)
        if other is not None:
            raise ValueError(f"log {name!r} and log {other.name!r} map to one directory")
        if fs.exists(directory):
            remove_tree(fs, directory)  # the remains of a deletion that failed half-way
        for index in range(partitions):
            fs.makedirs(partition_directory(directory, index))
        meta_path = directory / META_NAME
        meta = LogMeta(name, durable, partitions, index_interval_bytes, tag_index, keep_acked)
        write_atomic(fs, meta_path, meta.encode(), fsync=False)
        if durable:
            handle = FileHandle(meta_path, fs.open_read(meta_path), durable=True)
            handle.close_when_released = True  # closed once a sync batch has fsynced it
            self.written(handle)
        self.entries_changed(parent, durable=durable)
        self.entries_changed(directory, durable=durable)
        new_log = Log(
            name,
            durable,
            directory,
            index_interval_bytes,
            tag_index=tag_index,
            keep_acked=keep_acked,
        )
        kind = partition_class(new_log)
        for index in range(partitions):
            new_log.partitions.append(
                kind.create(new_log, index, partition_directory(directory, index), self)
            )
        self.logs[name] = new_log
        self._directories[directory] = new_log
        return new_log

    def delete_log(self, name: str) -> None:
        """Forget a log and remove its files (a sync batch in flight keeps its descriptors)."""
        doomed = self.logs.pop(name)
        del self._directories[doomed.directory]
        for partition in doomed.partitions:
            partition.deleted = True
            partition._close()
            self._dirty_partitions.pop(partition, None)
            self._retry_partitions.pop(partition, None)
            self._written_partitions.pop(partition, None)
            self._compactions.pop(partition, None)
            self.metrics.segments -= partition.segment_count
            self.metrics.stored_bytes -= partition._stored_bytes()
        fs = self.fs
        trash = free_name(fs, self.root / TRASH_DIR, doomed.directory.name)
        try:
            fs.rename(doomed.directory, trash)
            self.entries_changed(doomed.directory.parent, durable=doomed.durable)
        except OSError as error:
            log.warning("store: could not move %s to trash: %s", doomed.directory, error)
            trash = doomed.directory
        try:
            remove_tree(fs, trash)
        except OSError as error:
            log.warning("store: could not remove %s: %s (removed at next open)", trash, error)

    # -- what segments and journals report (FileTracker) --------------------------------------

    def written(self, handle: FileHandle) -> None:
        self._written_any = True
        if handle.durable:
            self._unsynced[handle] = None

    def entries_changed(self, directory: Path, *, durable: bool) -> None:
        if durable:
            self._written_any = True
            self._unsynced_dirs[directory] = None

    def release(self, handle: FileHandle) -> None:
        if handle.sync_holds:
            handle.close_when_released = True
            return
        self._unsynced.pop(handle, None)
        self._close_fd(handle)

    def mark_broken(self, error: BaseException) -> None:
        if self.broken is None:
            log.error("store broken: %s", error)
            self.broken = error

    def _close_fd(self, handle: FileHandle) -> None:
        if handle.fd < 0:
            return
        try:
            self.fs.close(handle.fd)
        except OSError as error:
            log.warning("store: closing %s: %s", handle.path, error)
        handle.fd = -1

    def _partition_dirty(self, partition: Partition) -> None:
        self._dirty_partitions[partition] = None
        self._became_dirty()

    def _definitions_changed(self) -> None:
        self._became_dirty()

    def _became_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            if self.on_dirty is not None and not self._writing:
                self.on_dirty()

    def _partition_written(self, partition: Partition) -> None:
        self._written_any = True
        self._written_partitions[partition] = None

    def _retry_later(self, partition: Partition) -> None:
        self._retry_partitions[partition] = None

    def _compaction_wanted(self, partition: Partition) -> None:
        self._compactions[partition] = None

    def _held_back(self) -> None:
        self._holding_back = True

    @property
    def sync_wanted(self) -> bool:
        """A new segment waits (in memory) for the one before it to be durable: under
        FsyncPolicy "interval" the caller may want to start a sync batch before the timer."""
        return self._holding_back

    @property
    def dirty(self) -> bool:
        """Something is buffered that write_pending would write (or retry)."""
        return self._dirty or bool(self._retry_partitions) or self.definitions.pending

    # -- writing and group commit ---------------------------------------------------------------

    def write_pending(self) -> None:
        """Write every buffered byte: one write per file. Never fsyncs.

        Raises WriteFailed (after writing everything else) if a write failed.
        """
        dirty, self._dirty_partitions = self._dirty_partitions, {}
        if self._retry_partitions:
            dirty = {**self._retry_partitions, **dirty}
            self._retry_partitions = {}
        self._dirty = False
        self._writing = True
        lost: dict[Partition, tuple[int, int]] = {}
        first_error: OSError | None = None
        try:
            for partition in dirty:
                if partition.deleted:
                    continue
                dropped, error = partition._write_pending()
                if dropped is not None:
                    lost[partition] = dropped
                if error is not None and first_error is None:
                    first_error = error
            if self.definitions.pending:
                try:
                    self.definitions._write()
                except OSError as error:
                    self.metrics.write_errors += 1
                    log.error("definitions journal write failed (%s); retried later", error)
                    if first_error is None:
                        first_error = error
        finally:
            self._writing = False
            if self._dirty and self.on_dirty is not None:
                self.on_dirty()  # something was dirtied while writing (acks of dropped records)
        if first_error is not None:
            raise WriteFailed(lost, first_error)

    def begin_sync(self) -> SyncBatch | None:
        """Capture what has been written since the last batch; None if nothing has.

        Batches may overlap (one fsyncing while the next begins); they end in the order
        they began.
        """
        if self.broken is not None:
            raise StoreBroken(f"the store is broken: {self.broken}") from self.broken
        if not self._written_any and not self._compactions:
            return None
        waiting = {p: None for p in self._compactions if p.compacting}  # one at a time
        if not self._written_any and len(waiting) == len(self._compactions):
            return None
        self._written_any = False
        self._holding_back = False
        compactions = []
        for partition in self._compactions:
            if partition in waiting:
                continue
            found = partition._begin_compaction()
            if found is not None:
                compactions.append(Compaction(partition, *found))
        self._compactions = waiting
        handles = list(self._unsynced)
        for handle in handles:
            handle.sync_holds += 1
        batch = SyncBatch(
            handles=handles,
            directories=list(self._unsynced_dirs),
            offsets={
                partition: partition.written_offset
                for partition in self._written_partitions
                if not partition.deleted
            },
            definitions_ticket=self.definitions.written_ticket,
            compactions=compactions,
            fsync=self.settings.fsync.mode != "never",
        )
        self._unsynced = {}
        self._unsynced_dirs = {}
        self._written_partitions = {}
        self._batches.append(batch)
        return batch

    def sync_files(self, batch: SyncBatch) -> None:
        """Any thread: fsync the batch's files and directories. Raises OSError."""
        if not batch.fsync:
            return
        fs = self.fs
        started = time.perf_counter()
        count = 0
        try:
            for handle in batch.handles:
                fs.fsync(handle.fd)
                count += 1
            for compaction in batch.compactions:
                try:
                    batch.compacted[compaction.partition] = self._compact(compaction, fsync=True)
                except FileNotFoundError:
                    if not compaction.partition.deleted:
                        raise
                count += 2
            for directory in batch.directories:
                try:
                    fs.fsync_dir(directory)
                except FileNotFoundError:
                    continue  # removed meanwhile (a deleted log)
                count += 1
        finally:
            self.metrics.observe_sync(count, time.perf_counter() - started)

    def _compact(self, compaction: Compaction, *, fsync: bool) -> int:
        write_atomic(self.fs, compaction.path, compaction.data, fsync=fsync)
        return len(compaction.data)

    def end_sync(self, batch: SyncBatch, error: BaseException | None = None) -> SyncResult:
        """Caller's thread: apply a batch's outcome (`error`: what sync_files raised)."""
        if not self._batches or batch is not self._batches[0]:
            raise RuntimeError("this sync batch is not the oldest in flight")
        self._batches.popleft()
        if error is None and self.broken is not None:
            error = self.broken  # an earlier batch failed: this one proves nothing
        for handle in batch.handles:
            handle.sync_holds -= 1
            if handle.close_when_released and not handle.sync_holds:
                self._unsynced.pop(handle, None)
                self._close_fd(handle)
        if error is None and not batch.fsync:
            try:
                for compaction in batch.compactions:
                    if not compaction.partition.deleted:
                        batch.compacted[compaction.partition] = self._compact(
                            compaction, fsync=False
                        )
            except OSError as failure:
                error = failure
        if error is not None:
            self.mark_broken(error)
            for compaction in batch.compactions:
                compaction.partition.compacting = False
            lost = {
                partition: (partition.durable_offset, offset)
                for partition, offset in batch.offsets.items()
                if offset > partition.durable_offset and not partition.deleted
            }
            return SyncResult([], self.definitions.durable_ticket, lost)
        advanced = []
        for partition, offset in batch.offsets.items():
            if offset > partition.durable_offset and not partition.deleted:
                partition.durable_offset = offset
                advanced.append(partition)
                partition._after_durable()
        definitions = self.definitions
        if batch.definitions_ticket > definitions.durable_ticket:
            definitions.durable_ticket = batch.definitions_ticket
        for compaction in batch.compactions:
            if not compaction.partition.deleted:
                compaction.partition._end_compaction(batch.compacted.get(compaction.partition))
        return SyncResult(advanced, definitions.durable_ticket, {})

    def sync_now(self) -> SyncResult | None:
        """begin_sync, sync_files and end_sync in this thread (startup, tools, tests)."""
        batch = self.begin_sync()
        if batch is None:
            return None
        try:
            self.sync_files(batch)
        except OSError as error:
            return self.end_sync(batch, error)
        return self.end_sync(batch)

    def close(self) -> None:
        """Close every file (no implicit write or fsync)."""
        for each in self.logs.values():
            for partition in each.partitions:
                partition._close()
        self.definitions._close()
        for handle in list(self._unsynced):
            self.release(handle)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
