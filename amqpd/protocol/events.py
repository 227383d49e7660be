"""What the protocol layer reports to its caller after reading bytes.

The hot events (`Publish`, `Ack`) are plain slotted classes built with as little work as
possible; the rest are frozen attrs values.

Sans-IO; imports amqpd.codec and protocol.spec only.
"""

from __future__ import annotations

import attrs

from amqpd.codec.fields import FieldTable
from amqpd.errors import ChannelException
from amqpd.protocol.spec import Method


class Event:
    __slots__ = ()


@attrs.frozen
class LoginRequested(Event):
    """connection.start-ok arrived; the caller must accept_login() or refuse_login()."""

    mechanism: str
    username: str
    password: str = attrs.field(repr=False)
    client_properties: FieldTable
    locale: str


@attrs.frozen
class Tuned(Event):
    """connection.tune-ok arrived and its values are now in force."""

    channel_max: int
    frame_max: int
    heartbeat_s: int


@attrs.frozen
class OpenRequested(Event):
    """connection.open arrived; the caller must accept_open() or raise."""

    virtual_host: str


@attrs.frozen
class CloseRequested(Event):
    """The peer closed the connection; close-ok is already queued."""

    reply_code: int
    reply_text: str


@attrs.frozen
class CloseCompleted(Event):
    """The peer answered our connection.close with close-ok."""


@attrs.frozen
class BadProtocolHeader(Event):
    """The peer spoke another protocol; our header is queued and the connection is done."""

    received: bytes


@attrs.frozen
class ChannelOpened(Event):
    channel: int


@attrs.frozen
class ChannelClosed(Event):
    """The peer closed a channel (close-ok queued), or confirmed our close (close-ok)."""

    channel: int
    by_peer: bool


@attrs.frozen
class ChannelFailed(Event):
    """The protocol found a channel-scope error (e.g. a message over the size limit).

    The caller closes the channel as it would for its own errors.
    """

    channel: int
    error: ChannelException


@attrs.frozen
class MethodReceived(Event):
    """Any method on an open channel other than the hot ones and channel.open/close."""

    channel: int
    method: Method


class Publish(Event):
    """A complete basic.publish: method arguments, content header payload and body."""

    __slots__ = (
        "body",
        "channel",
        "exchange",
        "header",
        "immediate",
        "mandatory",
        "route",
        "routing_key",
    )

    def __init__(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        immediate: bool,
        route: bytes,
    ) -> None:
        self.channel = channel
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate
        self.route = route  # exchange and routing key as shortstrs, as received
        self.header = b""
        self.body = b""


class Ack(Event):
    """basic.ack from a consumer."""

    __slots__ = ("channel", "delivery_tag", "multiple")

    def __init__(self, channel: int, delivery_tag: int, multiple: bool) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.multiple = multiple
