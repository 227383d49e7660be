"""Hand-written codecs for the methods every message crosses: publish, deliver, ack.

A pamqp object per frame costs tens of microseconds; these are precompiled structs and
slices, property-tested byte for byte against pamqp (tests/protocol/test_fast_codec.py).
The content header travels as the bytes the publisher sent; only its body size is read.

Sans-IO; imports protocol.frames only.
"""

from __future__ import annotations

import struct
from typing import Final

from amqpd.protocol.frames import (
    FRAME_BODY,
    FRAME_END_BYTES,
    FRAME_HEADER,
    FRAME_METHOD,
    append_body_frames,
)

PUBLISH_INDEX: Final = 0x003C0028  # basic.publish (60, 40)
ACK_INDEX: Final = 0x003C0050  # basic.ack (60, 80)
ACK_PAYLOAD_BYTES: Final = 4 + 9  # class/method ids, delivery_tag u64, multiple bit

_DELIVER_PREFIX: Final = struct.Struct(">BHIHH")  # frame header + class 60, method 60
_FRAME_END_THEN_HEADER: Final = struct.Struct(">BBHI")  # previous frame's end + next header
_TAG_AND_FLAG: Final = struct.Struct(">QB")
ACK_ARGUMENTS: Final = _TAG_AND_FLAG  # basic.ack: delivery_tag u64, multiple bit
_ACK_FRAME: Final = struct.Struct(">BHIHHQBB")  # whole basic.ack frame incl. frame-end
_GET_OK_PREFIX: Final = struct.Struct(">BHIHHQB")  # frame header, 60, 71, tag, redelivered
_U32: Final = struct.Struct(">I")
_DELIVER_FIXED_BYTES: Final = 4 + 9  # class/method ids + delivery_tag + redelivered octet
_GET_OK_FIXED_BYTES: Final = 4 + 9 + 4  # ... + message_count


def short_string(value: str) -> bytes:
    """A shortstr as it goes on the wire; callers cache it per consumer tag or message."""
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError(f"short string of {len(raw)} bytes exceeds 255")
    return bytes((len(raw),)) + raw


def split_publish(payload: bytes, offset: int, end: int) -> tuple[bytes, bool, bool]:
    """(route, mandatory, immediate) of a basic.publish payload.

    `offset` points at the arguments, just past the class and method ids; `end` is where
    the frame's payload stops. `route` is the exchange and routing key exactly as they
    are on the wire (two shortstrs), which is also how basic.deliver writes them, so a
    delivery copies them instead of encoding. IndexError on a truncated payload.
    """
    route_start = offset + 2  # past reserved-1 (ticket)
    routing_key_at = route_start + 1 + payload[route_start]
    flags_at = routing_key_at + 1 + payload[routing_key_at]
    if flags_at >= end:
        raise IndexError("basic.publish arguments end before their flags")
    bits = payload[flags_at]
    return payload[route_start:flags_at], bool(bits & 1), bool(bits & 2)


def decode_route(route: bytes) -> tuple[str, str]:
    """(exchange, routing_key) from the two shortstrs split_publish returns."""
    exchange_length = route[0]
    return (
        route[1 : 1 + exchange_length].decode("utf-8", "surrogateescape"),
        route[2 + exchange_length :].decode("utf-8", "surrogateescape"),
    )


def decode_publish(payload: bytes, offset: int, end: int) -> tuple[str, str, bool, bool]:
    """(exchange, routing_key, mandatory, immediate) of a basic.publish payload."""
    route, mandatory, immediate = split_publish(payload, offset, end)
    return (*decode_route(route), mandatory, immediate)


def decode_ack(payload: bytes, offset: int) -> tuple[int, bool]:
    """(delivery_tag, multiple) of a basic.ack payload; `offset` is past the method ids."""
    delivery_tag, bits = ACK_ARGUMENTS.unpack_from(payload, offset)
    return delivery_tag, bool(bits & 1)


def append_delivery(
    out: list[bytes],
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    route: bytes,
    header: bytes,
    body: bytes,
    body_frame_bytes_max: int,
) -> None:
    """basic.deliver, its content header and its body frames, in one call.

    The common case (a body that fits one frame) costs three struct packs and nine
    appends; larger bodies are re-split to the consumer's frame_max.
    """
    body_size = len(body)
    out += (
        _DELIVER_PREFIX.pack(
            FRAME_METHOD,
            channel,
            _DELIVER_FIXED_BYTES + len(consumer_tag) + len(route),
            60,
            60,
        ),
        consumer_tag,
        _TAG_AND_FLAG.pack(delivery_tag, redelivered),
        route,
        _FRAME_END_THEN_HEADER.pack(0xCE, FRAME_HEADER, channel, len(header)),
        header,
    )
    if body_size <= body_frame_bytes_max:
        if body_size:
            out += (_FRAME_END_THEN_HEADER.pack(0xCE, FRAME_BODY, channel, body_size), body)
        out.append(FRAME_END_BYTES)
        return
    out.append(FRAME_END_BYTES)
    append_body_frames(out, channel, body, body_frame_bytes_max)


def append_get_ok(
    out: list[bytes],
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange_and_routing_key: bytes,
    message_count: int,
) -> None:
    """Append a basic.get-ok method frame."""
    out.append(
        _GET_OK_PREFIX.pack(
            FRAME_METHOD,
            channel,
            _GET_OK_FIXED_BYTES + len(exchange_and_routing_key),
            60,
            71,
            delivery_tag,
            redelivered,
        )
    )
    out.append(exchange_and_routing_key)
    out.append(_U32.pack(message_count))
    out.append(FRAME_END_BYTES)


def ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """A whole basic.ack frame (publisher confirms)."""
    return _ACK_FRAME.pack(FRAME_METHOD, channel, 13, 60, 80, delivery_tag, multiple, 0xCE)


def nack_frame(channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> bytes:
    """A whole basic.nack frame (publisher confirms)."""
    bits = (1 if multiple else 0) | (2 if requeue else 0)
    return _ACK_FRAME.pack(FRAME_METHOD, channel, 13, 60, 120, delivery_tag, bits, 0xCE)
