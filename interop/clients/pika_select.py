"""pika's SelectConnection: the callback style of long-running consumers."""

from __future__ import annotations

import os
from typing import Any

import pika

COUNT = 10


class Run:
    def __init__(self, url: str, prefix: str) -> None:
        self.exchange, self.queue = f"{prefix}.x", f"{prefix}.q"
        self.confirmed = 0
        self.bodies: list[bytes] = []
        self.rejected = False
        self.failure: str | None = None
        self.connection = pika.SelectConnection(
            pika.URLParameters(url),
            on_open_callback=lambda c: c.channel(on_open_callback=self.on_channel),
            on_open_error_callback=lambda c, e: self.fail(f"open failed: {e!r}"),
        )
        self.channel: Any = None

    def fail(self, reason: str) -> None:
        self.failure = reason
        self.connection.ioloop.stop()

    def on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(lambda ch, reason: self.closed(reason))
        channel.confirm_delivery(self.on_confirm, callback=lambda _: self.declare())

    def closed(self, reason: Exception) -> None:
        if self.failure is None and len(self.bodies) < COUNT:
            self.fail(f"channel closed: {reason!r}")

    def declare(self) -> None:
        self.channel.exchange_declare(
            self.exchange, "direct", auto_delete=True, callback=lambda _: self.declare_queue()
        )

    def declare_queue(self) -> None:
        self.channel.queue_declare(self.queue, auto_delete=True, callback=lambda _: self.bind())

    def bind(self) -> None:
        self.channel.queue_bind(self.queue, self.exchange, "key", callback=lambda _: self.publish())

    def publish(self) -> None:
        for number in range(COUNT):
            self.channel.basic_publish(self.exchange, "key", b"%d" % number)

    def on_confirm(self, frame: Any) -> None:
        if isinstance(frame.method, pika.spec.Basic.Nack):
            self.fail("a publish was nacked")
            return
        tag = frame.method.delivery_tag
        self.confirmed = tag if frame.method.multiple else max(self.confirmed, tag)
        if self.confirmed == COUNT:
            self.channel.basic_qos(prefetch_count=2, callback=lambda _: self.consume())

    def consume(self) -> None:
        self.channel.basic_consume(self.queue, self.on_message)

    def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if body == b"3" and not self.rejected:
            self.rejected = True
            channel.basic_reject(method.delivery_tag, requeue=True)
            return
        if body == b"3" and not method.redelivered:
            self.fail("a requeued message came back without redelivered")
            return
        channel.basic_ack(method.delivery_tag)
        self.bodies.append(body)
        if len(self.bodies) == COUNT:
            self.connection.close()

    def run(self) -> None:
        self.connection.ioloop.call_later(15, lambda: self.fail("timed out"))
        self.connection.add_on_close_callback(lambda c, reason: c.ioloop.stop())
        self.connection.ioloop.start()
        if self.failure:
            raise SystemExit(self.failure)
        assert sorted(self.bodies) == [b"%d" % n for n in range(COUNT)], self.bodies


if __name__ == "__main__":
    Run(os.environ["AMQP_URL"], os.environ["RUN_PREFIX"]).run()
