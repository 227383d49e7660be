"""The delayed-message exchange as code written for RabbitMQ's plugin uses it, with pika:
`x-delayed-message`, `x-delayed-type` and the `x-delay` header, and amqpd's own
`x-deliver-at-ms`. The Debian RabbitMQ has no such plugin, so these run against amqpd only."""

from __future__ import annotations

import os
import time

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import WAIT_S, Cleanup, round_trip

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(bool(os.environ.get("AMQP_URL")), reason="an amqpd extension"),
]


def delayed_exchange(channel: BlockingChannel, cleanup: Cleanup, name: str, kind: str) -> str:
    exchange = cleanup.exchange(f"{name}-dx")
    channel.exchange_declare(exchange, "x-delayed-message", arguments={"x-delayed-type": kind})
    return exchange


def collect(channel: BlockingChannel, queue: str, count: int) -> list[tuple[float, bytes, dict]]:
    """(arrival wall-clock time, body, headers) of `count` deliveries."""
    got: list[tuple[float, bytes, dict]] = []

    def on_message(
        _: BlockingChannel, __: object, properties: pika.BasicProperties, body: bytes
    ) -> None:
        got.append((time.time(), body, properties.headers or {}))

    channel.basic_consume(queue, on_message, auto_ack=True)
    deadline = time.monotonic() + WAIT_S
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} deliveries"
        channel.connection.process_data_events(time_limit=0.01)
    return got


def test_messages_come_out_at_their_delay_whatever_the_publish_order(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange = delayed_exchange(channel, cleanup, name, "direct")
    queue = cleanup.queue(name)
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, "jobs")
    channel.confirm_delivery()
    published = time.time()
    for delay in (900, 300, 0, 600):
        channel.basic_publish(
            exchange,
            "jobs",
            b"%d" % delay,
            pika.BasicProperties(headers={"x-delay": delay}, delivery_mode=2),
        )
    got = collect(channel, queue, 4)
    assert [body for _, body, _ in got] == [b"0", b"300", b"600", b"900"]
    for arrived, body, headers in got:
        delay_ms = int(body)
        assert arrived - published >= delay_ms / 1000
        # As the plugin leaves it: the delay negated (absent when there was none to do).
        assert headers.get("x-delay") == (-delay_ms if delay_ms else 0)


def test_scheduled_at_an_absolute_time_with_x_deliver_at_ms(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange = delayed_exchange(channel, cleanup, name, "fanout")
    queue = cleanup.queue(name)
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange)
    at_ms = int(time.time() * 1000) + 500
    channel.basic_publish(
        exchange, "", b"at", pika.BasicProperties(headers={"x-deliver-at-ms": at_ms})
    )
    ((arrived, body, _),) = collect(channel, queue, 1)
    assert body == b"at"
    assert arrived * 1000 >= at_ms


@pytest.mark.parametrize("headers", [{"x-delay": "soon"}, {"x-delay": 10 * 365 * 86_400_000}])
def test_a_bad_delay_closes_the_channel_with_406(
    channel: BlockingChannel, name: str, cleanup: Cleanup, headers: dict
) -> None:
    exchange = delayed_exchange(channel, cleanup, name, "direct")
    channel.basic_publish(exchange, "k", b"bad", pika.BasicProperties(headers=headers))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        round_trip(channel)
    assert closed.value.reply_code == 406


def test_declaring_without_x_delayed_type_is_refused_with_406(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.exchange_declare(cleanup.exchange(name), "x-delayed-message")
    assert closed.value.reply_code == 406
    assert "x-delayed-type" in closed.value.reply_text
