"""Helpers for the integration tests: real clients against a running broker.

Every test here must pass against RabbitMQ (`AMQP_URL=amqp://guest:guest@127.0.0.1:5680/%2f`);
without AMQP_URL the same tests run against one amqpd process (see tests/conftest.py).

Waiting is always on events with a deadline (`process_data_events(time_limit=...)`), never
on sleeps. `round_trip` is the synchronous probe used after an asynchronous method (publish,
ack, reject) to learn whether the broker closed the channel or the connection because of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

WAIT_S = 5.0
"""How long to wait for something the broker should do promptly."""


def parameters(url: str, **overrides: Any) -> pika.URLParameters:
    """Connection parameters for `url` with attributes (heartbeat, channel_max...) replaced."""
    params = pika.URLParameters(url)
    for key, value in overrides.items():
        setattr(params, key, value)
    return params


def connect(url: str, **overrides: Any) -> BlockingConnection:
    return BlockingConnection(parameters(url, **overrides))


def wait_until(
    connection: BlockingConnection,
    predicate: Callable[[], bool],
    timeout_s: float = WAIT_S,
    what: str = "condition",
) -> None:
    """Process I/O and callbacks until `predicate()` holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        connection.process_data_events(time_limit=min(remaining, 0.05))


def round_trip(channel: BlockingChannel) -> None:
    """One synchronous method with no side effects; raises if the broker closed the channel."""
    channel.exchange_declare("amq.direct", passive=True)


def queue_depth(channel: BlockingChannel, queue: str) -> tuple[int, int]:
    """`(message_count, consumer_count)` from a passive queue.declare-ok."""
    ok = channel.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


class Cleanup:
    """Names of queues and exchanges to delete after the test, on a fresh connection."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, queue: str) -> str:
        self.queues.append(queue)
        return queue

    def exchange(self, exchange: str) -> str:
        self.exchanges.append(exchange)
        return exchange


def drain(channel: BlockingChannel, queue: str, auto_ack: bool = True) -> list[bytes]:
    """Every ready message body in `queue`, by basic.get until get-empty."""
    bodies: list[bytes] = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            return bodies
        bodies.append(body)


class Deliveries:
    """An `on_message_callback` that records every basic.deliver it is given."""

    def __init__(self) -> None:
        self.items: list[tuple[pika.spec.Basic.Deliver, pika.BasicProperties, bytes]] = []

    def __call__(
        self,
        _channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self.items.append((method, properties, body))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def bodies(self) -> list[bytes]:
        return [body for _, _, body in self.items]

    @property
    def methods(self) -> list[pika.spec.Basic.Deliver]:
        return [method for method, _, _ in self.items]


def raw_rpc(
    connection: BlockingConnection,
    channel: BlockingChannel,
    method: pika.amqp_object.Method,
    replies: list[type[pika.amqp_object.Method]],
) -> pika.amqp_object.Method:
    """Send a synchronous `method` past pika's client-side checks and return the reply.

    pika refuses some requests before they reach the broker (a consumer tag already used on
    the channel, basic.cancel of a tag it does not know); this puts the frame on the wire
    anyway so the broker's answer can be tested. Raises what the broker closed with.
    """
    answers: list[pika.amqp_object.Method] = []
    channel._impl._rpc(method, lambda frame: answers.append(frame.method), replies)
    wait_until(
        connection, lambda: bool(answers) or channel.is_closed, what=f"reply to {method.NAME}"
    )
    if not answers:
        reason = channel._closing_reason
        assert reason is not None, f"no reply to {method.NAME} and no channel.close"
        raise reason
    return answers[0]
