"""Per-segment tag sets: which tags a segment's records carry, kept beside the segment so that
a tag-filtered read skips segments that cannot hold a match without reading them.

Only logs created with tag_index keep tag sets. The caller passes a tag (opaque bytes, or
None for an untagged record) with each append; the store never looks into payloads. In
memory a segment's set is a Python set plus an "holds untagged records" flag, or None:
unknown, which counts as "may hold anything". A set that grows past TAGS_PER_SEGMENT_MAX
tags, or meets a tag longer than TAG_BYTES_MAX, becomes unknown: the memory a segment's
set takes stays bounded whatever the caller tags with.

Tag file format, version 1
==========================
When a durable log's segment is sealed (a newer one started), its set is written to
`<base_offset:020d>.tags` beside `<base_offset:020d>.seg`, in the store's framing (see
record.py): the 16-byte file header (magic b"AMQT", format version 1, flags 0, the
segment's base_offset), then one record, kind 1 TAGS, whose offset is the segment's last
offset when the set was written and whose timestamp_ms is 0. Its payload (big-endian)::

    flags u8 (bit 0: the segment holds untagged records) | count u32 |
    (length u16 | tag[length]) * count          tags in sorted order

The record's CRC covers the payload, so a torn or damaged file never validates. It is
written (not fsynced) in the write_pending that finds the sealed segment fully written,
which is never after the write of the next segment's first bytes, so the sync batch that
makes those bytes durable makes the tag file durable too.

Recovery trusts a tag file only if it is whole, valid, names the segment's base offset and
covers the segment's last offset (a segment never gets records after its set was written;
this check makes sure of it even if the file outlived a segment that grew again). A
missing or invalid file, and the newest segment (still being appended to), leave the set
unknown. A tag file without its segment is removed.

Imports the standard library and store.* below it only.
"""

from __future__ import annotations

import struct
from typing import Final

from amqpd.store.record import (
    FILE_HEADER_BYTES,
    FormatError,
    decode_file_header,
    decode_record,
    encode_file_header,
    encode_record,
)

TAGS_MAGIC: Final = b"AMQT"
TAGS_KIND: Final = 1
TAGS_SUFFIX: Final = ".tags"
TAGS_PER_SEGMENT_MAX: Final = 256  # past this many distinct tags a segment's set is unknown
TAG_BYTES_MAX: Final = 1024  # a longer tag makes its segment's set unknown
FLAG_UNTAGGED: Final = 0x01

_HEAD = struct.Struct(">BI")
_LENGTH = struct.Struct(">H")


def tags_name(base_offset: int) -> str:
    return f"{base_offset:020d}{TAGS_SUFFIX}"


def parse_tags_name(name: str) -> int | None:
    """The base offset a tag file name stands for, or None if it is not one."""
    stem = name[: -len(TAGS_SUFFIX)]
    if name.endswith(TAGS_SUFFIX) and len(stem) == 20 and stem.isascii() and stem.isdigit():
        return int(stem)
    return None


def encode_tags(
    base_offset: int, last_offset: int, tags: set[bytes] | frozenset[bytes], untagged: bool
) -> bytes:
    """A whole tag file. Every tag must be at most TAG_BYTES_MAX bytes."""
    parts = [_HEAD.pack(FLAG_UNTAGGED if untagged else 0, len(tags))]
    for tag in sorted(tags):
        parts.append(_LENGTH.pack(len(tag)))
        parts.append(tag)
    return encode_file_header(TAGS_MAGIC, base_offset) + encode_record(
        TAGS_KIND, max(last_offset, 0), 0, b"".join(parts)
    )


def decode_tags(data: bytes) -> tuple[int, int, set[bytes], bool]:
    """(base_offset, last_offset, tags, untagged) of a whole tag file; FormatError if the
    bytes are not one."""
    base_offset = decode_file_header(data[:FILE_HEADER_BYTES], TAGS_MAGIC)
    kind, last_offset, _, payload, end = decode_record(data, FILE_HEADER_BYTES)
    if kind != TAGS_KIND or end != len(data):
        raise FormatError("tag file holds more or other than one TAGS record")
    if len(payload) < _HEAD.size:
        raise FormatError(f"TAGS payload of {len(payload)} bytes")
    flags, count = _HEAD.unpack_from(payload)
    if flags & ~FLAG_UNTAGGED:
        raise FormatError(f"unknown tag file flags {flags:#04x}")
    tags: set[bytes] = set()
    position = _HEAD.size
    for _ in range(count):
        if position + _LENGTH.size > len(payload):
            raise FormatError("TAGS payload ends inside a tag")
        (length,) = _LENGTH.unpack_from(payload, position)
        position += _LENGTH.size
        if position + length > len(payload):
            raise FormatError("TAGS payload ends inside a tag")
        tags.add(payload[position : position + length])
        position += length
    if position != len(payload) or len(tags) != count:
        raise FormatError("TAGS payload has trailing bytes or repeated tags")
    return base_offset, last_offset, tags, bool(flags & FLAG_UNTAGGED)
