"""Drive the synchronous broker without any I/O: a recording sink and message builders."""

from __future__ import annotations

from typing import Any

import attrs

from amqpd.broker.channel import Channel
from amqpd.broker.connection import Connection
from amqpd.broker.consumer import Consumer
from amqpd.broker.message import Message
from amqpd.broker.vhost import VirtualHost
from amqpd.codec.properties import BasicProperties, encode_content_header
from amqpd.errors import ChannelException


@attrs.frozen
class Delivery:
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    message: Message

    @property
    def body(self) -> bytes:
        return self.message.body


class RecordingSink:
    """A ChannelSink that remembers everything the broker sends."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.returns: list[tuple[int, str, Message]] = []
        self.confirms: list[int] = []
        self.nacks: list[int] = []
        self.cancelled: list[str] = []
        self.failures: list[ChannelException] = []

    def wire_tag(self, consumer_tag: str) -> bytes:
        return consumer_tag.encode()

    def deliver(
        self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message
    ) -> None:
        self.deliveries.append(Delivery(consumer.tag, delivery_tag, redelivered, message))

    def returned(self, reply_code: int, reply_text: str, message: Message) -> None:
        self.returns.append((reply_code, reply_text, message))

    def confirmed(self, sequence: int) -> None:
        self.confirms.append(sequence)

    def rejected(self, sequence: int) -> None:
        self.nacks.append(sequence)

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.cancelled.append(consumer_tag)

    def failed(self, error: ChannelException) -> None:
        self.failures.append(error)

    def bodies(self) -> list[bytes]:
        return [delivery.body for delivery in self.deliveries]

    def take(self) -> list[Delivery]:
        taken, self.deliveries = self.deliveries, []
        return taken


def header(body: bytes = b"", **properties: Any) -> bytes:
    return encode_content_header(len(body), BasicProperties(**properties))


def message(
    routing_key: str = "", body: bytes = b"m", exchange: str = "", **properties: Any
) -> Message:
    return Message(exchange, routing_key, header(body, **properties), body)


class Client:
    """One connection with channels, each with its own recording sink."""

    def __init__(
        self, vhost: VirtualHost, username: str = "guest", *, cancel_notify: bool = True
    ) -> None:
        self.connection = Connection(
            f"test-{username}", username, vhost, consumer_cancel_notify=cancel_notify
        )
        self.sinks: dict[int, RecordingSink] = {}

    def channel(self, number: int = 1) -> tuple[Channel, RecordingSink]:
        sink = RecordingSink()
        channel = Channel(number, self.connection, sink)
        self.connection.channels[number] = channel
        self.sinks[number] = sink
        return channel, sink


def publish(
    channel: Channel,
    exchange: str,
    routing_key: str,
    body: bytes = b"m",
    *,
    mandatory: bool = False,
    **properties: Any,
) -> None:
    channel.publish(exchange, routing_key, mandatory, False, header(body, **properties), body)


def consume(channel: Channel, queue: str = "q", tag: str = "c", no_ack: bool = False) -> None:
    consumer = channel.consume(queue, tag, no_ack=no_ack, exclusive=False, arguments={})
    channel.start(consumer)
