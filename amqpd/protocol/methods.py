"""Encode and decode method-frame payloads for every method in protocol/spec.py.

One interpreter over each class's FIELDS layout: consecutive bit fields share an octet,
least significant bit first; tables go through codec.fields so their wire types survive.
This is the path for everything but the hot methods (publish, deliver, ack), which
protocol/fast_codec.py handles with precompiled structs.

Sans-IO; imports amqpd.codec, amqpd.errors and protocol.spec only.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from amqpd.codec.fields import decode_table, encode_short_string, encode_table
from amqpd.errors import AMQPSyntaxError, CommandInvalid, FrameError, erlang_binary
from amqpd.protocol.spec import METHODS, Method

_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_INTEGERS: Final[dict[str, struct.Struct]] = {
    "octet": _U8,
    "short": _U16,
    "long": _U32,
    "longlong": _U64,
    "timestamp": _U64,
}


def method_class(index: int) -> type[Method]:
    """The method class for a (class_id << 16 | method_id) index."""
    cls = METHODS.get(index)
    if cls is None:
        class_id, method_id = index >> 16, index & 0xFFFF
        raise CommandInvalid(f"unknown method {class_id}.{method_id}")
    return cls


def decode_method(payload: bytes, offset: int = 0, end: int | None = None) -> Method:
    """Decode the method-frame payload (class id, method id, arguments) in
    `payload[offset:end]`; nothing outside those bounds is ever read.

    Arguments that do not decode are a 501 FRAME_ERROR "cannot decode <<...>>", with the
    method's ids, as RabbitMQ reports them.
    """
    if offset or end is not None:
        payload = payload[offset:end]
    try:
        return _decode_method(payload, 0)
    except AMQPSyntaxError as error:
        if error.class_id == 0:
            raise
        raise FrameError(
            f"cannot decode {erlang_binary(payload[4:])}", error.class_id, error.method_id
        ) from error


def _decode_method(payload: bytes, offset: int) -> Method:
    try:
        (index,) = _U32.unpack_from(payload, offset)
    except struct.error as error:
        raise AMQPSyntaxError("method frame shorter than its class and method ids") from error
    cls = method_class(index)
    ids = (cls.CLASS_ID, cls.METHOD_ID)
    offset += 4
    values: dict[str, Any] = {}
    bit_octet = 0
    bit_position = 8  # 8 = no octet being read
    try:
        for name, kind in cls.FIELDS:
            if kind == "bit":
                if bit_position == 8:
                    bit_octet = payload[offset]
                    offset += 1
                    bit_position = 0
                values[name] = bool(bit_octet & (1 << bit_position))
                bit_position += 1
                continue
            bit_position = 8
            if kind == "shortstr":
                length = payload[offset]
                end = offset + 1 + length
                if end > len(payload):
                    raise AMQPSyntaxError(f"{cls.NAME}: field {name} is truncated", *ids)
                values[name] = payload[offset + 1 : end].decode("utf-8", "surrogateescape")
                offset = end
            elif kind == "longstr":
                (length,) = _U32.unpack_from(payload, offset)
                end = offset + 4 + length
                if end > len(payload):
                    raise AMQPSyntaxError(f"{cls.NAME}: field {name} is truncated", *ids)
                values[name] = bytes(payload[offset + 4 : end])
                offset = end
            elif kind == "table":
                try:
                    values[name], offset = decode_table(payload, offset)
                except AMQPSyntaxError as error:
                    raise AMQPSyntaxError(error.detail, *ids) from error
            else:
                codec = _INTEGERS[kind]
                (values[name],) = codec.unpack_from(payload, offset)
                offset += codec.size
    except (struct.error, IndexError) as error:
        raise AMQPSyntaxError(f"{cls.NAME}: arguments are truncated", *ids) from error
    return cls(**values)


def encode_method(method: Method) -> bytes:
    """The method-frame payload: class id, method id and the arguments."""
    parts = [_U32.pack(method.INDEX)]
    bit_octet = 0
    bit_position = 8
    for name, kind in method.FIELDS:
        value = getattr(method, name)
        if kind == "bit":
            if bit_position == 8:
                bit_octet = 0
                bit_position = 0
            if value:
                bit_octet |= 1 << bit_position
            bit_position += 1
            if bit_position == 8:
                parts.append(bytes((bit_octet,)))
            continue
        if bit_position < 8:
            parts.append(bytes((bit_octet,)))
        bit_position = 8
        if kind == "shortstr":
            parts.append(encode_short_string(value))
        elif kind == "longstr":
            parts.append(_U32.pack(len(value)) + value)
        elif kind == "table":
            parts.append(encode_table(value))
        else:
            parts.append(_INTEGERS[kind].pack(value))
    if bit_position < 8:
        parts.append(bytes((bit_octet,)))
    return b"".join(parts)
