"""The generic method codec (amqpd.protocol.methods) for every method in protocol.spec.

For each method class, Hypothesis draws argument values from its FIELDS layout within what
pamqp 4.0.1 accepts, and checks that encode_method gives exactly the payload pamqp marshals
and that decode_method turns that payload back into the same method. Also: a payload too
short for the method ids raises AMQPSyntaxError, truncated arguments raise RabbitMQ's 501
FRAME_ERROR "cannot decode <<...>>" with the method's ids, unknown method indexes raise
CommandInvalid, and garbage raises nothing else.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from typing import Any

import pamqp.commands
import pamqp.encode
import pamqp.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.codec.fields import decode_table
from amqpd.errors import AMQPSyntaxError, CommandInvalid, FrameError, erlang_binary
from amqpd.protocol import spec
from amqpd.protocol.methods import decode_method, encode_method, method_class
from amqpd.protocol.spec import METHODS, Method

ALL_METHODS = list(METHODS.values())
NAMES = [cls.NAME for cls in ALL_METHODS]

# ---------------------------------------------------------------- argument strategies

NAME_ALPHABET = "abcXYZ0189-_.:@#,/+ "  # pamqp: ^[a-zA-Z0-9-_.:@#,/+ ]*$
exchange_names = st.text(NAME_ALPHABET, max_size=127)
queue_names = st.text(NAME_ALPHABET, max_size=255)  # pamqp allows 256; a shortstr 255
short_strings = st.one_of(
    st.text(max_size=63),  # at most 252 bytes of UTF-8
    st.text("ab -", min_size=200, max_size=255),  # up to the 255-octet limit
    st.just("\u00e9" * 127 + "a"),  # 255 octets of two-octet characters and one more
)
# Table values pamqp can encode (see tests/codec/test_fields.py for its quirks).
table_values = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(width=32, allow_nan=False),
        st.text(max_size=16),
        st.binary(max_size=16).map(bytearray),
        st.none(),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
pamqp_tables = st.dictionaries(st.text(max_size=16), table_values, max_size=4)

INTEGER_RANGES = {
    "octet": (0, 0xFF),
    "short": (0, 0xFFFF),
    "long": (0, 0xFFFF_FFFF),
    "longlong": (0, 2**63 - 1),  # pamqp packs longlong signed
}

# Arguments pamqp's validate() pins to one value.
PINNED: dict[tuple[type[Method], str], Any] = {
    (spec.ConnectionOpen, "capabilities"): "",
    (spec.ConnectionOpen, "insist"): False,
    (spec.ConnectionOpenOk, "known_hosts"): "",
    (spec.ChannelOpen, "out_of_band"): "0",
    (spec.ChannelOpenOk, "channel_id"): b"0",
    (spec.BasicGetEmpty, "cluster_id"): "",
}


def argument(cls: type[Method], name: str, kind: str) -> st.SearchStrategy[tuple[Any, Any]]:
    """(amqpd value, pamqp value) for one argument."""
    if (cls, name) in PINNED:
        value = PINNED[cls, name]
        return st.just((value, value.decode() if isinstance(value, bytes) else value))
    if name == "ticket":
        return st.just((0, 0))
    if kind == "bit":
        return st.booleans().map(lambda flag: (flag, flag))
    if kind in INTEGER_RANGES:
        return st.integers(*INTEGER_RANGES[kind]).map(lambda number: (number, number))
    if kind == "shortstr":
        if name in ("exchange", "destination", "source"):
            text = exchange_names
        elif name == "queue":
            text = queue_names
        elif name == "virtual_host":
            text = st.text(max_size=63)
        else:
            text = short_strings
        return text.map(lambda value: (value, value))
    if kind == "longstr":  # bytes for amqpd; pamqp wants text
        return st.text(max_size=64).map(lambda text: (text.encode(), text))
    if kind == "table":
        return pamqp_tables.map(
            lambda table: (decode_table(pamqp.encode.field_table(table), 0)[0], table)
        )
    raise AssertionError(f"no strategy for {kind}")


def method_pairs(cls: type[Method]) -> st.SearchStrategy[tuple[Method, Any]]:
    """(amqpd method, equivalent pamqp method) with drawn arguments."""
    pamqp_class = pamqp.commands.INDEX_MAPPING[cls.INDEX]

    @st.composite
    def pairs(draw: st.DrawFn) -> tuple[Method, Any]:
        ours: dict[str, Any] = {}
        theirs: dict[str, Any] = {}
        for name, kind in cls.FIELDS:
            ours[name], theirs[name] = draw(argument(cls, name, kind))
        return cls(**ours), pamqp_twin(pamqp_class, theirs)

    return pairs()


def pamqp_twin(pamqp_class: Any, arguments: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        # basic.recover-async is deprecated in 0-9-1 and pamqp says so; it is still a method.
        warnings.filterwarnings("ignore", "This command is deprecated", DeprecationWarning)
        return pamqp_class(**arguments)


def pamqp_payload(method: Any) -> bytes:
    frame = pamqp.frame.marshal(method, 1)
    return frame[7:-1]  # frame header and frame-end octet off


# ---------------------------------------------------------------- against pamqp


def test_every_spec_method_has_a_pamqp_twin_with_the_same_layout() -> None:
    assert len(METHODS) == len(pamqp.commands.INDEX_MAPPING)
    for index, cls in METHODS.items():
        pamqp_class = pamqp.commands.INDEX_MAPPING[index]
        assert cls.INDEX == index == pamqp_class.index
        assert divmod(index, 0x10000) == (cls.CLASS_ID, cls.METHOD_ID)
        assert [name for name, _ in cls.FIELDS] == pamqp_class.attributes()
        assert [kind for _, kind in cls.FIELDS] == [
            pamqp_class.amqp_type(name) for name in pamqp_class.attributes()
        ]
        assert method_class(index) is cls


@pytest.mark.parametrize("cls", ALL_METHODS, ids=NAMES)
@settings(max_examples=25)
@given(data=st.data())
def test_encode_matches_pamqp_and_decode_inverts_it(cls: type[Method], data: st.DataObject) -> None:
    ours, theirs = data.draw(method_pairs(cls))
    payload = pamqp_payload(theirs)
    assert encode_method(ours) == payload
    assert decode_method(payload) == ours


@pytest.mark.parametrize("cls", ALL_METHODS, ids=NAMES)
@settings(max_examples=5)
@given(data=st.data(), prefix=st.binary(max_size=8), suffix=st.binary(max_size=8))
def test_decode_honours_offset(
    cls: type[Method], data: st.DataObject, prefix: bytes, suffix: bytes
) -> None:
    ours, _ = data.draw(method_pairs(cls))
    assert decode_method(prefix + encode_method(ours) + suffix, len(prefix)) == ours


@pytest.mark.parametrize("cls", ALL_METHODS, ids=NAMES)
def test_defaults_match_pamqp_defaults_where_pamqp_has_them(cls: type[Method]) -> None:
    # The spec defaults are what a server sends when it leaves an argument alone.
    ours = cls()
    theirs = pamqp_twin(pamqp.commands.INDEX_MAPPING[cls.INDEX], {})
    theirs_values = dict(theirs)
    for name, kind in cls.FIELDS:
        if theirs_values[name] is None:
            continue  # pamqp has no default: its constructor wants a value
        ours_value = getattr(ours, name)
        if kind == "longstr":
            ours_value = ours_value.decode()
        if kind == "table":
            continue
        assert ours_value == theirs_values[name], name


@pytest.mark.parametrize(
    "method",
    [
        spec.BasicAck(delivery_tag=2**64 - 1, multiple=True),
        spec.BasicDeliver("ctag", 2**64 - 1, True, "x", "rk"),
        spec.BasicNack(delivery_tag=2**63, multiple=False, requeue=True),
        spec.BasicGetOk(2**64 - 1, False, "", "", 2**32 - 1),
    ],
    ids=repr,
)
def test_delivery_tags_use_all_64_bits(method: Method) -> None:
    # pamqp stops at 2**63 - 1 (it packs signed); the wire type is unsigned.
    assert decode_method(encode_method(method)) == method


@given(reply_text=st.binary(max_size=255).map(lambda raw: raw.decode("utf-8", "surrogateescape")))
def test_short_strings_that_are_not_utf8_survive(reply_text: str) -> None:
    method = spec.ChannelClose(reply_code=406, reply_text=reply_text, class_id=60, method_id=40)
    payload = encode_method(method)
    assert decode_method(payload) == method


def test_bit_run_packs_least_significant_first_and_ends_at_the_next_field() -> None:
    method = spec.ExchangeDeclare(
        exchange="x",
        exchange_type="topic",
        passive=True,
        durable=False,
        auto_delete=True,
        internal=False,
        nowait=True,
        arguments={},
    )
    payload = encode_method(method)
    assert payload == struct.pack(">IH", 0x0028000A, 0) + b"\x01x\x05topic\x15\x00\x00\x00\x00"


# ---------------------------------------------------------------- malformed payloads


@pytest.mark.parametrize("cls", ALL_METHODS, ids=NAMES)
@settings(max_examples=5)
@given(data=st.data())
def test_every_truncation_raises_frame_error(cls: type[Method], data: st.DataObject) -> None:
    ours, _ = data.draw(method_pairs(cls))
    payload = encode_method(ours)
    for cut in range(4):
        with pytest.raises(AMQPSyntaxError):
            decode_method(payload[:cut])
    for cut in range(4, len(payload)):
        with pytest.raises(FrameError) as caught:
            decode_method(payload[:cut])
        assert caught.value.reply_code == 501
        assert caught.value.detail == f"cannot decode {erlang_binary(payload[4:cut])}"
        assert (caught.value.class_id, caught.value.method_id) == (cls.CLASS_ID, cls.METHOD_ID)


def test_cannot_decode_text_shows_the_arguments_as_erlang_does() -> None:
    with pytest.raises(FrameError, match=r"^cannot decode <<0,0,0,0,0>>$"):
        decode_method(struct.pack(">I", spec.BasicQos.INDEX) + b"\x00" * 5)
    with pytest.raises(FrameError, match=r'^cannot decode <<"ab">>$'):
        decode_method(struct.pack(">I", spec.BasicQos.INDEX) + b"ab")
    # `end` bounds the arguments the text shows.
    with pytest.raises(FrameError, match=r"^cannot decode <<1>>$"):
        decode_method(struct.pack(">I", spec.BasicQos.INDEX) + b"\x01\xce\x08", 0, 5)


@given(
    index=st.integers(0, 2**32 - 1).filter(lambda index: index not in METHODS),
    rest=st.binary(max_size=16),
)
def test_unknown_index_raises_command_invalid(index: int, rest: bytes) -> None:
    with pytest.raises(CommandInvalid) as caught:
        decode_method(struct.pack(">I", index) + rest)
    assert caught.value.reply_code == 503
    assert f"{index >> 16}.{index & 0xFFFF}" in caught.value.detail


@given(index=st.sampled_from(sorted(METHODS)), rest=st.binary(max_size=64))
def test_garbage_arguments_raise_only_frame_errors(index: int, rest: bytes) -> None:
    try:
        decode_method(struct.pack(">I", index) + rest)
    except FrameError as error:
        assert (error.class_id, error.method_id) == divmod(index, 0x10000)


@given(data=st.binary(max_size=64))
def test_garbage_raises_only_amqp_errors(data: bytes) -> None:
    with contextlib.suppress(AMQPSyntaxError, FrameError, CommandInvalid):
        decode_method(data)
