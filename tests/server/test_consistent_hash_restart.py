"""A durable consistent-hash exchange across a restart of the real process: its bindings
come back from the definitions journal and rebuild the same ring, so every key reaches
the queue it reached before (as RabbitMQ 3.10 keeps its ring), bindings to a transient
queue excepted (gone, and the ring closed over them)."""

from __future__ import annotations

import signal

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import drain, round_trip
from tests.server.test_durability import broker, connect
from tests.support.broker_process import BrokerProcess

__all__ = ["broker"]  # the fixture
pytestmark = pytest.mark.timeout(60)

QUEUES = ("qc", "qa", "qb", "qd")
KEYS = [f"key-{number}" for number in range(300)]


def placement(channel: BlockingChannel) -> dict[str, str]:
    """Which queue each key reaches now."""
    channel.confirm_delivery()
    for key in KEYS:
        channel.basic_publish("chx", key, key.encode())
    round_trip(channel)
    return {body.decode(): queue for queue in QUEUES for body in drain(channel, queue)}


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "kill-9"])
def test_the_ring_is_the_same_after_a_restart(broker: BrokerProcess, how: int) -> None:
    broker.start()
    channel = connect(broker).channel()
    channel.exchange_declare("chx", "x-consistent-hash", durable=True)
    # Bound out of key order, with a second key to qa (no buckets), a transient queue in
    # the middle, and qd unbound and bound again (now at the end of the ring).
    for queue, weight in (("qc", "1"), ("qa", "3"), ("qd", "2"), ("qb", "2"), ("qa", "5")):
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, "chx", weight)
    channel.queue_declare("transient", durable=False)
    channel.queue_bind("transient", "chx", "4")
    channel.queue_unbind("qd", "chx", "2")
    channel.queue_bind("qd", "chx", "2")
    channel.queue_delete("transient")  # as a restart would; the ring closes over it
    before = placement(channel)
    assert set(before) == set(KEYS)
    assert set(before.values()) == set(QUEUES)

    assert broker.restart(how) in (None, 0)
    channel = connect(broker).channel()
    after = placement(channel)
    assert after == before
