"""What the API does to the broker, as the user asking: publish, get, declare, delete,
purge, bind and unbind run on a broker channel of a connection of that user's own, so
the same permission checks, limits and reply codes apply as over AMQP.

A publish waits for its confirm, so an HTTP 200 for a persistent message routed to a
durable queue means what a publisher confirm means: it is on disk.

Imports anyio, amqpd.broker, amqpd.codec and amqpd.server.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import anyio

from amqpd.broker.access import Access
from amqpd.broker.channel import Channel
from amqpd.broker.connection import Connection
from amqpd.broker.consumer import Consumer
from amqpd.broker.message import Message
from amqpd.broker.vhost import VirtualHost
from amqpd.codec.properties import BasicProperties, decode_properties, encode_content_header
from amqpd.errors import ChannelException, InternalError
from amqpd.management.present import Json, properties_json

# How long an HTTP publish waits for its confirm before answering 500.
PUBLISH_CONFIRM_TIMEOUT_S: Final = 30.0
ACK_MODES: Final = (
    "ack_requeue_true",
    "reject_requeue_true",
    "ack_requeue_false",
    "reject_requeue_false",
)


class _Sink:
    """The channel's outbound side: confirms and returns are remembered, not sent."""

    def __init__(self) -> None:
        self.confirmed_through = 0
        self.nacked: set[int] = set()
        self.returned_count = 0
        self.changed = anyio.Event()

    def wire_tag(self, consumer_tag: str) -> bytes:
        return consumer_tag.encode()

    def deliver(
        self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message
    ) -> None:
        raise AssertionError("an API channel has no consumers")

    def returned(self, reply_code: int, reply_text: str, message: Message) -> None:
        self.returned_count += 1

    def confirmed(self, sequence: int) -> None:
        self.confirmed_through = sequence
        self.changed.set()

    def rejected(self, sequence: int) -> None:
        self.nacked.add(sequence)
        self.changed.set()

    def consumer_cancelled(self, consumer_tag: str) -> None:
        """An API channel has no consumers to cancel."""

    def failed(self, error: ChannelException) -> None:
        """An API channel lives for one request; nothing outlives it to be told."""


@contextmanager
def api_channel(vhost: VirtualHost, access: Access) -> Iterator[tuple[Channel, _Sink]]:
    """A channel on a connection of the user's own, for one request; closing it
    requeues whatever it still holds."""
    connection = Connection(
        f"HTTP API ({access.username})",
        access.username,
        vhost,
        consumer_cancel_notify=False,
        access=access,
    )
    sink = _Sink()
    channel = Channel(1, connection, sink)
    connection.channels[1] = channel
    try:
        yield channel, sink
    finally:
        connection.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def publish(
    vhost: VirtualHost,
    access: Access,
    exchange: str,
    routing_key: str,
    properties: BasicProperties,
    body: bytes,
) -> bool:
    """Publish as the user, mandatory, and wait for the confirm; True if a queue took it.
    AMQP errors (404, 403, 406) come out as ChannelException."""
    with api_channel(vhost, access) as (channel, sink):
        channel.select_confirms()
        header = encode_content_header(len(body), properties)
        channel.publish(exchange, routing_key, True, False, header, body, None, _now_ms())
        with anyio.move_on_after(PUBLISH_CONFIRM_TIMEOUT_S):
            while not sink.confirmed_through and not sink.nacked:
                await sink.changed.wait()
                sink.changed = anyio.Event()
        if sink.nacked or not sink.confirmed_through:
            raise InternalError("the broker could not take the message (see its log)")
        return sink.returned_count == 0


def get(
    vhost: VirtualHost,
    access: Access,
    queue: str,
    count: int,
    ackmode: str,
    encoding: str,
    truncate_bytes: int,
) -> list[dict[str, Json]]:
    """Take up to `count` messages as basic.get does, then settle them all per `ackmode`
    (the requeue modes put them back where they were, flagged redelivered)."""
    fetched: list[dict[str, Json]] = []
    with api_channel(vhost, access) as (channel, _):
        last_tag = 0
        for _ in range(count):
            got = channel.get(queue, no_ack=False)
            if got is None:
                break
            last_tag, redelivered, message, remaining = got
            fetched.append(_message_json(message, redelivered, remaining, encoding, truncate_bytes))
        if last_tag and ackmode == "ack_requeue_false":
            channel.ack(last_tag, multiple=True)
        elif last_tag and ackmode == "reject_requeue_false":
            channel.nack(last_tag, multiple=True, requeue=False)
        # The requeue modes: closing the channel puts every message back in place.
    return fetched


def _message_json(
    message: Message, redelivered: bool, remaining: int, encoding: str, truncate_bytes: int
) -> dict[str, Json]:
    body = message.body[:truncate_bytes]
    payload: str
    if encoding == "auto":
        try:
            payload, payload_encoding = body.decode(), "string"
        except UnicodeDecodeError:
            payload, payload_encoding = base64.b64encode(body).decode(), "base64"
    else:
        payload, payload_encoding = base64.b64encode(body).decode(), "base64"
    return {
        "payload_bytes": message.body_size,
        "redelivered": redelivered,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "message_count": remaining,
        "properties": properties_json(decode_properties(message.header)),
        "payload": payload,
        "payload_encoding": payload_encoding,
    }
