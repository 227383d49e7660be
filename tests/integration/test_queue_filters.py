"""Tag filtering for consumers of classic queues (`x-stream-filter`, an amqpd extension:
RabbitMQ filters only stream consumers), with pika and aio-pika against the real broker.

Skipped against RabbitMQ (AMQP_URL), which ignores these arguments on classic queues.
"""

from __future__ import annotations

import os
from pathlib import Path

import aio_pika
import aio_pika.abc
import anyio
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from amqpd.config.model import Limits
from tests.integration.helpers import Cleanup, connect, queue_depth, wait_until
from tests.support.in_process import running_node, url_of

pytestmark = [
    pytest.mark.skipif(
        bool(os.environ.get("AMQP_URL")), reason="an amqpd extension RabbitMQ 3.10 does not have"
    ),
    pytest.mark.timeout(60),
]

WAIT_S = 5.0


def publish_tagged(channel: BlockingChannel, queue: str, tags: str, durable: bool = False) -> None:
    """One message per character: body '<n><tag>', tagged by the character ('.': none)."""
    for number, tag in enumerate(tags):
        headers = None if tag == "." else {"x-stream-filter-value": tag}
        properties = pika.BasicProperties(headers=headers, delivery_mode=2 if durable else 1)
        channel.basic_publish("", queue, b"%d%s" % (number, tag.encode()), properties)


class Collector:
    """A consumer that keeps what it receives (and acks it unless told not to)."""

    def __init__(
        self, channel: BlockingChannel, queue: str, ack: bool = True, **arguments: object
    ) -> None:
        self.bodies: list[bytes] = []
        self.tags: list[int] = []
        self.ack = ack
        self.channel = channel
        self.consumer_tag = channel.basic_consume(
            queue, self.on_message, arguments=arguments or None
        )

    def on_message(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self.bodies.append(body)
        self.tags.append(method.delivery_tag)
        if self.ack:
            channel.basic_ack(method.delivery_tag)


def test_two_filtered_consumers_get_exactly_theirs_and_the_rest_stays_counted(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_tagged(channel, queue, "abcab.ba")
    a = Collector(connection.channel(), queue, **{"x-stream-filter": "a"})
    b = Collector(connection.channel(), queue, **{"x-stream-filter": ["b", "x"]})
    wait_until(connection, lambda: len(a.bodies) == 3 and len(b.bodies) == 3, what="filtered")
    assert a.bodies == [b"0a", b"3a", b"7a"]
    assert b.bodies == [b"1b", b"4b", b"6b"]
    assert queue_depth(channel, queue) == (2, 2)  # "2c" and "5." wait, counted as ready
    rest = Collector(connection.channel(), queue)
    wait_until(connection, lambda: len(rest.bodies) == 2, what="the rest")
    assert rest.bodies == [b"2c", b"5."]
    assert queue_depth(channel, queue) == (0, 3)


def test_a_requeued_message_goes_back_to_a_consumer_that_matches(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_tagged(channel, queue, "bab")
    first_channel = connection.channel()
    first_channel.basic_qos(prefetch_count=1)
    first = Collector(first_channel, queue, ack=False, **{"x-stream-filter": "b"})
    wait_until(connection, lambda: first.bodies == [b"0b"], what="the first b")
    second_channel = connection.channel()
    second = Collector(second_channel, queue, **{"x-stream-filter": "b"})
    wait_until(connection, lambda: second.bodies == [b"2b"], what="the second b")
    first_channel.basic_cancel(first.consumer_tag)  # so the requeued b goes to the other
    first_channel.basic_nack(first.tags[0], requeue=True)
    wait_until(connection, lambda: len(second.bodies) == 2, what="the requeued b")
    assert second.bodies == [b"2b", b"0b"]
    assert queue_depth(channel, queue) == (1, 1)  # "1a": nobody wants it


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"x-stream-filter": 5}, "{unacceptable_type,signedint}"),
        ({"x-stream-filter": []}, "{empty_list}"),
        ({"x-stream-filter": "a", "x-stream-match-unfiltered": "no"}, None),
    ],
)
def test_bad_filter_arguments_close_the_channel_with_406(
    connection: BlockingConnection, queue: str, arguments: dict[str, object], reason: str | None
) -> None:
    key = "x-stream-filter" if reason is not None else "x-stream-match-unfiltered"
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_consume(queue, lambda *_: None, arguments=arguments)
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{queue}' in vhost '/': "
        f"{reason or '{unacceptable_type,longstr}'}"
    )


def test_a_deep_backlog_paged_to_disk_is_filtered(tmp_path: Path) -> None:
    limits = Limits(queue_memory_bytes_max=4096)  # a few messages in memory, the rest paged
    with running_node(tmp_path, limits=limits) as node, connect(url_of(node)) as connection:
        channel = connection.channel()
        channel.queue_declare("deep", durable=True)
        tags = "".join("a" if number % 5 == 0 else "b" for number in range(2000))
        publish_tagged(channel, "deep", tags, durable=True)
        assert queue_depth(channel, "deep") == (2000, 0)
        assert node.context.broker.vhost("/").queues["deep"].memory_bytes <= 8192  # paged out
        a_channel = connection.channel()
        a_channel.basic_qos(prefetch_count=25)
        a = Collector(a_channel, "deep", **{"x-stream-filter": "a"})
        wait_until(connection, lambda: len(a.bodies) == 400, timeout_s=20, what="every a")
        assert a.bodies == [b"%da" % number for number in range(0, 2000, 5)]
        assert queue_depth(channel, "deep") == (1600, 1)
        rest = Collector(connection.channel(), "deep")
        wait_until(connection, lambda: len(rest.bodies) == 1600, timeout_s=20, what="the rest")
        assert rest.bodies == [b"%db" % number for number in range(2000) if number % 5]
        assert queue_depth(channel, "deep") == (0, 2)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_aio_pika_consumers_with_filters(amqp_url: str, name: str, cleanup: Cleanup) -> None:
    cleanup.queue(name)
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name)
        for number, tag in enumerate("abab"):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    b"%d%s" % (number, tag.encode()), headers={"x-stream-filter-value": tag}
                ),
                routing_key=name,
            )
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        done = anyio.Event()

        def collector(tag: str) -> aio_pika.abc.ConsumerType:
            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                got[tag].append(message.body)
                await message.ack()
                if sum(map(len, got.values())) == 4:
                    done.set()

            return on_message

        await queue.consume(collector("b"), arguments={"x-stream-filter": "b"})
        await queue.consume(collector("a"), arguments={"x-stream-filter": ["a"]})
        with anyio.fail_after(WAIT_S):
            await done.wait()
        assert got == {"a": [b"0a", b"2a"], "b": [b"1b", b"3b"]}
