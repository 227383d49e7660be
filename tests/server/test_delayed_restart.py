"""Held delayed messages across a restart and a kill -9 of the real process: persistent
ones on a durable delayed exchange come back and go out at their time, or at once when
their time passed while the broker was down; transient ones do not come back."""

from __future__ import annotations

import signal
import time

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.server.test_durability import broker, connect
from tests.support.broker_process import BrokerProcess
from tests.support.crash import close_quietly

__all__ = ["broker"]  # the fixture
pytestmark = pytest.mark.timeout(60)


def declare(
    broker: BrokerProcess,
) -> tuple[BlockingConnection, BlockingChannel]:
    connection = connect(broker)
    channel = connection.channel()
    channel.exchange_declare(
        "dx", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"}
    )
    channel.queue_declare("q", durable=True)
    channel.queue_bind("q", "dx", "k")
    return connection, channel


def publish(
    channel: BlockingChannel,
    body: bytes,
    delay_ms: int,
    persistent: bool = True,
) -> None:
    channel.basic_publish(
        "dx",
        "k",
        body,
        pika.BasicProperties(headers={"x-delay": delay_ms}, delivery_mode=2 if persistent else 1),
    )


def receive(
    broker: BrokerProcess, count: int, timeout_s: float = 10.0
) -> list[tuple[float, bytes]]:
    connection = BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        got: list[tuple[float, bytes]] = []
        channel.basic_consume(
            "q", lambda _c, _m, _p, body: got.append((time.time(), body)), auto_ack=True
        )
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            assert time.monotonic() < deadline, f"only {got} of {count}:\n{broker.log}"
            connection.process_data_events(time_limit=0.02)
        # Nothing more than expected arrives.
        connection.process_data_events(time_limit=0.2)
        return got
    finally:
        close_quietly(connection)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "kill-9"])
def test_held_messages_survive_and_go_out_at_their_time(
    broker: BrokerProcess, how: signal.Signals
) -> None:
    broker.start()
    connection, channel = declare(broker)
    channel.confirm_delivery()
    published_s = time.time()
    publish(channel, b"late", 3_000)
    publish(channel, b"early", 1_500)
    publish(channel, b"transient", 1_500, persistent=False)
    if how is signal.SIGTERM:
        close_quietly(connection)
    assert broker.restart(how) in (None, 0)
    broker.wait_for(r"delayed exchange 'dx' in vhost '/': 2 message\(s\) held")
    got = receive(broker, 2)
    assert [body for _, body in got] == [b"early", b"late"]
    for (arrived_s, _), delay_s in zip(got, (1.5, 3.0), strict=True):
        assert arrived_s - published_s >= delay_s


def test_messages_whose_time_passed_while_down_go_out_at_once_in_publish_order(
    broker: BrokerProcess,
) -> None:
    broker.start()
    _, channel = declare(broker)
    channel.confirm_delivery()
    for number, delay_ms in enumerate((900, 300, 600)):
        publish(channel, b"%d" % number, delay_ms)
    publish(channel, b"later", 60_000)
    due_s = time.time() + 0.9
    broker.kill()
    while time.time() < due_s:  # downtime past every short delay (a wall-clock fact)
        time.sleep(0.05)
    broker.start()
    broker.wait_for(r"delayed exchange 'dx' in vhost '/': 4 message\(s\) held, the next due now")
    assert [body for _, body in receive(broker, 3)] == [b"0", b"1", b"2"]
