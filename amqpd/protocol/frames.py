"""Frame layout: `type u8 | channel u16 | size u32 | payload | 0xCE`, and outbound framing.

Owns the frame constants, the protocol header, and the encoders that wrap payloads in
frames: methods, content (header + body re-split to the peer's frame_max) and heartbeats.
Parsing lives in protocol/connection.py, which walks the receive buffer in one loop.

Sans-IO; imports protocol.methods and protocol.spec only.
"""

from __future__ import annotations

import struct
from typing import Final

from amqpd.protocol.methods import encode_method
from amqpd.protocol.spec import Method

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_END_BYTES: Final = b"\xce"
FRAME_HEADER_BYTES: Final = 7
FRAME_OVERHEAD_BYTES: Final = FRAME_HEADER_BYTES + 1  # header + frame-end octet
FRAME_MIN_SIZE: Final = 4096  # the spec's lowest frame_max a peer may negotiate

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
HEADER_STRUCT: Final = struct.Struct(">BHI")
HEARTBEAT_FRAME: Final = HEADER_STRUCT.pack(FRAME_HEARTBEAT, 0, 0) + FRAME_END_BYTES


def encode_frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return HEADER_STRUCT.pack(frame_type, channel, len(payload)) + payload + FRAME_END_BYTES


def method_frame(channel: int, method: Method) -> bytes:
    return encode_frame(FRAME_METHOD, channel, encode_method(method))


def append_content(
    out: list[bytes], channel: int, header: bytes, body: bytes, body_frame_bytes_max: int
) -> None:
    """Append the header frame and body frames, each body frame at most the peer's limit.

    `body_frame_bytes_max` is the payload limit (frame_max minus the 8 bytes of framing).
    A body of zero bytes sends no body frame at all, as the spec requires.
    """
    pack = HEADER_STRUCT.pack
    out.append(pack(FRAME_HEADER, channel, len(header)))
    out.append(header)
    out.append(FRAME_END_BYTES)
    size = len(body)
    if size <= body_frame_bytes_max:
        if size:
            out.append(pack(FRAME_BODY, channel, size))
            out.append(body)
            out.append(FRAME_END_BYTES)
        return
    append_body_frames(out, channel, body, body_frame_bytes_max)


def append_body_frames(
    out: list[bytes], channel: int, body: bytes, body_frame_bytes_max: int
) -> None:
    """A body larger than one frame, re-split to the peer's limit."""
    view = memoryview(body)
    pack = HEADER_STRUCT.pack
    for start in range(0, len(body), body_frame_bytes_max):
        chunk = view[start : start + body_frame_bytes_max]
        out += (pack(FRAME_BODY, channel, len(chunk)), bytes(chunk), FRAME_END_BYTES)
