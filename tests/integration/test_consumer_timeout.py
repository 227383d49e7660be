"""The consumer (visibility) timeout as a pika user sees it. x-consumer-timeout is
RabbitMQ 3.12's; Debian's 3.10 does not have it, so these run against amqpd only."""

from __future__ import annotations

import os
import time

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import WAIT_S, Cleanup

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(
        bool(os.environ.get("AMQP_URL")), reason="RabbitMQ 3.10 has no x-consumer-timeout"
    ),
]


def wait_until(channel: BlockingChannel, done: list[object]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done:
        assert time.monotonic() < deadline, f"nothing happened within {WAIT_S} s"
        channel.connection.process_data_events(time_limit=0.02)


@pytest.mark.parametrize("where", ["queue", "consumer"])
def test_a_consumer_holding_a_message_too_long_is_cancelled_and_the_message_requeued(
    channel: BlockingChannel, name: str, cleanup: Cleanup, where: str
) -> None:
    timeout = {"x-consumer-timeout": 200}
    channel.queue_declare(cleanup.queue(name), arguments=timeout if where == "queue" else {})
    channel.basic_publish("", name, b"slow")
    cancelled: list[str] = []
    channel.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    received: list[bytes] = []
    tag = channel.basic_consume(
        name,
        lambda _channel, _method, _properties, body: received.append(body),
        arguments=timeout if where == "consumer" else {},
    )
    wait_until(channel, cancelled)
    assert cancelled == [tag]
    assert received == [b"slow"]
    # The channel stays open; the message is back, flagged redelivered.
    method, _, body = channel.basic_get(name, auto_ack=True)
    assert method is not None and (body, method.redelivered) == (b"slow", True)
