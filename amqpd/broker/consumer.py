"""A consumer: one `basic.consume` on one channel, reading one queue.

Holds its tag, acknowledgement mode, priority, prefetch limit (fixed when it was created, as
RabbitMQ's per-consumer `basic.qos(global=false)` is) and the count of messages it holds
unacked.

Synchronous and pure; imports amqpd.codec and broker.* only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amqpd.codec.fields import FieldTable

if TYPE_CHECKING:
    from amqpd.broker.channel import Channel
    from amqpd.broker.queue import Queue


class Consumer:
    __slots__ = (
        "arguments",
        "channel",
        "exclusive",
        "no_ack",
        "prefetch_count",
        "priority",
        "queue",
        "tag",
        "timeout_armed",
        "timeout_ms",
        "unacked",
        "wire_tag",
    )

    def __init__(
        self,
        tag: str,
        channel: Channel,
        queue: Queue,
        *,
        no_ack: bool,
        exclusive: bool,
        prefetch_count: int,
        priority: int,
        arguments: FieldTable,
        wire_tag: bytes,
    ) -> None:
        self.tag = tag
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch_count = prefetch_count
        self.priority = priority  # x-priority: higher goes first while it has credit
        self.arguments = arguments
        self.unacked = 0
        # Consumer timeout: how long a delivery may stay unacked (None: forever), and
        # whether a wake-up is asked for.
        self.timeout_ms: int | None = None
        self.timeout_armed = False
        # The tag as the delivery encoder writes it; opaque to the broker.
        self.wire_tag = wire_tag

    def __repr__(self) -> str:
        return f"<Consumer {self.tag!r} on {self.queue!r}>"

    def on_timer(self, now_ms: int) -> None:
        """Its timeout came: cancel it if a delivery has been held that long."""
        self.timeout_armed = False
        self.channel.check_consumer_timeout(self, now_ms)
