"""Content headers and basic properties (amqpd.codec.properties) against pamqp 4.0.1.

Checks, with Hypothesis, that pamqp-marshalled content headers decode to the same
properties (timestamp as seconds, headers as tables), that amqpd's encoder produces headers
pamqp decodes back to the same properties, that re-encoding a decoded header reproduces it
byte for byte, the flag and body-size helpers, and that malformed headers only ever raise
AMQPSyntaxError.
"""

from __future__ import annotations

import contextlib
import datetime
import struct
from decimal import Decimal
from typing import Any

import attrs
import pamqp.encode
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from amqpd.codec.fields import Timestamp, decode_table
from amqpd.codec.properties import (
    BASIC_CLASS_ID,
    BasicProperties,
    body_size_of,
    decode_properties,
    encode_content_header,
    property_flags,
    with_body_size,
)
from amqpd.errors import AMQPSyntaxError

# amqpd attribute -> pamqp attribute; only `type` is renamed.
PAMQP_NAMES = {field.name: field.name for field in attrs.fields(BasicProperties)} | {
    "type": "message_type"
}


def _key(entry: tuple[str, Any]) -> str:
    return entry[0]


def tagged(value: Any) -> Any:
    """A field value with its kind explicit, so that True never equals 1."""
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
        # Key order aside: pamqp sorts the keys it writes, so its input order is lost.
        return ("table", sorted(((key, tagged(item)) for key, item in value.items()), key=_key))
    raise TypeError(f"unexpected decoded value {value!r}")


# Field values pamqp can encode and decode back to equal values (see test_fields.py for
# why decimals are non-negative, floats 32-bit and timestamps below 2**32).
seconds = st.integers(0, 0xFFFFFFFF)
table_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False),
    st.builds(
        lambda mantissa, scale: Decimal(mantissa).scaleb(-scale),
        st.integers(0, 2**31 - 1),
        st.integers(0, 255),
    ),
    st.text(max_size=20),
    st.binary(max_size=20).map(bytearray),
    st.none(),
    seconds.map(lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC)),
)
tables = st.dictionaries(
    st.text(max_size=16),
    st.recursive(
        table_scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=5,
)
shortstr_text = st.text(max_size=60)  # at most 240 bytes of UTF-8


@st.composite
def pamqp_properties(draw: st.DrawFn) -> Basic.Properties:
    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | strategy)

    timestamp = maybe(seconds)
    return Basic.Properties(
        content_type=maybe(shortstr_text),
        content_encoding=maybe(shortstr_text),
        headers=maybe(tables),
        delivery_mode=maybe(st.sampled_from([1, 2])),  # pamqp accepts no other value
        priority=maybe(st.integers(0, 255)),
        correlation_id=maybe(shortstr_text),
        reply_to=maybe(shortstr_text),
        expiration=maybe(shortstr_text),
        message_id=maybe(shortstr_text),
        timestamp=None
        if timestamp is None
        else datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC),
        message_type=maybe(shortstr_text),
        user_id=maybe(shortstr_text),
        app_id=maybe(shortstr_text),
        cluster_id="",  # pamqp insists on empty
    )


def expected_from_pamqp(properties: Basic.Properties, name: str) -> Any:
    """What amqpd must decode for one property pamqp marshalled."""
    value = getattr(properties, PAMQP_NAMES[name])
    if value is None or value == "":
        return None  # pamqp leaves None and empty strings out of the header
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    return value


def assert_same_property(name: str, ours: Any, theirs: Any) -> None:
    if name == "headers":
        assert (ours is None) == (theirs is None), name
        if ours is not None:
            assert tagged(ours) == tagged(theirs), name
    else:
        assert ours == theirs, name


@given(properties=pamqp_properties(), body_size=st.integers(0, 2**64 - 1))
def test_pamqp_headers_decode_to_the_same_properties(
    properties: Basic.Properties, body_size: int
) -> None:
    header = ContentHeader(body_size=body_size, properties=properties).marshal()
    decoded = decode_properties(header)
    for field in attrs.fields(BasicProperties):
        assert_same_property(
            field.name, getattr(decoded, field.name), expected_from_pamqp(properties, field.name)
        )
    assert body_size_of(header) == body_size


@given(properties=pamqp_properties(), body_size=st.integers(0, 2**64 - 1))
def test_property_flags_match_pamqps(properties: Basic.Properties, body_size: int) -> None:
    header = ContentHeader(body_size=body_size, properties=properties).marshal()
    expected = 0
    for field in attrs.fields(BasicProperties):
        if expected_from_pamqp(properties, field.name) is not None:
            expected |= Basic.Properties.flags[PAMQP_NAMES[field.name]]
    assert property_flags(header) == expected


@given(properties=pamqp_properties(), body_size=st.integers(0, 2**64 - 1))
def test_reencoding_a_decoded_pamqp_header_gives_the_same_bytes(
    properties: Basic.Properties, body_size: int
) -> None:
    header = ContentHeader(body_size=body_size, properties=properties).marshal()
    assert encode_content_header(body_size, decode_properties(header)) == header


@st.composite
def amqpd_properties(draw: st.DrawFn) -> BasicProperties:
    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | strategy)

    headers = maybe(tables)
    return BasicProperties(
        content_type=maybe(shortstr_text),
        content_encoding=maybe(shortstr_text),
        # Tables as amqpd holds them after decoding, with pamqp-readable wire types.
        headers=None if headers is None else decode_table(pamqp.encode.field_table(headers), 0)[0],
        delivery_mode=maybe(st.integers(0, 255)),
        priority=maybe(st.integers(0, 255)),
        correlation_id=maybe(shortstr_text),
        reply_to=maybe(shortstr_text),
        expiration=maybe(shortstr_text),
        message_id=maybe(shortstr_text),
        timestamp=maybe(seconds),
        type=maybe(shortstr_text),
        user_id=maybe(shortstr_text),
        app_id=maybe(shortstr_text),
        cluster_id=maybe(shortstr_text),
    )


@given(properties=amqpd_properties(), body_size=st.integers(0, 2**63 - 1))
def test_encoded_headers_decode_in_pamqp_to_the_same_properties(
    properties: BasicProperties, body_size: int
) -> None:
    header = encode_content_header(body_size, properties)
    theirs = ContentHeader()
    theirs.unmarshal(header)
    assert (theirs.class_id, theirs.weight, theirs.body_size) == (BASIC_CLASS_ID, 0, body_size)
    for field in attrs.fields(BasicProperties):
        ours = getattr(properties, field.name)
        flag = Basic.Properties.flags[PAMQP_NAMES[field.name]]
        assert bool(property_flags(header) & flag) is (ours is not None), field.name
        if ours is None:
            continue  # pamqp shows its default for an absent property
        value = getattr(theirs.properties, PAMQP_NAMES[field.name])
        if isinstance(value, datetime.datetime):
            value = int(value.timestamp())
        assert_same_property(field.name, ours, value)


@given(properties=amqpd_properties(), body_size=st.integers(0, 2**64 - 1))
def test_round_trip(properties: BasicProperties, body_size: int) -> None:
    header = encode_content_header(body_size, properties)
    assert decode_properties(header) == properties
    assert body_size_of(header) == body_size


@given(
    properties=amqpd_properties(),
    body_size=st.integers(0, 2**64 - 1),
    new_size=st.integers(0, 2**64 - 1),
)
def test_with_body_size_changes_only_the_body_size(
    properties: BasicProperties, body_size: int, new_size: int
) -> None:
    header = encode_content_header(body_size, properties)
    resized = with_body_size(header, new_size)
    assert body_size_of(resized) == new_size
    assert resized == encode_content_header(new_size, properties)
    assert resized[:4] == header[:4]
    assert resized[12:] == header[12:]
    assert property_flags(resized) == property_flags(header)
    assert decode_properties(resized) == properties


def test_empty_properties_have_no_flags() -> None:
    header = encode_content_header(5, BasicProperties())
    assert header == struct.pack(">HHQH", 60, 0, 5, 0)
    assert property_flags(header) == 0
    assert decode_properties(header) == BasicProperties()


def test_continuation_flag_words_are_skipped() -> None:
    # content_type present, continuation bit set, then a second (empty) flag word.
    header = struct.pack(">HHQHH", 60, 0, 0, 0x8001, 0) + b"\x04text"
    assert decode_properties(header) == BasicProperties(content_type="text")


def test_non_utf8_short_strings_survive_with_surrogateescape() -> None:
    header = struct.pack(">HHQH", 60, 0, 0, 0x8000) + b"\x02\xff\xfe"
    decoded = decode_properties(header)
    assert decoded.content_type == "\udcff\udcfe"
    assert encode_content_header(0, decoded) == header


@given(properties=amqpd_properties().filter(lambda p: p != BasicProperties()))
def test_every_truncation_raises_syntax_error(properties: BasicProperties) -> None:
    header = encode_content_header(0, properties)
    for cut in range(len(header)):
        with pytest.raises(AMQPSyntaxError):
            decode_properties(header[:cut])


@given(data=st.binary(max_size=128))
def test_garbage_raises_only_syntax_errors(data: bytes) -> None:
    with contextlib.suppress(AMQPSyntaxError):
        decode_properties(data)


@given(flags=st.integers(0, 0xFFFF), body=st.binary(max_size=128))
def test_garbage_after_a_flag_word_raises_only_syntax_errors(flags: int, body: bytes) -> None:
    with contextlib.suppress(AMQPSyntaxError):
        decode_properties(struct.pack(">HHQH", 60, 0, 0, flags) + body)
