"""The ports the broker calls out through; the server implements them.

The broker decides what happens and when; a port only carries the outcome to the wire.
Calls are synchronous and must not re-enter the broker.

Imports broker.* for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from amqpd.broker.consumer import Consumer
    from amqpd.broker.message import Message


class ChannelSink(Protocol):
    """Where one channel's server-initiated traffic goes."""

    def wire_tag(self, consumer_tag: str) -> bytes:
        """The consumer tag in the form `deliver` writes it (computed once per consumer)."""
        ...

    def deliver(
        self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message
    ) -> None:
        """basic.deliver to a consumer."""
        ...

    def returned(self, reply_code: int, reply_text: str, message: Message) -> None:
        """basic.return of an unroutable mandatory message."""
        ...

    def confirmed(self, sequence: int) -> None:
        """Publisher confirm: message `sequence` is safe (basic.ack, batched by the sink)."""
        ...

    def rejected(self, sequence: int) -> None:
        """Publisher confirm: message `sequence` was not taken (basic.nack)."""
        ...

    def consumer_cancelled(self, consumer_tag: str) -> None:
        """The broker ended a consumer (its queue was deleted): basic.cancel if supported."""
        ...
