"""Field tables and values (amqpd.codec.fields).

Checks, with Hypothesis:
- tables pamqp 4.0.1 encodes decode with amqpd to the values pamqp decodes itself, up to
  pamqp's known quirks, and amqpd re-encodes pamqp's bytes unchanged;
- amqpd's own round trip is lossless byte for byte: every integer width, Float32,
  Timestamp, Decimal exponents, non-UTF-8 long strings, nested tables and arrays;
- truncated or garbage input only ever raises AMQPSyntaxError;
- values_equal compares as RabbitMQ does: same type class (every integer width is one
  class, both float widths another, booleans their own) and same value.
"""

from __future__ import annotations

import contextlib
import datetime
import struct
from decimal import Decimal
from typing import Any

import pamqp.decode
import pamqp.encode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.codec.fields import (
    NESTING_DEPTH_MAX,
    Float32,
    LongInt,
    LongUInt,
    ShortInt,
    ShortShortInt,
    ShortShortUInt,
    ShortUInt,
    Timestamp,
    decode_array,
    decode_table,
    decode_value,
    encode_array,
    encode_table,
    encode_value,
    type_code,
    type_name,
    values_equal,
)
from amqpd.errors import AMQPSyntaxError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# ---------------------------------------------------------------- comparison helpers


def tagged(value: Any) -> Any:
    """A value with its kind made explicit, so that True never equals 1 in a comparison.

    Works on amqpd's and on pamqp's decoded values alike: pamqp's datetime timestamps and
    amqpd's Timestamp both become ("timestamp", seconds), bytearray and bytes both become
    ("bytes", ...). Tables keep their wire order.
    """
    if value is None:
        return ("void",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, Timestamp):
        return ("timestamp", int(value))
    if isinstance(value, datetime.datetime):
        return ("timestamp", int(value.timestamp()))
    if isinstance(value, int):
        return ("int", int(value))
    if isinstance(value, float):
        return ("float", float(value))
    if isinstance(value, Decimal):
        return ("decimal", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (bytes, bytearray)):
        return ("bytes", bytes(value))
    if isinstance(value, list):
        return ("array", [tagged(item) for item in value])
    if isinstance(value, dict):
        return ("table", [(key, tagged(item)) for key, item in value.items()])
    raise TypeError(f"unexpected decoded value {value!r}")


def wire_types(value: Any) -> Any:
    """The wire type letters of a value, recursively (what a lossless decode must keep)."""
    if isinstance(value, dict):
        return ("F", [(key, wire_types(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("A", [wire_types(item) for item in value])
    return type_code(value)


# ---------------------------------------------------------------- pamqp-encodable values

# pamqp cuts keys above 128 bytes; 32 characters are at most 128 bytes of UTF-8.
pamqp_keys = st.text(max_size=32)
pamqp_timestamps = st.integers(0, 0xFFFFFFFF).map(
    # pamqp reads anything above 2**32 as milliseconds, so stay below it.
    lambda seconds: datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
)
# pamqp decodes the decimal mantissa as unsigned, so only non-negative ones agree.
pamqp_decimals = st.one_of(
    st.builds(
        lambda mantissa, scale: Decimal(mantissa).scaleb(-scale),
        st.integers(0, 2**31 - 1),
        st.integers(0, 255),
    ),
    st.builds(
        lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
        st.integers(0, 21_474),
        st.integers(1, 5),
    ),
)
pamqp_scalars = st.one_of(
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(width=32, allow_nan=False),  # pamqp writes every float as 'f'
    pamqp_decimals,
    st.text(),
    st.binary(max_size=64).map(bytearray),
    st.none(),
    pamqp_timestamps,
)
pamqp_values = st.recursive(
    pamqp_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(pamqp_keys, children, max_size=4),
    ),
    max_leaves=16,
)
pamqp_tables = st.dictionaries(pamqp_keys, pamqp_values, max_size=6)


@given(table=pamqp_tables)
def test_pamqp_tables_decode_to_pamqps_own_values(table: dict[str, Any]) -> None:
    wire = pamqp.encode.field_table(table)
    consumed, expected = pamqp.decode.field_table(wire)
    decoded, end = decode_table(wire, 0)
    assert end == consumed == len(wire)
    assert tagged(decoded) == tagged(expected)


@given(table=pamqp_tables)
def test_pamqp_tables_reencode_to_pamqps_bytes(table: dict[str, Any]) -> None:
    wire = pamqp.encode.field_table(table)
    decoded, _ = decode_table(wire, 0)
    assert encode_table(decoded) == wire


@given(table=pamqp_tables, prefix=st.binary(max_size=16), suffix=st.binary(max_size=16))
def test_decode_table_honours_offset_and_reports_end(
    table: dict[str, Any], prefix: bytes, suffix: bytes
) -> None:
    wire = pamqp.encode.field_table(table)
    decoded, end = decode_table(prefix + wire + suffix, len(prefix))
    assert end == len(prefix) + len(wire)
    assert tagged(decoded) == tagged(pamqp.decode.field_table(wire)[1])


@given(raw=st.binary(max_size=64))
def test_long_string_pamqp_sees_as_bytes_decodes_with_surrogateescape(raw: bytes) -> None:
    # pamqp gives str only for valid UTF-8 and bytes otherwise; amqpd always gives str,
    # with surrogateescape, so the original bytes come back on encode.
    wire = struct.pack(">I", 7 + len(raw)) + b"\x01kS" + struct.pack(">I", len(raw)) + raw
    _, from_pamqp = pamqp.decode.field_table(wire)
    decoded, _ = decode_table(wire, 0)
    value = decoded["k"]
    assert isinstance(value, str)
    assert value.encode("utf-8", "surrogateescape") == raw
    pamqp_value = from_pamqp["k"]
    if isinstance(pamqp_value, str):
        assert value == pamqp_value
    else:
        assert value.encode("utf-8", "surrogateescape") == pamqp_value
    assert encode_table(decoded) == wire


@given(
    mantissa=st.integers(-(2**31), 2**31 - 1),
    scale=st.integers(0, 255),
)
def test_decimal_mantissa_is_signed(mantissa: int, scale: int) -> None:
    # pamqp encodes the mantissa signed but decodes it unsigned; compare with the input.
    value = Decimal(mantissa).scaleb(-scale)
    wire = pamqp.encode.field_table({"d": value})
    decoded, _ = decode_table(wire, 0)
    assert decoded["d"] == value
    assert isinstance(decoded["d"], Decimal)


@given(seconds=st.integers(0, 2**64 - 1))
def test_timestamps_decode_as_seconds_whatever_their_size(seconds: int) -> None:
    # pamqp turns values above 2**32 into milliseconds; amqpd keeps the wire value.
    decoded, _ = decode_value(b"T" + struct.pack(">Q", seconds), 0)
    assert isinstance(decoded, Timestamp)
    assert decoded == seconds


# ---------------------------------------------------------------- amqpd round trip


def _width(cls: type[int], low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high).map(cls)


amqpd_keys = st.one_of(
    st.text(max_size=16),
    # Keys are short strings: any bytes up to 255, kept through surrogateescape.
    st.binary(max_size=255).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)
amqpd_decimals = st.one_of(
    st.builds(
        lambda mantissa, scale: Decimal(mantissa).scaleb(-scale),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 255),
    ),
    st.builds(  # positive exponents fold into the mantissa
        lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
        st.integers(-21_474, 21_474),
        st.integers(1, 5),
    ),
)
amqpd_scalars = st.one_of(
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    _width(ShortShortInt, -128, 127),
    _width(ShortShortUInt, 0, 255),
    _width(ShortInt, -32_768, 32_767),
    _width(ShortUInt, 0, 65_535),
    _width(LongInt, -(2**31), 2**31 - 1),
    _width(LongUInt, 0, 2**32 - 1),
    _width(Timestamp, 0, 2**64 - 1),
    st.floats(),
    st.floats(width=32).map(Float32),
    amqpd_decimals,
    st.text(),
    st.binary(max_size=64).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.binary(max_size=64),
    st.none(),
)
amqpd_values = st.recursive(
    amqpd_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(amqpd_keys, children, max_size=4),
    ),
    max_leaves=16,
)
amqpd_tables = st.dictionaries(amqpd_keys, amqpd_values, max_size=6)


@given(table=amqpd_tables)
def test_round_trip_is_lossless(table: dict[str, Any]) -> None:
    wire = encode_table(table)
    decoded, end = decode_table(wire, 0)
    assert end == len(wire)
    assert encode_table(decoded) == wire
    assert wire_types(decoded) == wire_types(table)


@given(values=st.lists(amqpd_values, max_size=6))
def test_array_round_trip_is_lossless(values: list[Any]) -> None:
    wire = encode_array(values)
    decoded, end = decode_array(wire, 0)
    assert end == len(wire)
    assert encode_array(decoded) == wire
    assert wire_types(decoded) == wire_types(values)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (ShortShortInt(-128), b"b\x80"),
        (ShortShortInt(127), b"b\x7f"),
        (ShortShortUInt(0), b"B\x00"),
        (ShortShortUInt(255), b"B\xff"),
        (ShortInt(-32_768), b"s\x80\x00"),
        (ShortInt(32_767), b"s\x7f\xff"),
        (ShortUInt(65_535), b"u\xff\xff"),
        (LongInt(-(2**31)), b"I\x80\x00\x00\x00"),
        (LongInt(2**31 - 1), b"I\x7f\xff\xff\xff"),
        (LongUInt(2**32 - 1), b"i\xff\xff\xff\xff"),
        (INT64_MIN, b"l\x80" + b"\x00" * 7),
        (INT64_MAX, b"l\x7f" + b"\xff" * 7),
        (0, b"l" + b"\x00" * 8),
        (Timestamp(2**64 - 1), b"T" + b"\xff" * 8),
        (Float32(1.5), b"f" + struct.pack(">f", 1.5)),
        (1.5, b"d" + struct.pack(">d", 1.5)),
        (True, b"t\x01"),
        (False, b"t\x00"),
        (None, b"V"),
        (b"\x00\xff", b"x\x00\x00\x00\x02\x00\xff"),
        ("é", b"S\x00\x00\x00\x02\xc3\xa9"),
        ("\udcff", b"S\x00\x00\x00\x01\xff"),
        ([], b"A\x00\x00\x00\x00"),
        ({}, b"F\x00\x00\x00\x00"),
    ],
    ids=repr,
)
def test_each_wire_type_encodes_and_decodes_exactly(value: Any, wire: bytes) -> None:
    assert encode_value(value) == wire
    decoded, end = decode_value(wire, 0)
    assert end == len(wire)
    assert type(decoded) is type(value)
    assert tagged(decoded) == tagged(value)


@pytest.mark.parametrize(
    ("value", "scale", "mantissa"),
    [
        (Decimal("1.5"), 1, 15),
        (Decimal("-0.001"), 3, -1),
        (Decimal("0"), 0, 0),
        (Decimal("0E-5"), 5, 0),
        (Decimal("1E+3"), 0, 1000),
        (Decimal("-12E+2"), 0, -1200),
        (Decimal("2147483647"), 0, 2**31 - 1),
        (Decimal("-2147483648"), 0, -(2**31)),
        (Decimal(7).scaleb(-255), 255, 7),
    ],
    ids=str,
)
def test_decimal_scale_and_mantissa(value: Decimal, scale: int, mantissa: int) -> None:
    wire = encode_value(value)
    assert wire == b"D" + struct.pack(">Bi", scale, mantissa)
    decoded, _ = decode_value(wire, 0)
    assert decoded == value
    assert encode_value(decoded) == wire


def test_bool_octet_other_than_one_is_true() -> None:
    decoded, end = decode_value(b"t\x02", 0)
    assert decoded is True
    assert end == 2


def test_type_names_follow_rabbitmq() -> None:
    assert type_name("x") == "longstr"
    assert type_name(LongInt(1)) == "signedint"
    assert type_name(1) == "long"
    assert type_name(True) == "bool"
    assert type_name(Float32(1.0)) == "float"
    assert type_name(1.0) == "double"
    assert type_name(b"") == "binary"
    assert type_name(Timestamp(0)) == "timestamp"
    assert type_name([]) == "array"
    assert type_name({}) == "table"
    assert type_name(None) == "void"


# ---------------------------------------------------------------- malformed input


def _decode_all(data: bytes) -> None:
    """Every decoder on data; only AMQPSyntaxError may escape."""
    for decoder in (decode_table, decode_array, decode_value):
        with contextlib.suppress(AMQPSyntaxError):
            decoder(data, 0)


@given(data=st.binary(max_size=256))
def test_garbage_raises_only_syntax_errors(data: bytes) -> None:
    _decode_all(data)


@given(
    body=st.binary(max_size=128),
    kind=st.sampled_from(b"tbBsuIilfdDSATFVxZ"),
    length=st.integers(0, 300),
)
def test_garbage_behind_a_plausible_prefix_raises_only_syntax_errors(
    body: bytes, kind: int, length: int
) -> None:
    # A declared table length and a real type octet get past the first checks.
    _decode_all(struct.pack(">I", length) + b"\x01k" + bytes((kind,)) + body)


@given(table=amqpd_tables, data=st.data())
def test_mutated_tables_raise_only_syntax_errors(
    table: dict[str, Any], data: st.DataObject
) -> None:
    wire = bytearray(encode_table(table))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(wire) - 1))
        wire[position] = data.draw(st.integers(0, 255))
    _decode_all(bytes(wire))


@settings(max_examples=50)
@given(table=amqpd_tables.filter(bool))
def test_every_truncation_raises_syntax_error(table: dict[str, Any]) -> None:
    wire = encode_table(table)
    for cut in range(len(wire)):
        with pytest.raises(AMQPSyntaxError):
            decode_table(wire[:cut], 0)


@given(values=st.lists(amqpd_values, min_size=1, max_size=4))
def test_every_array_truncation_raises_syntax_error(values: list[Any]) -> None:
    wire = encode_array(values)
    for cut in range(len(wire)):
        with pytest.raises(AMQPSyntaxError):
            decode_array(wire[:cut], 0)


def test_entries_overrunning_the_declared_length_raise_syntax_error() -> None:
    # Declared length 3 covers the key and the type octet but not the long value.
    wire = b"\x00\x00\x00\x03\x01kl" + b"\x00" * 8
    with pytest.raises(AMQPSyntaxError):
        decode_table(wire, 0)


def test_unknown_type_raises_syntax_error() -> None:
    with pytest.raises(AMQPSyntaxError, match="unknown field value type"):
        decode_table(b"\x00\x00\x00\x03\x01kZ", 0)


def _nested(kind: str, depth: int) -> bytes:
    """A table whose one entry is `depth` arrays (or tables) nested in each other."""
    inner = b""
    for _ in range(depth):
        if kind == "array":
            inner = b"A" + struct.pack(">I", len(inner)) + inner
        else:
            entry = b"\x01k" + inner if inner else b""
            inner = b"F" + struct.pack(">I", len(entry)) + entry
    entry = b"\x01k" + inner
    return struct.pack(">I", len(entry)) + entry


@pytest.mark.parametrize("kind", ["array", "table"])
def test_nesting_up_to_the_limit_decodes(kind: str) -> None:
    decoded, _ = decode_table(_nested(kind, NESTING_DEPTH_MAX), 0)
    depth = 0
    value: Any = decoded["k"]
    while value:
        value = value[0] if kind == "array" else value["k"]
        depth += 1
    assert depth == NESTING_DEPTH_MAX - 1  # the innermost container is empty


@pytest.mark.parametrize("kind", ["array", "table"])
def test_nesting_beyond_the_limit_is_a_syntax_error(kind: str) -> None:
    with pytest.raises(AMQPSyntaxError, match=f"nest deeper than {NESTING_DEPTH_MAX}"):
        decode_table(_nested(kind, NESTING_DEPTH_MAX + 1), 0)


@pytest.mark.parametrize("kind", ["array", "table"])
def test_deep_nesting_that_fits_in_a_frame_raises_only_syntax_errors(kind: str) -> None:
    # 10,000 levels take at most 70 kB, well inside the default frame_max of 128 KiB, so a
    # client can send this in a queue.declare's arguments or its client properties.
    wire = _nested(kind, 10_000)
    assert len(wire) < 131_072
    with contextlib.suppress(AMQPSyntaxError):
        decode_table(wire, 0)


# ---------------------------------------------------------------- values_equal


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (ShortShortInt(1), LongUInt(1), True),
        (LongInt(-3), -3, True),
        (ShortShortUInt(255), ShortUInt(255), True),
        (Float32(0.5), 0.5, True),
        (1, 1.0, False),  # a long and a double are different type classes
        (1.0, 1, False),
        (ShortInt(-3), -3.0, False),
        (Timestamp(1), 1, False),
        (1, 2, False),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (0.0, False, False),
        (True, 1.0, False),
        (True, True, True),
        (False, False, True),
        (True, False, False),
        ("a", "a", True),
        ("1", 1, False),
        ("a", b"a", False),  # longstr and binary
        (b"a", b"a", True),
        (None, None, True),
        (None, False, False),
        # Inside arrays and tables the wire types must be the same, not just the class.
        ([1, "a"], [1, "a"], True),
        ([True], [1], False),
        ([LongInt(1)], [1], False),
        ({"a": 1}, {"a": 1.0}, False),
        ({"a": [1]}, {"a": [1]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
    ],
    ids=repr,
)
def test_values_equal(left: Any, right: Any, equal: bool) -> None:
    assert values_equal(left, right) is equal


int_widths = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    _width(ShortShortInt, -128, 127),
    _width(ShortShortUInt, 0, 255),
    _width(ShortInt, -32_768, 32_767),
    _width(ShortUInt, 0, 65_535),
    _width(LongInt, -(2**31), 2**31 - 1),
    _width(LongUInt, 0, 2**32 - 1),
)


@given(left=int_widths, right=int_widths)
def test_values_equal_compares_integers_of_any_width_by_value(left: int, right: int) -> None:
    assert values_equal(left, right) is (int(left) == int(right))


@given(number=int_widths, real=st.one_of(st.floats(), st.floats(width=32).map(Float32)))
def test_values_equal_keeps_integers_apart_from_floats(number: int, real: float) -> None:
    assert values_equal(number, real) is False
    assert values_equal(real, number) is False


@given(flag=st.booleans(), number=st.one_of(int_widths, st.floats(allow_nan=False)))
def test_values_equal_keeps_booleans_apart_from_numbers(flag: bool, number: float) -> None:
    assert values_equal(flag, number) is False
    assert values_equal(number, flag) is False


@given(value=amqpd_scalars.filter(lambda value: value == value))  # NaN equals nothing
def test_values_equal_is_reflexive(value: Any) -> None:
    assert values_equal(value, value) is True
