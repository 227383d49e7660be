"""An append-only journal file (ack journals, the definitions journal): buffer, write, recover.

Records use the segment record format (record.py) with a sequence number as the offset, so
replay can tell a stale or misplaced record from the next one. Appends are buffered and
written by `write` (one write per call). A failed write is truncated back to the length the
file had before, and the buffered records are kept for the next attempt.

Recovery replays every valid record; the first invalid one ends the replay and the file is
truncated there. If valid records follow the damage (it was not a torn tail), the bytes from
the damage to the end are copied to quarantine and logged as an ERROR: what they held is lost
(for an ack journal that only means redelivery).

Imports the standard library and store.* below it only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import attrs

from amqpd.store.files import FileHandle, FileTracker, free_name
from amqpd.store.record import (
    FILE_HEADER_BYTES,
    OFFSET_LIMIT,
    FormatError,
    decode_file_header,
    encode_file_header,
    encode_record,
)
from amqpd.store.scan import RecordScanner, copy_range, resync

log = logging.getLogger("amqpd.store")


class JournalFile:
    __slots__ = (
        "durable",
        "handle",
        "magic",
        "next_sequence",
        "path",
        "pending",
        "size",
        "tracker",
        "written_sequence",
    )

    def __init__(
        self,
        tracker: FileTracker,
        path: Path,
        magic: bytes,
        *,
        durable: bool,
        size: int = 0,
        next_sequence: int = 1,
    ) -> None:
        self.tracker = tracker
        self.path = path
        self.magic = magic
        self.durable = durable
        self.handle: FileHandle | None = None
        self.size = size  # bytes in the file; 0: not created (or emptied) yet
        self.pending: list[bytes] = []
        self.next_sequence = next_sequence
        self.written_sequence = next_sequence - 1  # every sequence <= this has been written

    def append(self, kind: int, payload: bytes) -> int:
        """Buffer one record; returns its sequence number."""
        sequence = self.next_sequence
        self.pending.append(encode_record(kind, sequence, 0, payload))
        self.next_sequence = sequence + 1
        return sequence

    def write(self) -> int:
        """Write the buffered records; returns the bytes written. Never fsyncs.

        On OSError the file is truncated back and the records stay buffered; the error is
        raised. If even the truncation fails, the tracker is told the store is broken.
        """
        if not self.pending:
            return 0
        data = b"".join(self.pending)
        if self.size == 0:
            data = encode_file_header(self.magic) + data
        handle = self.handle
        try:
            if handle is None:
                handle = self.handle = FileHandle(
                    self.path, self.tracker.fs.open_append(self.path), durable=self.durable
                )
                self.tracker.entries_changed(self.path.parent, durable=self.durable)
            self.tracker.fs.write(handle.fd, data)
        except OSError:
            if handle is not None:
                try:
                    self.tracker.fs.truncate(handle.fd, self.size)
                except OSError as error:
                    self.tracker.mark_broken(error)
            raise
        self.size += len(data)
        self.pending.clear()
        self.written_sequence = self.next_sequence - 1
        self.tracker.written(handle)
        return len(data)

    def replaced(self, size: int) -> None:
        """The file was replaced (compaction): reopen it on the next write."""
        if self.handle is not None:
            self.tracker.release(self.handle)
            self.handle = None
        self.size = size
        self.pending.clear()
        self.written_sequence = self.next_sequence - 1

    def close(self) -> None:
        if self.handle is not None:
            self.tracker.release(self.handle)
            self.handle = None


@attrs.frozen
class JournalRecovery:
    size: int  # valid bytes kept
    next_sequence: int
    records: int
    truncated_bytes: int  # torn tail cut off
    damaged_bytes: int  # mid-journal damage: cut off and copied to quarantine


def recover_journal(
    tracker: FileTracker,
    path: Path,
    magic: bytes,
    apply: Callable[[int, int, bytes], None],
    quarantine_dir: Path,
    label: str,
) -> JournalRecovery:
    """Replay a journal's valid records through `apply(kind, sequence, payload)`.

    `apply` raises FormatError for a record whose payload it cannot use; that counts as
    damage at that record. Missing file: nothing to replay.
    """
    fs = tracker.fs
    if not fs.exists(path):
        return JournalRecovery(0, 1, 0, 0, 0)
    fd = fs.open_append(path)
    try:
        size = fs.file_size(fd)
        if size < FILE_HEADER_BYTES:  # torn while being created
            if size:
                log.warning("%s: %d-byte torn journal header removed", label, size)
                fs.truncate(fd, 0)
            return JournalRecovery(0, 1, 0, size, 0)
        try:
            decode_file_header(fs.pread(fd, FILE_HEADER_BYTES, 0), magic)
        except FormatError as error:
            if resync(fs, fd, FILE_HEADER_BYTES, size, 0, OFFSET_LIMIT) >= size:
                # no valid record either: created, never made durable, torn by a crash
                log.warning("%s: %d-byte journal torn while being created, emptied", label, size)
                fs.truncate(fd, 0)
                return JournalRecovery(0, 1, 0, size, 0)
            target = free_name(fs, quarantine_dir, f"{_quarantine_stem(path)}.bin")
            log.error("%s: unreadable journal header (%s); moved to %s", label, error, target)
            fs.rename(path, target)
            return JournalRecovery(0, 1, 0, 0, size)
        scanner = RecordScanner(fs, fd, FILE_HEADER_BYTES, size)
        records = 0
        last_sequence = 0
        for position, kind, sequence, _, payload, _ in scanner:
            try:
                apply(kind, sequence, bytes(payload))
            except FormatError as error:
                log.error("%s: record %d at byte %d: %s", label, sequence, position, error)
                scanner.position = position
                break
            records += 1
            last_sequence = sequence
        valid_end = scanner.position
        truncated = damaged = 0
        if valid_end < size:
            more = resync(fs, fd, valid_end + 1, size, last_sequence, OFFSET_LIMIT)
            if more < size:
                damaged = size - valid_end
                target = free_name(fs, quarantine_dir, f"{_quarantine_stem(path)}-{valid_end}.bin")
                copy_range(fs, fd, valid_end, size, target)
                log.error(
                    "%s: damaged at byte %d of %d; replay stopped after record %d; the rest"
                    " (%d bytes) is lost and copied to %s",
                    label,
                    valid_end,
                    size,
                    last_sequence,
                    damaged,
                    target,
                )
            else:
                truncated = size - valid_end
                log.info("%s: torn tail of %d bytes truncated", label, truncated)
            fs.truncate(fd, valid_end)
        return JournalRecovery(valid_end, last_sequence + 1, records, truncated, damaged)
    finally:
        fs.close(fd)


def _quarantine_stem(path: Path) -> str:
    """<log dir>-p<N>-acks.journal, or definitions-definitions.journal."""
    if path.parent.parent.name and path.parent.name.startswith("p"):
        return f"{path.parent.parent.name}-{path.parent.name}-{path.name}"
    return f"{path.parent.name}-{path.name}"
