"""AMQP 0-9-1 field values and field tables, decoded without losing their wire types.

Owns the value types of RabbitMQ's errata (not the 0-9-1 spec's table):
`t b B s u I i l f d D S A T F V x`. Decoding keeps every value's wire type so that a table
re-encodes to the same bytes: integer widths other than `l` and 32-bit floats come back as
the small `int`/`float` subclasses below, which compare and compute like plain numbers.
Long strings decode to `str` with `surrogateescape`, so a byte string that is not UTF-8
survives the round trip too. Plain Python values encode as RabbitMQ itself writes them
(`int` as `l`, `float` as `d`, `str` as `S`, `bytes` as `x`).

Pure functions on bytes; imports nothing from amqpd but errors.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final, TypeAlias, Union

from amqpd.errors import AMQPSyntaxError


class ShortShortInt(int):
    """`b`: signed 8-bit."""


class ShortShortUInt(int):
    """`B`: unsigned 8-bit."""


class ShortInt(int):
    """`s`: signed 16-bit (errata; the 0-9-1 spec's `s` short string is not used)."""


class ShortUInt(int):
    """`u`: unsigned 16-bit."""


class LongInt(int):
    """`I`: signed 32-bit."""


class LongUInt(int):
    """`i`: unsigned 32-bit."""


class Float32(float):
    """`f`: IEEE 754 single precision."""


class Timestamp(int):
    """`T`: seconds since the epoch, unsigned 64-bit."""


FieldValue: TypeAlias = Union[  # noqa: UP007 - a recursive alias needs the string form
    bool,
    int,
    float,
    Decimal,
    str,
    bytes,
    list["FieldValue"],
    dict[str, "FieldValue"],
    None,
]
FieldTable: TypeAlias = dict[str, FieldValue]

# Tables and arrays inside one another, at most; deeper input is a syntax error rather
# than a stack overflow (a frame of 128 KiB could otherwise nest 25,000 levels).
NESTING_DEPTH_MAX: Final = 64

_U8: Final = struct.Struct(">B")
_I8: Final = struct.Struct(">b")
_I16: Final = struct.Struct(">h")
_U16: Final = struct.Struct(">H")
_I32: Final = struct.Struct(">i")
_U32: Final = struct.Struct(">I")
_I64: Final = struct.Struct(">q")
_U64: Final = struct.Struct(">Q")
_F32: Final = struct.Struct(">f")
_F64: Final = struct.Struct(">d")
_DECIMAL: Final = struct.Struct(">Bi")

_FIXED: Final[dict[int, tuple[struct.Struct, type]]] = {
    ord("b"): (_I8, ShortShortInt),
    ord("B"): (_U8, ShortShortUInt),
    ord("s"): (_I16, ShortInt),
    ord("u"): (_U16, ShortUInt),
    ord("I"): (_I32, LongInt),
    ord("i"): (_U32, LongUInt),
    ord("l"): (_I64, int),
    ord("f"): (_F32, Float32),
    ord("d"): (_F64, float),
    ord("T"): (_U64, Timestamp),
}

# RabbitMQ's names for the wire types, as its error texts print them.
TYPE_NAMES: Final[dict[str, str]] = {
    "t": "bool",
    "b": "byte",
    "B": "unsignedbyte",
    "s": "short",
    "u": "unsignedshort",
    "I": "signedint",
    "i": "unsignedint",
    "l": "long",
    "f": "float",
    "d": "double",
    "D": "decimal",
    "S": "longstr",
    "A": "array",
    "T": "timestamp",
    "F": "table",
    "V": "void",
    "x": "binary",
}

_TYPE_OF_SUBCLASS: Final[dict[type, str]] = {
    ShortShortInt: "b",
    ShortShortUInt: "B",
    ShortInt: "s",
    ShortUInt: "u",
    LongInt: "I",
    LongUInt: "i",
    Timestamp: "T",
    Float32: "f",
}


def _short_string(data: bytes, offset: int) -> tuple[str, int]:
    length = data[offset]
    end = offset + 1 + length
    if end > len(data):
        raise AMQPSyntaxError("short string runs past the end of its field")
    return data[offset + 1 : end].decode("utf-8", "surrogateescape"), end


def decode_value(data: bytes, offset: int, depth: int = 0) -> tuple[FieldValue, int]:
    """Decode the typed value starting at `offset`; return it and the offset after it."""
    try:
        kind = data[offset]
        offset += 1
        fixed = _FIXED.get(kind)
        if fixed is not None:
            codec, python_type = fixed
            (raw,) = codec.unpack_from(data, offset)
            return python_type(raw), offset + codec.size
        if kind == 0x53:  # S
            start, end = _sized(data, offset, "long string")
            return data[start:end].decode("utf-8", "surrogateescape"), end
        if kind == 0x74:  # t
            return data[offset] != 0, offset + 1
        if kind == 0x46:  # F
            return decode_table(data, offset, depth + 1)
        if kind == 0x41:  # A
            return decode_array(data, offset, depth + 1)
        if kind == 0x56:  # V
            return None, offset
        if kind == 0x78:  # x
            start, end = _sized(data, offset, "byte array")
            return bytes(data[start:end]), end
        if kind == 0x44:  # D
            scale, raw = _DECIMAL.unpack_from(data, offset)
            return Decimal(raw).scaleb(-scale), offset + _DECIMAL.size
    except (struct.error, IndexError) as error:
        raise AMQPSyntaxError("field value runs past the end of its table") from error
    raise AMQPSyntaxError(f"unknown field value type {chr(kind)!r}")


def _sized(data: bytes, offset: int, what: str) -> tuple[int, int]:
    """Where the u32-length-prefixed item at `offset` starts and ends (checked)."""
    try:
        (length,) = _U32.unpack_from(data, offset)
    except struct.error as error:
        raise AMQPSyntaxError(f"{what} length is truncated") from error
    start = offset + 4
    end = start + length
    if end > len(data):
        raise AMQPSyntaxError(f"{what} runs past the end of its frame")
    return start, end


def _check_depth(depth: int) -> None:
    if depth > NESTING_DEPTH_MAX:
        raise AMQPSyntaxError(f"field tables and arrays nest deeper than {NESTING_DEPTH_MAX}")


def decode_table(data: bytes, offset: int, depth: int = 0) -> tuple[FieldTable, int]:
    """Decode the field table (u32 length + entries) at `offset`."""
    _check_depth(depth)
    offset, end = _sized(data, offset, "field table")
    table: FieldTable = {}
    while offset < end:
        key, offset = _short_string(data, offset)
        value, offset = decode_value(data, offset, depth)
        table[key] = value
    if offset != end:
        raise AMQPSyntaxError("field table entries overrun the table's declared length")
    return table, end


def decode_array(data: bytes, offset: int, depth: int = 0) -> tuple[list[FieldValue], int]:
    """Decode the field array (u32 length + values) at `offset`."""
    _check_depth(depth)
    offset, end = _sized(data, offset, "field array")
    values: list[FieldValue] = []
    while offset < end:
        value, offset = decode_value(data, offset, depth)
        values.append(value)
    if offset != end:
        raise AMQPSyntaxError("field array values overrun the array's declared length")
    return values, end


def type_code(value: FieldValue) -> str:
    """The wire type a value encodes as (its RabbitMQ type letter)."""
    if value is None:
        return "V"
    if isinstance(value, bool):
        return "t"
    subclass_code = _TYPE_OF_SUBCLASS.get(type(value))
    if subclass_code is not None:
        return subclass_code
    if isinstance(value, int):
        return "l"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "S"
    if isinstance(value, (bytes, bytearray)):
        return "x"
    if isinstance(value, Decimal):
        return "D"
    if isinstance(value, dict):
        return "F"
    if isinstance(value, list):
        return "A"
    raise TypeError(f"no AMQP field type for {type(value).__name__}")


def type_name(value: FieldValue) -> str:
    """RabbitMQ's name for the value's wire type (`longstr`, `signedint`, ...)."""
    return TYPE_NAMES[type_code(value)]


def encode_short_string(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError(f"short string of {len(raw)} bytes exceeds 255")
    return bytes((len(raw),)) + raw


def encode_value(value: FieldValue) -> bytes:
    """Encode one typed value (type octet + payload)."""
    code = type_code(value)
    if code == "S":
        assert isinstance(value, str)
        raw = value.encode("utf-8", "surrogateescape")
        return b"S" + _U32.pack(len(raw)) + raw
    if code == "t":
        return b"t\x01" if value else b"t\x00"
    if code == "V":
        return b"V"
    if code == "F":
        assert isinstance(value, dict)
        return b"F" + encode_table(value)
    if code == "A":
        assert isinstance(value, list)
        return b"A" + encode_array(value)
    if code == "x":
        assert isinstance(value, (bytes, bytearray))
        return b"x" + _U32.pack(len(value)) + bytes(value)
    if code == "D":
        assert isinstance(value, Decimal)
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        scale = -exponent
        if scale < 0:  # a positive exponent has no wire form: fold it into the digits
            unscaled *= 10**-scale
            scale = 0
        return b"D" + _DECIMAL.pack(scale, unscaled)
    codec, _ = _FIXED[ord(code)]
    return code.encode() + codec.pack(value)


def encode_table(table: Mapping[str, FieldValue]) -> bytes:
    """Encode a field table in its mapping order (u32 length + entries)."""
    payload = b"".join(
        encode_short_string(key) + encode_value(value) for key, value in table.items()
    )
    return _U32.pack(len(payload)) + payload


def encode_array(values: Sequence[FieldValue]) -> bytes:
    payload = b"".join(encode_value(value) for value in values)
    return _U32.pack(len(payload)) + payload


def type_class(value: FieldValue) -> str:
    """RabbitMQ's type class: every integer width is "int", both floats are "float"."""
    code = type_code(value)
    if code in "bBsuIil":
        return "int"
    if code in "fd":
        return "float"
    return TYPE_NAMES[code]


def values_equal(left: FieldValue, right: FieldValue) -> bool:
    """Equal as RabbitMQ compares header and argument values: same type class, same value
    (a signedint 1 equals a long 1; a longstr "1" or a double 1.0 does not). Inside arrays
    and tables the wire types must be identical, as Erlang compares typed terms there."""
    return type_class(left) == type_class(right) and _same_nested(left, right)


def _same_nested(left: FieldValue, right: FieldValue) -> bool:
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            type_code(a) == type_code(b) and _same_nested(a, b)
            for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            type_code(left[key]) == type_code(right[key]) and _same_nested(left[key], right[key])
            for key in left
        )
    return left == right
