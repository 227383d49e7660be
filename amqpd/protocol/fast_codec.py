"""Hand-written codecs for the methods every message crosses: publish, deliver, ack.

A pamqp object per frame costs tens of microseconds; these are precompiled structs and
slices, property-tested byte for byte against pamqp (tests/protocol/test_fast_codec.py).
The content header travels as the bytes the publisher sent; only its body size is read.

Sans-IO; imports protocol.frames only.
"""

from __future__ import annotations

import struct
from typing import Final

from amqpd.protocol.frames import FRAME_END_BYTES, FRAME_METHOD, HEADER_STRUCT

PUBLISH_INDEX: Final = 0x003C0028  # basic.publish (60, 40)
ACK_INDEX: Final = 0x003C0050  # basic.ack (60, 80)
NACK_INDEX: Final = 0x003C0078  # basic.nack (60, 120)
REJECT_INDEX: Final = 0x003C005A  # basic.reject (60, 90)

_DELIVER_PREFIX: Final = struct.Struct(">BHIHH")  # frame header + class 60, method 60
_TAG_AND_FLAG: Final = struct.Struct(">QB")
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


def decode_publish(payload: bytes, offset: int, end: int) -> tuple[str, str, bool, bool]:
    """(exchange, routing_key, mandatory, immediate) of a basic.publish payload.

    `offset` points at the arguments, just past the class and method ids; `end` is where
    the frame's payload stops. Raises IndexError on a truncated payload; the caller turns
    that into a syntax error.
    """
    offset += 2  # reserved-1 (ticket)
    length = payload[offset]
    stop = offset + 1 + length
    exchange = payload[offset + 1 : stop].decode("utf-8", "surrogateescape")
    length = payload[stop]
    offset = stop + 1 + length
    routing_key = payload[stop + 1 : offset].decode("utf-8", "surrogateescape")
    if offset >= end:
        raise IndexError("basic.publish arguments end before their flags")
    bits = payload[offset]
    return exchange, routing_key, bool(bits & 1), bool(bits & 2)


def decode_ack(payload: bytes, offset: int) -> tuple[int, bool]:
    """(delivery_tag, multiple) of a basic.ack payload; `offset` is past the method ids."""
    delivery_tag, bits = _TAG_AND_FLAG.unpack_from(payload, offset)
    return delivery_tag, bool(bits & 1)


def append_deliver(
    out: list[bytes],
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    exchange_and_routing_key: bytes,
) -> None:
    """Append a basic.deliver method frame.

    `consumer_tag` and `exchange_and_routing_key` are already shortstr-encoded (cached on
    the consumer and on the message), so a delivery costs two struct packs.
    """
    out.append(
        _DELIVER_PREFIX.pack(
            FRAME_METHOD,
            channel,
            _DELIVER_FIXED_BYTES + len(consumer_tag) + len(exchange_and_routing_key),
            60,
            60,
        )
    )
    out.append(consumer_tag)
    out.append(_TAG_AND_FLAG.pack(delivery_tag, redelivered))
    out.append(exchange_and_routing_key)
    out.append(FRAME_END_BYTES)


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


def frame_header(frame_type: int, channel: int, size: int) -> bytes:
    return HEADER_STRUCT.pack(frame_type, channel, size)
