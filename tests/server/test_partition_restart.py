"""A durable partitioned queue across a restart and a kill -9 of the real process: its
persistent messages come back in their partitions, in order per key, and a key publishes
into the same partition as before (the hash is stable across runs)."""

from __future__ import annotations

import signal
from collections import defaultdict

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.server.test_durability import broker, connect, restart
from tests.support.broker_process import BrokerProcess

__all__ = ["broker"]  # the fixture
pytestmark = pytest.mark.timeout(60)

KEYS = [f"tenant-{index}" for index in range(16)]


def publish(channel: BlockingChannel, sequence: int) -> None:
    for key in KEYS:
        channel.basic_publish(
            "",
            "orders",
            f"{key}:{sequence}".encode(),
            pika.BasicProperties(delivery_mode=2, headers={"x-partition-key": key}),
        )


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "kill-9"])
def test_partitions_survive_a_restart_with_order_per_key(
    broker: BrokerProcess, how: signal.Signals
) -> None:
    broker.start()
    channel = connect(broker).channel()
    channel.confirm_delivery()
    channel.queue_declare("orders", durable=True, arguments={"x-partitions": 4})
    for sequence in range(3):
        publish(channel, sequence)
    restart(broker, how)

    connection = connect(broker)
    channel = connection.channel()
    channel.confirm_delivery()
    ok = channel.queue_declare("orders", durable=True, arguments={"x-partitions": 4})
    assert ok.method.message_count == 3 * len(KEYS)
    publish(channel, 3)  # after the restart: each key must join its old partition
    # One connection: callbacks run in the order the broker sent the deliveries.
    received: list[tuple[int, str, int]] = []
    for index in range(2):
        consumer = connection.channel()
        consumer.basic_qos(prefetch_count=5)

        def on_message(
            ch: BlockingChannel,
            method: pika.spec.Basic.Deliver,
            _: pika.BasicProperties,
            body: bytes,
            index: int = index,
        ) -> None:
            key, sequence = body.decode().split(":")
            received.append((index, key, int(sequence)))
            ch.basic_ack(method.delivery_tag)

        consumer.basic_consume("orders", on_message)
    total = 4 * len(KEYS)
    for _ in range(500):
        if len(received) == total:
            break
        connection.process_data_events(time_limit=0.02)
    assert len(received) == total, broker.log
    # A key that landed in another partition after the restart would overtake its
    # older messages (they wait in the old one behind other keys).
    per_key: dict[str, list[int]] = defaultdict(list)
    for _, key, sequence in received:
        per_key[key].append(sequence)
    assert per_key == {key: [0, 1, 2, 3] for key in KEYS}, received
    assert {index for index, _, _ in received} == {0, 1}
