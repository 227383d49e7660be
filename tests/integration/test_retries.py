"""Retry with backoff as a pika user sees it: amqpd's own queue arguments (RabbitMQ has
none like them, so these run against amqpd only)."""

from __future__ import annotations

import os
import time

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import WAIT_S, Cleanup

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(bool(os.environ.get("AMQP_URL")), reason="an amqpd extension"),
]


def test_a_nacked_message_comes_back_after_its_delay_with_x_delivery_count(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), arguments={"x-retry-delays": [300, 600]})
    channel.basic_publish("", name, b"job")
    arrivals: list[tuple[float, bool, object]] = []

    def on_message(ch: BlockingChannel, method: object, properties: object, _: bytes) -> None:
        headers = getattr(properties, "headers", None) or {}
        arrivals.append((time.monotonic(), method.redelivered, headers.get("x-delivery-count")))  # type: ignore[attr-defined]
        if len(arrivals) < 3:
            ch.basic_nack(method.delivery_tag, requeue=True)  # type: ignore[attr-defined]
        else:
            ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]

    channel.basic_consume(name, on_message)
    deadline = time.monotonic() + WAIT_S
    while len(arrivals) < 3:
        assert time.monotonic() < deadline, f"only {len(arrivals)} deliveries"
        channel.connection.process_data_events(time_limit=0.02)
    (first, *_), (second, *again), (third, *last) = arrivals
    assert second - first >= 0.3 and third - second >= 0.6
    assert again == [True, 1] and last == [True, 2]
