"""Reading records back from a file: sequential scans, resynchronising after damage, and
copying damaged bytes aside.

Scans read large chunks with one pread each and decode with struct.unpack_from on a
memoryview; every record's CRC is checked. A scan stops at the first invalid record and says
where; what that means (a torn tail to cut, or damage to quarantine) is the caller's call.

Imports the standard library and store.record, store.filesystem only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from amqpd.store.filesystem import FileSystem
from amqpd.store.record import (
    CRC_FIELD,
    KIND_AT,
    OFFSET_LIMIT,
    RECORD_HEADER,
    RECORD_HEADER_BYTES,
    candidate_pattern,
    check_record,
)

SCAN_CHUNK_BYTES: Final = 4 * 1024 * 1024  # recovery reads this much per pread
COPY_CHUNK_BYTES: Final = 1024 * 1024

ScannedRecord = tuple[int, int, int, int, memoryview, int]
"""(position, kind, offset, timestamp_ms, payload, end position)"""


class RecordScanner:
    """Iterates the valid records of fd[start:end]; stops at the first invalid one.

    After iteration, `position` is where the scan stopped: `end` if every byte was valid,
    otherwise the start of the first invalid record (bad CRC, kind 0, offset not increasing,
    truncated, or a length that runs past `end`). `last_offset` is the last valid offset.
    """

    def __init__(
        self,
        fs: FileSystem,
        fd: int,
        start: int,
        end: int,
        *,
        after_offset: int = -1,
        before_offset: int = OFFSET_LIMIT,
        chunk_bytes: int = SCAN_CHUNK_BYTES,
    ) -> None:
        self.fs = fs
        self.fd = fd
        self.position = start
        self.end = end
        self.last_offset = after_offset
        self.before_offset = before_offset
        self.chunk_bytes = chunk_bytes

    @property
    def complete(self) -> bool:
        return self.position >= self.end

    def __iter__(self) -> Iterator[ScannedRecord]:
        unpack_from = RECORD_HEADER.unpack_from
        crc32 = zlib.crc32
        header_bytes = RECORD_HEADER_BYTES
        crc_bytes = CRC_FIELD.size
        before = self.before_offset
        end = self.end
        position = self.position
        after = self.last_offset
        want = self.chunk_bytes
        while position < end:
            data = self.fs.pread(self.fd, min(want, end - position), position)
            if not data:
                break  # the file is shorter than `end`: what is missing is invalid
            view = memoryview(data)
            size = len(data)
            at_end = position + size >= end
            rel = 0
            while rel + header_bytes <= size:
                crc, length, kind, offset, timestamp_ms = unpack_from(view, rel)
                stop = rel + header_bytes + length
                if stop > size:
                    break
                if (
                    kind == 0
                    or offset <= after
                    or offset >= before
                    or crc32(view[rel + crc_bytes : stop]) != crc
                ):
                    self.position = position + rel
                    self.last_offset = after
                    return
                after = offset
                yield (
                    position + rel,
                    kind,
                    offset,
                    timestamp_ms,
                    view[rel + header_bytes : stop],
                    (position + stop),
                )
                rel = stop
            position += rel
            self.position = position
            self.last_offset = after
            want = self.chunk_bytes
            if position >= end:
                break
            if at_end and rel == size:
                break
            remaining = size - rel
            if remaining < header_bytes:
                if at_end:
                    break  # a torn header at the end of the file
                continue
            _, length, *_ = unpack_from(view, rel)
            needed = header_bytes + length
            if position + needed > end:
                break  # the length runs past the end: invalid here
            want = max(self.chunk_bytes, needed)
        self.position = position
        self.last_offset = after


def resync(
    fs: FileSystem,
    fd: int,
    start: int,
    end: int,
    after_offset: int,
    before_offset: int,
    chunk_bytes: int = SCAN_CHUNK_BYTES,
) -> int:
    """The first position in fd[start:end] that holds a whole valid record whose offset lies
    strictly between after_offset and before_offset; `end` if there is none."""
    if after_offset + 1 >= before_offset:
        return end
    pattern = candidate_pattern(after_offset, before_offset)
    overlap = RECORD_HEADER_BYTES
    position = start
    while position < end:
        data = fs.pread(fd, min(chunk_bytes, end - position), position)
        if not data:
            return end
        size = len(data)
        limit = size if position + size >= end else max(size - overlap, 1)
        for match in pattern.finditer(data, KIND_AT):
            candidate = match.start() - KIND_AT
            if candidate >= limit:
                break
            if candidate + RECORD_HEADER_BYTES <= size:
                _, length, *_ = RECORD_HEADER.unpack_from(data, candidate)
                record_end = candidate + RECORD_HEADER_BYTES + length
                if position + record_end > end:
                    continue
                if record_end <= size:
                    if check_record(data, candidate, size, after_offset, before_offset) >= 0:
                        return position + candidate
                    continue
            # the record runs past this chunk: read it whole
            whole = fs.pread(fd, RECORD_HEADER_BYTES, position + candidate)
            if len(whole) < RECORD_HEADER_BYTES:
                continue
            _, length, *_ = RECORD_HEADER.unpack_from(whole)
            if position + candidate + RECORD_HEADER_BYTES + length > end:
                continue
            whole = fs.pread(fd, RECORD_HEADER_BYTES + length, position + candidate)
            if check_record(whole, 0, len(whole), after_offset, before_offset) >= 0:
                return position + candidate
        if position + size >= end:
            return end
        position += limit
    return end


def copy_range(fs: FileSystem, fd: int, start: int, end: int, target: Path) -> None:
    """Copy fd[start:end] into a new file `target` (quarantine); not fsynced."""
    out = fs.open_new(target)
    try:
        position = start
        while position < end:
            data = fs.pread(fd, min(COPY_CHUNK_BYTES, end - position), position)
            if not data:
                break
            fs.write(out, data)
            position += len(data)
    finally:
        fs.close(out)
