"""Priority queues as a pika user sees them (RabbitMQ 3.10's behaviour; these tests also
run against it with AMQP_URL)."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import Cleanup

pytestmark = pytest.mark.timeout(30)


def publish(channel: BlockingChannel, queue: str, priorities: list[int | None]) -> None:
    for index, priority in enumerate(priorities):
        properties = pika.BasicProperties(priority=priority)
        channel.basic_publish("", queue, f"{index}:{priority}".encode(), properties)


def drain(channel: BlockingChannel, queue: str) -> list[tuple[str, int | None]]:
    got = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((body.decode(), properties.priority))


def test_higher_priorities_first_and_the_property_is_delivered_unchanged(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), arguments={"x-max-priority": 3})
    publish(channel, name, [None, 1, 5, 3, 0, 200])
    assert drain(channel, name) == [
        ("2:5", 5),
        ("3:3", 3),
        ("5:200", 200),
        ("1:1", 1),
        ("0:None", None),
        ("4:0", 0),
    ]


def test_nack_with_requeue_puts_a_message_back_in_its_level(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), arguments={"x-max-priority": 2})
    publish(channel, name, [0, 2, 1])
    method, _, body = channel.basic_get(name)
    assert method is not None and body == b"1:2"
    channel.basic_nack(method.delivery_tag, requeue=True)
    method, _, body = channel.basic_get(name, auto_ack=True)
    assert method is not None and (body, method.redelivered) == (b"1:2", True)
    assert drain(channel, name) == [("2:1", 1), ("0:0", 0)]


@pytest.mark.parametrize(
    ("value", "reason"),
    [(256, "{max_value_exceeded,256}"), (-1, "{value_negative,-1}")],
)
def test_an_out_of_range_max_priority_is_406(
    channel: BlockingChannel, name: str, value: int, reason: str
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        channel.queue_declare(name, arguments={"x-max-priority": value})
    assert error.value.reply_code == 406
    assert reason in error.value.reply_text
