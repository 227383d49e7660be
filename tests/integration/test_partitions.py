"""Partitioned queues (x-partitions) as pika and aio-pika users see them: whole keys in
order per consumer, hand-over only once the old consumer settled, argument errors. An
amqpd extension (RabbitMQ 3.10 would ignore the argument), so these run against amqpd only.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict

import aio_pika
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import Cleanup, queue_depth, round_trip, wait_until

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(bool(os.environ.get("AMQP_URL")), reason="an amqpd extension"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Received = list[tuple[str, int, bool]]  # (key, sequence, redelivered)


def publish_keyed(channel: BlockingChannel, queue: str, key: str, sequence: int) -> None:
    channel.basic_publish(
        "",
        queue,
        f"{key}:{sequence}".encode(),
        pika.BasicProperties(headers={"x-partition-key": key}),
    )


def collect(into: Received, ack: bool = True):  # type: ignore[no-untyped-def]
    def on_message(
        ch: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        _: pika.BasicProperties,
        body: bytes,
    ) -> None:
        key, sequence = body.decode().split(":")
        into.append((key, int(sequence), bool(method.redelivered)))
        if ack:
            ch.basic_ack(method.delivery_tag)

    return on_message


def test_each_consumer_receives_whole_keys_in_order(
    connection: BlockingConnection, name: str, cleanup: Cleanup
) -> None:
    publisher = connection.channel()
    publisher.queue_declare(cleanup.queue(name), arguments={"x-partitions": 8})
    received: list[Received] = [[], [], []]
    for into in received:
        consumer = connection.channel()
        consumer.basic_qos(prefetch_count=3)
        consumer.basic_consume(name, collect(into))
    keys = [f"account-{index}" for index in range(12)]
    for sequence in range(15):
        for key in keys:
            publish_keyed(publisher, name, key, sequence)
    wait_until(connection, lambda: sum(map(len, received)) == 180, what="180 deliveries")
    owner: dict[str, int] = {}
    for index, into in enumerate(received):
        per_key: dict[str, list[int]] = defaultdict(list)
        for key, sequence, _ in into:
            assert owner.setdefault(key, index) == index, f"{key} went to two consumers"
            per_key[key].append(sequence)
        assert all(sequences == list(range(15)) for sequences in per_key.values())
    assert len(set(owner.values())) > 1  # the keys were spread, not all on one consumer


def test_a_cancelled_consumers_partition_moves_only_once_its_messages_are_settled(
    connection: BlockingConnection, name: str, cleanup: Cleanup
) -> None:
    first = connection.channel()
    first.queue_declare(cleanup.queue(name), arguments={"x-partitions": 1})
    first.basic_qos(prefetch_count=2)
    held: list[pika.spec.Basic.Deliver] = []
    first.basic_consume(name, lambda _c, method, _p, _b: held.append(method), consumer_tag="first")
    second = connection.channel()
    moved: Received = []
    second.basic_consume(name, collect(moved))
    for sequence in range(5):
        publish_keyed(first, name, "k", sequence)
    wait_until(connection, lambda: len(held) == 2, what="two deliveries to the first")
    first.basic_cancel("first")
    # Requests on one connection are handled in order: by this declare-ok the cancel was.
    assert queue_depth(second, name) == (3, 1)
    first.basic_nack(held[1].delivery_tag, requeue=True)  # k:1 back to its place
    assert queue_depth(second, name) == (4, 1) and moved == []  # k:0 is still held
    first.basic_ack(held[0].delivery_tag)
    wait_until(connection, lambda: len(moved) == 4, what="the rest to the second")
    assert moved == [("k", 1, True), ("k", 2, False), ("k", 3, False), ("k", 4, False)]


def test_a_closed_channels_messages_go_first_to_the_next_owner(
    connection: BlockingConnection, name: str, cleanup: Cleanup
) -> None:
    first = connection.channel()
    first.queue_declare(cleanup.queue(name), arguments={"x-partitions": 4})
    first.basic_qos(prefetch_count=3)
    unacked: Received = []
    first.basic_consume(name, collect(unacked, ack=False))
    for sequence in range(6):
        publish_keyed(first, name, "only-key", sequence)
    wait_until(connection, lambda: len(unacked) == 3, what="three deliveries")
    second = connection.channel()
    moved: Received = []
    second.basic_consume(name, collect(moved))
    round_trip(second)
    first.close()
    wait_until(connection, lambda: len(moved) == 6, what="all six to the second")
    assert [(key, sequence) for key, sequence, _ in moved] == [
        ("only-key", sequence) for sequence in range(6)
    ]
    assert [redelivered for _, _, redelivered in moved] == [True] * 3 + [False] * 3


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("4", '"expected integer, got longstr"'),
        (0, "{value_zero,0}"),
        (1025, "{max_value_exceeded,1025}"),
    ],
)
def test_a_bad_partition_count_is_406(
    connection: BlockingConnection, name: str, value: object, reason: str
) -> None:
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        channel.queue_declare(name, arguments={"x-partitions": value})
    assert raised.value.reply_code == 406
    assert raised.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-partitions' for queue '{name}' in vhost '/': "
        f"{reason}"
    )


def test_partitions_with_priorities_and_a_different_count_on_redeclare_are_406(
    connection: BlockingConnection, name: str, cleanup: Cleanup
) -> None:
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        channel.queue_declare(name, arguments={"x-partitions": 4, "x-max-priority": 5})
    assert raised.value.reply_code == 406
    assert "x_partitions_and_x_max_priority_exclude_each_other" in raised.value.reply_text
    channel = connection.channel()
    channel.queue_declare(cleanup.queue(name), arguments={"x-partitions": 4})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        channel.queue_declare(name, arguments={"x-partitions": 2})
    assert raised.value.reply_code == 406
    assert raised.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-partitions' for queue '{name}' in vhost "
        "'/': received '2' but current is '4'"
    )


@pytest.mark.anyio
async def test_aio_pika_consumers_get_whole_keys_in_order(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, auto_delete=True, arguments={"x-partitions": 6})
        received: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}
        done = asyncio.Event()

        def consumer_for(tag: str):  # type: ignore[no-untyped-def]
            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    key, sequence = message.body.decode().split(":")
                    received[tag].append((key, int(sequence)))
                    if sum(map(len, received.values())) == 100:
                        done.set()

            return on_message

        for tag in received:
            own = await connection.channel()
            await own.set_qos(prefetch_count=4)
            own_queue = await own.get_queue(name)
            await own_queue.consume(consumer_for(tag), consumer_tag=tag)
        for sequence in range(10):
            for index in range(10):
                key = f"device-{index}"
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        f"{key}:{sequence}".encode(), headers={"x-partition-key": key}
                    ),
                    routing_key=queue.name,
                )
        await asyncio.wait_for(done.wait(), 10)
        keys_of = {tag: {key for key, _ in got} for tag, got in received.items()}
        assert not keys_of["a"] & keys_of["b"]
        for got in received.values():
            for key in {key for key, _ in got}:
                assert [sequence for each, sequence in got if each == key] == list(range(10))
