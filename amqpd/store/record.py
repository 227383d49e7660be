"""The record codec and the on-disk format of the store, version 1. Pure.

Disk format, version 1
======================
Big-endian throughout. Every file the store writes is a 16-byte file header followed by
records; only the magic differs between file types.

Layout under the store root::

    logs/<dir>/meta                  one META record (JSON: name, durable, partitions);
                                     written to meta.tmp then renamed (atomic)
    logs/<dir>/p<N>/<base>.seg       segments of partition N; <base> = f"{base_offset:020d}"
    logs/<dir>/p<N>/<base>.tags      the tag set of sealed segment <base> (tag_index logs;
                                     format in tags.py, magic b"AMQT")
    logs/<dir>/p<N>/acks.journal     the partition's ack journal
    transient/...                    the same for durable=False logs; wiped at every open
    definitions/definitions.journal  the definitions journal
    quarantine/                      damaged bytes copied or moved aside by recovery:
                                     <dir>-p<N>-<segment>-<byte position>.bin
    trash/                           deleted logs being removed; wiped at every open
    *.tmp                            a file being replaced (meta, a compaction); a leftover
                                     one is removed at open: the file it was to replace holds

<dir> is the first 32 hex digits of sha256(log name, UTF-8): safe on any file system
whatever the name; the real name is in `meta`.

File header (16 bytes)::

    magic[4] | format_version u16 (= 1) | flags u16 (= 0) | base_offset u64

    magic: b"AMQS" segment, b"AMQA" ack journal, b"AMQD" definitions journal, b"AMQM" meta,
    b"AMQT" tag file.
    base_offset: a segment's first offset (every record in it has offset >= base_offset),
    the segment's in its tag file; 0 in the other files.

Record (25-byte header, then the payload)::

    crc32 u32 | length u32 | kind u8 | offset u64 | timestamp_ms u64 | payload[length]

    crc32 is zlib.crc32 of every byte after the crc field (length .. end of payload), so a
    torn, truncated or zeroed tail never validates. kind is 1..255 (0 never validates, which
    makes zeroed bytes fail fast). offsets strictly increase within a file; gaps are allowed.

Record kinds are the caller's in segments. The store's own files use these kinds:

    ack journal  1 ACK_RANGES  payload: (start u64, end u64)*   offsets [start, end) acked
                 2 DELIVERED   payload: delivered_below u64
                 3 SNAPSHOT    payload: acked_below u64 | delivered_below u64 | (start, end)*
                 4 COUNTERS    payload: (offset u64, value u64)*   the caller's counter
                                        for each offset (a later record wins; a
                                        SNAPSHOT clears them, the COUNTERS after it
                                        restore the live ones)
                 5 DROPPED     payload: dropped_below u64   (keep_acked logs) every
                                        segment wholly below it was dropped: its
                                        offsets are acked and recovery removes any
                                        such segment still there (a later record
                                        wins; compaction writes it after the SNAPSHOT)
    definitions  1 PUT         payload: key_length u32 | key | value
                 2 DELETE      payload: key
    meta         1 META        payload: UTF-8 JSON {"name", "durable", "partitions"} and,
                                        optionally, "index_interval_bytes" (the log's
                                        own sparse-index interval; readers that do not
                                        know it use theirs, which reads the same data),
                                        "tag_index": true and "keep_acked": true
                                        (absent: false)

In the store's own files, a record's offset is a sequence number (the definitions ticket in
the definitions journal) and timestamp_ms is 0.

Recovery: in the newest segment of a partition the first invalid record starts a torn tail,
which is cut off. A sealed segment never has a torn tail (a segment gets bytes only once its
predecessor is durable), so an invalid record there is damage: the bytes up to the next valid
record are copied to quarantine/, logged as an error and cut out of the segment. A segment
whose header is unreadable is moved to quarantine/ whole. A journal's torn tail is cut off;
damage in the middle of a journal ends its replay there.

A data folder written by this version is kept as a test fixture
(tests/store/fixtures/format_v1): a change that cannot read it needs a new format version.

Imports the standard library only.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Final

FORMAT_VERSION: Final = 1

SEGMENT_MAGIC: Final = b"AMQS"
ACK_JOURNAL_MAGIC: Final = b"AMQA"
DEFINITIONS_MAGIC: Final = b"AMQD"
META_MAGIC: Final = b"AMQM"

FILE_HEADER: Final = struct.Struct(">4sHHQ")
FILE_HEADER_BYTES: Final = 16

RECORD_HEADER: Final = struct.Struct(">IIBQQ")
RECORD_HEADER_BYTES: Final = 25
RECORD_TAIL: Final = struct.Struct(">IBQQ")  # the header after the crc field
CRC_FIELD: Final = struct.Struct(">I")
KIND_AT: Final = 8  # byte position of the kind field within a record
OFFSET_AT: Final = 9  # byte position of the offset field within a record

U64: Final = struct.Struct(">Q")
RANGE: Final = struct.Struct(">QQ")

KIND_MIN: Final = 1
KIND_MAX: Final = 255
OFFSET_LIMIT: Final = 2**64  # offsets and timestamps are u64
PAYLOAD_BYTES_MAX: Final = 2**32 - 1

assert FILE_HEADER.size == FILE_HEADER_BYTES
assert RECORD_HEADER.size == RECORD_HEADER_BYTES
assert CRC_FIELD.size + RECORD_TAIL.size == RECORD_HEADER_BYTES
assert RECORD_HEADER_BYTES - OFFSET_AT == 16  # offset u64 then timestamp u64


class FormatError(ValueError):
    """Bytes that are not a valid file header or record of this format."""


def encode_record(kind: int, offset: int, timestamp_ms: int, payload: bytes) -> bytes:
    """One record, header and payload. The hot path in Partition.append inlines this."""
    if not KIND_MIN <= kind <= KIND_MAX:
        raise ValueError(f"record kind {kind} is not in {KIND_MIN}..{KIND_MAX}")
    try:
        tail = RECORD_TAIL.pack(len(payload), kind, offset, timestamp_ms)
    except struct.error as error:
        raise ValueError(f"cannot encode record at offset {offset}: {error}") from None
    return CRC_FIELD.pack(zlib.crc32(payload, zlib.crc32(tail))) + tail + payload


def decode_record(data: bytes | memoryview, position: int = 0) -> tuple[int, int, int, bytes, int]:
    """(kind, offset, timestamp_ms, payload, end position) of the record at `position`.

    Raises FormatError if the bytes there are not one whole valid record.
    """
    end = check_record(data, position, len(data), -1, OFFSET_LIMIT)
    if end < 0:
        raise FormatError(f"no valid record at byte {position}")
    _, length, kind, offset, timestamp_ms = RECORD_HEADER.unpack_from(data, position)
    return kind, offset, timestamp_ms, bytes(data[end - length : end]), end


def check_record(
    data: bytes | memoryview, position: int, end: int, after_offset: int, before_offset: int
) -> int:
    """The end position of the valid record at `position`, or -1.

    Valid: whole within `data[:end]`, kind 1..255, after_offset < offset < before_offset, and
    the CRC matches.
    """
    if position < 0 or position + RECORD_HEADER_BYTES > end:
        return -1
    crc, length, kind, offset, _ = RECORD_HEADER.unpack_from(data, position)
    stop: int = position + RECORD_HEADER_BYTES + length
    if stop > end or kind == 0 or not after_offset < offset < before_offset:
        return -1
    if zlib.crc32(memoryview(data)[position + CRC_FIELD.size : stop]) != crc:
        return -1
    return stop


def encode_file_header(magic: bytes, base_offset: int = 0) -> bytes:
    return FILE_HEADER.pack(magic, FORMAT_VERSION, 0, base_offset)


def decode_file_header(data: bytes, magic: bytes) -> int:
    """The base offset in a file header; FormatError if it is not one of `magic`, version 1."""
    if len(data) < FILE_HEADER_BYTES:
        raise FormatError(f"file header is {len(data)} bytes, not {FILE_HEADER_BYTES}")
    found, version, flags, base_offset = FILE_HEADER.unpack_from(data)
    if found != magic:
        raise FormatError(f"magic {found!r}, expected {magic!r}")
    if version != FORMAT_VERSION:
        raise FormatError(f"format version {version}; this store reads {FORMAT_VERSION}")
    if flags != 0:
        raise FormatError(f"unknown flags {flags:#06x}")
    return int(base_offset)


def candidate_pattern(after_offset: int, before_offset: int) -> re.Pattern[bytes]:
    """Where a record with after_offset < offset < before_offset may start, as a regex.

    Matches, with zero width at the kind byte, a non-zero kind followed by the leading offset
    bytes that every such offset shares. Resynchronising after damage tries only these
    positions, which the regex engine finds at C speed; zeroed or random bytes rarely match.
    """
    low = max(after_offset + 1, 0).to_bytes(8, "big")
    high = min(before_offset - 1, OFFSET_LIMIT - 1).to_bytes(8, "big")
    shared = 0
    while shared < 8 and low[shared] == high[shared]:
        shared += 1
    return re.compile(b"(?=[\x01-\xff]" + re.escape(low[:shared]) + b")", re.DOTALL)


def find_record(
    data: bytes | memoryview,
    start: int,
    end: int,
    after_offset: int,
    before_offset: int,
) -> int:
    """The first position >= start where a whole valid record lies in data[:end]; -1 if none."""
    if after_offset + 1 >= before_offset:
        return -1
    pattern = candidate_pattern(after_offset, before_offset)
    for match in pattern.finditer(data, start + KIND_AT):
        position = match.start() - KIND_AT
        if position + RECORD_HEADER_BYTES > end:
            break
        if check_record(data, position, end, after_offset, before_offset) >= 0:
            return position
    return -1
