"""The management API's view of a partitioned queue: its arguments as declared and its
figures summed over the partitions."""

from __future__ import annotations

import pika

from amqpd.node import Node
from tests.management.test_api import Client, amqp, http, node

__all__ = ["http", "node"]  # the fixtures


def test_a_partitioned_queue_shows_its_arguments_and_figures_over_all_partitions(
    node: Node, http: Client
) -> None:
    connection = amqp(node)
    channel = connection.channel()
    channel.queue_declare("keyed", durable=True, arguments={"x-partitions": 4})
    for number in range(8):
        channel.basic_publish(
            "",
            "keyed",
            f"m{number}".encode(),
            pika.BasicProperties(headers={"x-partition-key": f"key-{number}"}),
        )
    got = channel.basic_get("keyed")
    assert got[0] is not None
    queue = http().get("/api/queues/%2F/keyed").json()
    assert queue["arguments"] == {"x-partitions": 4}
    assert (queue["messages"], queue["messages_ready"], queue["messages_unacknowledged"]) == (
        8,
        7,
        1,
    )
    connection.close()
