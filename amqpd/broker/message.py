"""A published message: where it was sent, its content header as received, and its body.

The content header stays the bytes the publisher sent; properties are decoded the first
time a rule asks for them (user_id, headers for routing, CC/BCC) and cached. One Message
is shared by every queue it is routed to; per-queue state lives in QueueEntry.

Synchronous and pure; imports attrs and amqpd.codec only.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from amqpd.codec.fields import FieldTable, FieldValue
from amqpd.codec.properties import (
    FLAG_HEADERS,
    PROPERTY_FLAGS_OFFSET,
    BasicProperties,
    decode_properties,
    delivery_mode_of,
    encode_content_header,
)

_CC_KEY: Final = b"\x02CC"  # shortstr key as it appears inside an encoded header table
_BCC_KEY: Final = b"\x03BCC"
_U32: Final = struct.Struct(">I")
_FLAGS_AT: Final = struct.Struct(">H").unpack_from
PERSISTENT_DELIVERY_MODE: Final = 2


class Message:
    """Immutable: rewriting properties (BCC) makes a new Message."""

    __slots__ = (
        "_properties",
        "body",
        "encoded_route",
        "exchange",
        "flags",
        "header",
        "memory_bytes",
        "routing_key",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        header: bytes,
        body: bytes,
        encoded_route: bytes | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.header = header
        self.body = body
        # which properties are present (property_flags, inlined: every message pays it)
        self.flags: int = _FLAGS_AT(header, PROPERTY_FLAGS_OFFSET)[0]
        self._properties: BasicProperties | None = None
        # Exchange and routing key as the wire carries them (two shortstrs), shared by
        # every delivery of this message; opaque to the broker, set by whoever has it.
        self.encoded_route = encoded_route
        # What holding it costs, roughly, for the memory bounds (asked twice per message).
        self.memory_bytes: int = len(body) + len(header) + MESSAGE_OVERHEAD_BYTES

    @property
    def body_size(self) -> int:
        return len(self.body)

    @property
    def persistent(self) -> bool:
        """delivery_mode 2: the message must survive a restart on a durable queue."""
        return bool(self.flags) and delivery_mode_of(self.header) == PERSISTENT_DELIVERY_MODE

    def stored_form(self) -> bytes:
        """The message as a log record's payload: route, header length, header, body."""
        route = self.encoded_route
        if route is None:
            route = self.encoded_route = _short(self.exchange) + _short(self.routing_key)
        header = self.header
        return b"".join((route, _U32.pack(len(header)), header, self.body))

    @classmethod
    def from_stored(cls, payload: bytes, like: Message | None = None) -> Message:
        """The message a log record holds (the inverse of stored_form).

        `like`: the message read just before, whose exchange and routing key this one
        most likely shares; then they are not decoded again (a deep queue's read-ahead
        decodes hundreds of thousands of records a second).
        """
        route = like.encoded_route if like is not None else None
        if route is not None and payload.startswith(route):
            exchange, routing_key = like.exchange, like.routing_key  # type: ignore[union-attr]
            header_length_at = len(route)
        else:
            exchange_length = payload[0]
            routing_key_at = 1 + exchange_length
            header_length_at = routing_key_at + 1 + payload[routing_key_at]
            route = payload[:header_length_at]
            exchange = route[1:routing_key_at].decode("utf-8", "surrogateescape")
            routing_key = route[routing_key_at + 1 :].decode("utf-8", "surrogateescape")
        (header_length,) = _U32.unpack_from(payload, header_length_at)
        header_at = header_length_at + 4
        body_at = header_at + header_length
        return cls(exchange, routing_key, payload[header_at:body_at], payload[body_at:], route)

    @staticmethod
    def stored_flags(payload: bytes) -> int:
        """The property flags of the message a log record holds, without decoding it."""
        header_length_at = 2 + payload[0] + payload[1 + payload[0]]
        flags: int = _FLAGS_AT(payload, header_length_at + 4 + PROPERTY_FLAGS_OFFSET)[0]
        return flags

    @property
    def properties(self) -> BasicProperties:
        properties = self._properties
        if properties is None:
            properties = self._properties = decode_properties(self.header)
        return properties

    @property
    def headers(self) -> FieldTable:
        if not self.flags & FLAG_HEADERS:
            return {}
        return self.properties.headers or {}

    def sender_selected_keys(self) -> tuple[list[str], list[str]]:
        """The CC and BCC routing keys from the headers (RabbitMQ's sender-selected routing)."""
        header = self.header
        if not self.flags & FLAG_HEADERS or (_CC_KEY not in header and _BCC_KEY not in header):
            return [], []
        headers = self.headers
        return _string_list(headers.get("CC")), _string_list(headers.get("BCC"))

    def has_bcc(self) -> bool:
        return bool(self.flags & FLAG_HEADERS) and _BCC_KEY in self.header and "BCC" in self.headers

    def without_bcc(self) -> Message:
        """A copy whose headers no longer carry BCC, as RabbitMQ delivers it."""
        headers = dict(self.headers)
        headers.pop("BCC", None)
        return self.with_headers(headers)

    def with_delivery_count(self, count: int) -> Message:
        """A copy carrying `x-delivery-count` (earlier deliveries that came back), as
        RabbitMQ's quorum queues redeliver."""
        return self.with_headers({**self.headers, "x-delivery-count": count})

    def with_headers(self, headers: FieldTable) -> Message:
        """A copy whose headers are `headers` (the rest of the content header as it was)."""
        rewritten = attrs.evolve(self.properties, headers=headers)
        copy = Message(
            self.exchange,
            self.routing_key,
            encode_content_header(len(self.body), rewritten),
            self.body,
            self.encoded_route,
        )
        copy._properties = rewritten
        return copy


# Bytes a queued message costs beyond its header and body (objects, slots, list entries).
MESSAGE_OVERHEAD_BYTES: Final = 256


def _short(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    return bytes((len(raw),)) + raw


def _string_list(value: FieldValue) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]
