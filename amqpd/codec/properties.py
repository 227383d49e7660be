"""The content header: basic properties, decoded only when a feature asks for them.

A content header payload is `class_id u16 | weight u16 | body_size u64 | flags u16+ |
properties`; each property is present when its flag bit is set, in the fixed order below.
The broker keeps the payload as the bytes it received and hands them to consumers
unchanged; `decode_properties` runs only when a rule needs a property (user_id, headers,
expiration, priority, delivery_mode), and the flag tests below answer "is it there at
all?" without decoding anything.

Pure functions on bytes; imports nothing from amqpd but codec.fields and errors.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from amqpd.codec.fields import (
    FieldTable,
    decode_table,
    encode_short_string,
    encode_table,
)
from amqpd.errors import AMQPSyntaxError

BASIC_CLASS_ID: Final = 60
CONTENT_HEADER_PREFIX: Final = struct.Struct(">HHQ")  # class_id, weight, body_size
PROPERTY_FLAGS_OFFSET: Final = CONTENT_HEADER_PREFIX.size

FLAG_CONTENT_TYPE: Final = 0x8000
FLAG_CONTENT_ENCODING: Final = 0x4000
FLAG_HEADERS: Final = 0x2000
FLAG_DELIVERY_MODE: Final = 0x1000
FLAG_PRIORITY: Final = 0x0800
FLAG_CORRELATION_ID: Final = 0x0400
FLAG_REPLY_TO: Final = 0x0200
FLAG_EXPIRATION: Final = 0x0100
FLAG_MESSAGE_ID: Final = 0x0080
FLAG_TIMESTAMP: Final = 0x0040
FLAG_TYPE: Final = 0x0020
FLAG_USER_ID: Final = 0x0010
FLAG_APP_ID: Final = 0x0008
FLAG_CLUSTER_ID: Final = 0x0004
_FLAG_CONTINUATION: Final = 0x0001

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


@attrs.frozen
class BasicProperties:
    """The 14 basic properties; None means absent (its flag bit is clear)."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: FieldTable | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None  # seconds since the epoch, as on the wire
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


# (attribute, flag, kind) in wire order; kind: s = shortstr, o = octet, t = table, q = u64
_LAYOUT: Final = (
    ("content_type", FLAG_CONTENT_TYPE, "s"),
    ("content_encoding", FLAG_CONTENT_ENCODING, "s"),
    ("headers", FLAG_HEADERS, "t"),
    ("delivery_mode", FLAG_DELIVERY_MODE, "o"),
    ("priority", FLAG_PRIORITY, "o"),
    ("correlation_id", FLAG_CORRELATION_ID, "s"),
    ("reply_to", FLAG_REPLY_TO, "s"),
    ("expiration", FLAG_EXPIRATION, "s"),
    ("message_id", FLAG_MESSAGE_ID, "s"),
    ("timestamp", FLAG_TIMESTAMP, "q"),
    ("type", FLAG_TYPE, "s"),
    ("user_id", FLAG_USER_ID, "s"),
    ("app_id", FLAG_APP_ID, "s"),
    ("cluster_id", FLAG_CLUSTER_ID, "s"),
)


def body_size_of(header: bytes) -> int:
    """The body size a content header announces."""
    return int(_U64.unpack_from(header, 4)[0])


def property_flags(header: bytes) -> int:
    """The first flag word; every basic property lives in it."""
    return int(_U16.unpack_from(header, PROPERTY_FLAGS_OFFSET)[0])


def _properties_offset(header: bytes) -> int:
    offset = PROPERTY_FLAGS_OFFSET
    while True:
        (flags,) = _U16.unpack_from(header, offset)
        offset += 2
        if not flags & _FLAG_CONTINUATION:
            return offset


def delivery_mode_of(header: bytes) -> int | None:
    """The delivery_mode property, found by skipping the three properties before it (no
    decoding): the test every message takes on its way to a durable queue."""
    flags = property_flags(header)
    if not flags & FLAG_DELIVERY_MODE:
        return None
    try:
        offset = _properties_offset(header)
        if flags & FLAG_CONTENT_TYPE:
            offset += 1 + header[offset]
        if flags & FLAG_CONTENT_ENCODING:
            offset += 1 + header[offset]
        if flags & FLAG_HEADERS:
            offset += 4 + int(_U32.unpack_from(header, offset)[0])
        return header[offset]
    except (struct.error, IndexError) as error:
        raise AMQPSyntaxError("content header properties are truncated") from error


def decode_properties(header: bytes) -> BasicProperties:
    """Decode every property present in a content-header payload."""
    try:
        flags = property_flags(header)
        offset = _properties_offset(header)
        values: dict[str, object] = {}
        for name, flag, kind in _LAYOUT:
            if not flags & flag:
                continue
            if kind == "s":
                length = header[offset]
                end = offset + 1 + length
                if end > len(header):
                    raise AMQPSyntaxError(f"property {name} runs past the content header")
                values[name] = header[offset + 1 : end].decode("utf-8", "surrogateescape")
                offset = end
            elif kind == "o":
                values[name] = header[offset]
                offset += 1
            elif kind == "t":
                values[name], offset = decode_table(header, offset)
            else:
                (values[name],) = _U64.unpack_from(header, offset)
                offset += 8
    except (struct.error, IndexError) as error:
        raise AMQPSyntaxError("content header properties are truncated") from error
    return BasicProperties(**values)  # type: ignore[arg-type]


def encode_properties(properties: BasicProperties) -> bytes:
    """Flag word and property values, as they follow body_size in a content header."""
    flags = 0
    parts: list[bytes] = []
    for name, flag, kind in _LAYOUT:
        value = getattr(properties, name)
        if value is None:
            continue
        flags |= flag
        if kind == "s":
            parts.append(encode_short_string(value))
        elif kind == "o":
            parts.append(bytes((value,)))
        elif kind == "t":
            parts.append(encode_table(value))
        else:
            parts.append(_U64.pack(value))
    return _U16.pack(flags) + b"".join(parts)


def encode_content_header(body_size: int, properties: BasicProperties) -> bytes:
    """A whole content-header payload for class basic."""
    return CONTENT_HEADER_PREFIX.pack(BASIC_CLASS_ID, 0, body_size) + encode_properties(properties)


def with_body_size(header: bytes, body_size: int) -> bytes:
    """The same header announcing another body size (properties untouched)."""
    return header[:4] + _U64.pack(body_size) + header[12:]


def with_header_entry(header: bytes, entry: bytes) -> bytes:
    """The same content header with one more entry at the end of its headers table (one
    made for it if there is none). `entry` is encoded: key shortstr, type octet, value.
    Only the table's bytes change, so no other property is decoded (a stream adds
    `x-stream-offset` to every delivery this way)."""
    flags = property_flags(header)
    try:
        offset = _properties_offset(header)
        if flags & FLAG_CONTENT_TYPE:
            offset += 1 + header[offset]
        if flags & FLAG_CONTENT_ENCODING:
            offset += 1 + header[offset]
        if flags & FLAG_HEADERS:
            (length,) = _U32.unpack_from(header, offset)
            end = offset + 4 + length
            return b"".join(
                (
                    header[:offset],
                    _U32.pack(length + len(entry)),
                    header[offset + 4 : end],
                    entry,
                    header[end:],
                )
            )
    except (struct.error, IndexError) as error:
        raise AMQPSyntaxError("content header properties are truncated") from error
    return b"".join(
        (
            header[:PROPERTY_FLAGS_OFFSET],
            _U16.pack(flags | FLAG_HEADERS),
            header[PROPERTY_FLAGS_OFFSET + 2 : offset],
            _U32.pack(len(entry)),
            entry,
            header[offset:],
        )
    )
