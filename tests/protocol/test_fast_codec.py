"""The hot-path codecs (amqpd.protocol.fast_codec, frames.append_content), byte for byte.

Encoders: basic.deliver plus its content header and body frames in one call
(append_delivery; bodies re-split to the peer's frame_max, an empty body sends no body
frame), append_content for get-ok and return, basic.get-ok, and the publisher
confirm frames basic.ack / basic.nack, each compared with what pamqp 4.0.1 marshals and with
amqpd's generic codec. Decoders: basic.publish (decode_publish, split_publish) and
basic.ack payloads as pamqp marshals them.
"""

from __future__ import annotations

import datetime
import struct

import pamqp.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from amqpd.protocol import spec
from amqpd.protocol.fast_codec import (
    ACK_INDEX,
    PUBLISH_INDEX,
    ack_frame,
    append_delivery,
    append_get_ok,
    decode_ack,
    decode_publish,
    nack_frame,
    short_string,
    split_publish,
)
from amqpd.protocol.frames import (
    FRAME_BODY,
    FRAME_OVERHEAD_BYTES,
    HEARTBEAT_FRAME,
    append_content,
    encode_frame,
    method_frame,
)
from amqpd.protocol.methods import decode_method, encode_method

channels = st.integers(1, 0xFFFF)
delivery_tags = st.integers(0, 2**63 - 1)  # pamqp packs longlong signed
exchange_names = st.text("abcXYZ0189-_.:@#,/+ ", max_size=127)  # what pamqp validates
routing_keys = st.text(max_size=63)  # any text up to 252 bytes of UTF-8
consumer_tags = st.text(max_size=63)
properties = st.builds(
    Basic.Properties,
    content_type=st.none() | st.text(max_size=20),
    headers=st.none()
    | st.dictionaries(
        st.text(max_size=8), st.integers(-(2**63), 2**63 - 1) | st.text(), max_size=3
    ),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    timestamp=st.none()
    | st.integers(0, 2**32 - 1).map(
        lambda seconds: datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    ),
)
# Small frame_max values make multi-frame bodies cheap; 4096 is the spec's floor.
frame_maxes = st.one_of(st.integers(FRAME_OVERHEAD_BYTES + 1, 64), st.just(4096))


def test_method_indexes() -> None:
    assert PUBLISH_INDEX == spec.BasicPublish.INDEX == Basic.Publish.index
    assert ACK_INDEX == spec.BasicAck.INDEX == Basic.Ack.index


def pamqp_content(channel: int, header: ContentHeader, body: bytes, frame_max: int) -> bytes:
    """Header frame and body frames as pamqp marshals them, split at frame_max."""
    chunk = frame_max - FRAME_OVERHEAD_BYTES
    frames = [pamqp.frame.marshal(header, channel)]
    frames += [
        pamqp.frame.marshal(ContentBody(body[start : start + chunk]), channel)
        for start in range(0, len(body), chunk)
    ]
    return b"".join(frames)


@given(
    channel=channels,
    consumer_tag=consumer_tags,
    delivery_tag=delivery_tags,
    redelivered=st.booleans(),
    exchange=exchange_names,
    routing_key=routing_keys,
    props=properties,
    body=st.binary(max_size=300),
    frame_max=frame_maxes,
)
def test_append_delivery_matches_pamqp(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    props: Basic.Properties,
    body: bytes,
    frame_max: int,
) -> None:
    header = ContentHeader(body_size=len(body), properties=props)
    out: list[bytes] = []
    append_delivery(
        out,
        channel,
        short_string(consumer_tag),
        delivery_tag,
        redelivered,
        short_string(exchange) + short_string(routing_key),
        header.marshal(),
        body,
        frame_max - FRAME_OVERHEAD_BYTES,
    )
    deliver = Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key)
    expected = pamqp.frame.marshal(deliver, channel) + pamqp_content(
        channel, header, body, frame_max
    )
    assert b"".join(out) == expected


@given(
    channel=channels,
    consumer_tag=st.binary(max_size=255),
    delivery_tag=st.integers(0, 2**64 - 1),
    redelivered=st.booleans(),
    route=st.tuples(st.binary(max_size=255), st.binary(max_size=255)),
    header=st.binary(min_size=14, max_size=64),
    body=st.binary(max_size=200),
    body_frame_bytes_max=st.integers(1, 64),
)
def test_append_delivery_matches_the_generic_codec(
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    route: tuple[bytes, bytes],
    header: bytes,
    body: bytes,
    body_frame_bytes_max: int,
) -> None:
    tag = bytes((len(consumer_tag),)) + consumer_tag
    route_bytes = b"".join(bytes((len(part),)) + part for part in route)
    one_call: list[bytes] = []
    append_delivery(
        one_call,
        channel,
        tag,
        delivery_tag,
        redelivered,
        route_bytes,
        header,
        body,
        body_frame_bytes_max,
    )
    # Beyond pamqp's reach: 64-bit tags and short strings that are not UTF-8.
    deliver = spec.BasicDeliver(
        consumer_tag.decode("utf-8", "surrogateescape"),
        delivery_tag,
        redelivered,
        route[0].decode("utf-8", "surrogateescape"),
        route[1].decode("utf-8", "surrogateescape"),
    )
    generic = [method_frame(channel, deliver)]
    append_content(generic, channel, header, body, body_frame_bytes_max)
    assert b"".join(one_call) == b"".join(generic)


@pytest.mark.parametrize("frame_max", [FRAME_OVERHEAD_BYTES + 1, 100, 4096, 131_072])
@pytest.mark.parametrize("frames_of_body", [0, 1, 2, 3])
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_body_split_at_frame_max_boundaries(
    frame_max: int, frames_of_body: int, extra: int
) -> None:
    chunk = frame_max - FRAME_OVERHEAD_BYTES
    body = bytes(range(256)) * ((chunk * frames_of_body + extra) // 256 + 1)
    body = body[: max(0, chunk * frames_of_body + extra)]
    header = ContentHeader(body_size=len(body), properties=Basic.Properties())
    out: list[bytes] = []
    append_content(out, 7, header.marshal(), body, chunk)
    wire = b"".join(out)
    assert wire == pamqp_content(7, header, body, frame_max)
    # Walk the frames: every one fits in frame_max, no body frame is empty.
    sizes = []
    position = 0
    while position < len(wire):
        frame_type, _, size = struct.unpack_from(">BHI", wire, position)
        assert size + FRAME_OVERHEAD_BYTES <= frame_max or frame_type != FRAME_BODY
        if frame_type == FRAME_BODY:
            sizes.append(size)
        position += size + FRAME_OVERHEAD_BYTES
    assert sum(sizes) == len(body)
    assert all(size > 0 for size in sizes)
    assert len(sizes) == -(-len(body) // chunk)


def test_empty_body_sends_only_the_header_frame() -> None:
    header = ContentHeader(body_size=0, properties=Basic.Properties(content_type="a/b"))
    out: list[bytes] = []
    append_content(out, 3, header.marshal(), b"", 4088)
    assert b"".join(out) == pamqp.frame.marshal(header, 3)


@given(
    channel=channels,
    delivery_tag=delivery_tags,
    redelivered=st.booleans(),
    exchange=exchange_names,
    routing_key=routing_keys,
    message_count=st.integers(0, 2**32 - 1),
)
def test_get_ok_matches_pamqp(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_count: int,
) -> None:
    out: list[bytes] = []
    append_get_ok(
        out,
        channel,
        delivery_tag,
        redelivered,
        short_string(exchange) + short_string(routing_key),
        message_count,
    )
    get_ok = Basic.GetOk(delivery_tag, redelivered, exchange, routing_key, message_count)
    assert b"".join(out) == pamqp.frame.marshal(get_ok, channel)


@given(channel=channels, delivery_tag=delivery_tags, multiple=st.booleans())
def test_ack_frame_matches_pamqp(channel: int, delivery_tag: int, multiple: bool) -> None:
    assert ack_frame(channel, delivery_tag, multiple) == pamqp.frame.marshal(
        Basic.Ack(delivery_tag, multiple), channel
    )


@given(channel=channels, delivery_tag=delivery_tags, multiple=st.booleans(), requeue=st.booleans())
def test_nack_frame_matches_pamqp(
    channel: int, delivery_tag: int, multiple: bool, requeue: bool
) -> None:
    assert nack_frame(channel, delivery_tag, multiple, requeue) == pamqp.frame.marshal(
        Basic.Nack(delivery_tag, multiple, requeue), channel
    )


@given(
    channel=channels,
    consumer_tag=st.binary(max_size=255).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    delivery_tag=st.integers(0, 2**64 - 1),
    redelivered=st.booleans(),
    exchange=st.text(max_size=63),
    routing_key=st.binary(max_size=255).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    message_count=st.integers(0, 2**32 - 1),
    multiple=st.booleans(),
    requeue=st.booleans(),
)
def test_fast_encoders_match_the_generic_codec(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_count: int,
    multiple: bool,
    requeue: bool,
) -> None:
    # Beyond pamqp's reach: 64-bit tags and short strings that are not UTF-8.
    exchange_and_routing_key = short_string(exchange) + short_string(routing_key)
    out: list[bytes] = []
    append_get_ok(out, channel, delivery_tag, redelivered, exchange_and_routing_key, message_count)
    assert b"".join(out) == method_frame(
        channel,
        spec.BasicGetOk(delivery_tag, redelivered, exchange, routing_key, message_count),
    )
    assert ack_frame(channel, delivery_tag, multiple) == method_frame(
        channel, spec.BasicAck(delivery_tag, multiple)
    )
    assert nack_frame(channel, delivery_tag, multiple, requeue) == method_frame(
        channel, spec.BasicNack(delivery_tag, multiple, requeue)
    )


def test_short_string_limit() -> None:
    assert short_string("a" * 255) == b"\xff" + b"a" * 255
    with pytest.raises(ValueError, match="exceeds 255"):
        short_string("é" * 128)


def test_frame_helpers() -> None:
    assert encode_frame(FRAME_BODY, 5, b"abc") == pamqp.frame.marshal(ContentBody(b"abc"), 5)
    assert HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"


# ---------------------------------------------------------------- decoders


@given(
    channel=channels,
    exchange=exchange_names,
    routing_key=routing_keys,
    mandatory=st.booleans(),
    immediate=st.booleans(),
)
def test_decode_publish_reads_pamqps_publish(
    channel: int, exchange: str, routing_key: str, mandatory: bool, immediate: bool
) -> None:
    frame = pamqp.frame.marshal(
        Basic.Publish(
            exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=immediate
        ),
        channel,
    )
    expected = (exchange, routing_key, mandatory, immediate)
    payload = frame[7:-1]
    assert decode_publish(payload, 4, len(payload)) == expected
    # In place in a receive buffer, as the connection calls it.
    assert decode_publish(frame + b"\x01\x02", 7 + 4, len(frame) - 1) == expected
    # The route is the exchange and routing key exactly as basic.deliver writes them.
    route = short_string(exchange) + short_string(routing_key)
    assert split_publish(payload, 4, len(payload)) == (route, mandatory, immediate)
    assert split_publish(frame + b"\x01\x02", 7 + 4, len(frame) - 1) == (
        route,
        mandatory,
        immediate,
    )


@given(
    exchange=st.binary(max_size=255),
    routing_key=st.binary(max_size=255),
    bits=st.integers(0, 255),
    ticket=st.integers(0, 0xFFFF),
)
def test_decode_publish_agrees_with_the_generic_codec(
    exchange: bytes, routing_key: bytes, bits: int, ticket: int
) -> None:
    payload = (
        struct.pack(">IH", PUBLISH_INDEX, ticket)
        + bytes((len(exchange),))
        + exchange
        + bytes((len(routing_key),))
        + routing_key
        + bytes((bits,))
    )
    method = decode_method(payload)
    assert isinstance(method, spec.BasicPublish)
    assert decode_publish(payload, 4, len(payload)) == (
        method.exchange,
        method.routing_key,
        method.mandatory,
        method.immediate,
    )


@given(
    exchange=exchange_names,
    routing_key=routing_keys,
    mandatory=st.booleans(),
    trailing=st.binary(max_size=300),
    data=st.data(),
)
def test_truncated_publish_raises_index_error(
    exchange: str, routing_key: str, mandatory: bool, trailing: bytes, data: st.DataObject
) -> None:
    payload = encode_method(spec.BasicPublish(0, exchange, routing_key, mandatory, False))
    end = data.draw(st.integers(4, len(payload) - 1))
    # Whatever follows `end` in the buffer (the next frames) must not be read as arguments.
    with pytest.raises(IndexError):
        decode_publish(payload[:end] + trailing, 4, end)
    with pytest.raises(IndexError):
        split_publish(payload[:end] + trailing, 4, end)


@given(channel=channels, delivery_tag=delivery_tags, multiple=st.booleans())
def test_decode_ack_reads_pamqps_ack(channel: int, delivery_tag: int, multiple: bool) -> None:
    frame = pamqp.frame.marshal(Basic.Ack(delivery_tag, multiple), channel)
    assert decode_ack(frame[7:-1], 4) == (delivery_tag, multiple)
    assert decode_ack(frame, 7 + 4) == (delivery_tag, multiple)


def test_decode_ack_reads_64_bit_tags() -> None:
    assert decode_ack(encode_method(spec.BasicAck(2**64 - 1, True)), 4) == (2**64 - 1, True)


@pytest.mark.parametrize("cut", range(4, 13))
def test_truncated_ack_raises_struct_error(cut: int) -> None:
    payload = encode_method(spec.BasicAck(1, True))
    with pytest.raises(struct.error):
        decode_ack(payload[:cut], 4)
