"""What survives a restart and a kill -9, seen through a real client and the real process."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.support.broker_process import BrokerProcess
from tests.support.crash import close_quietly
from tests.support.crash import run as crash_run

PERSISTENT = pika.BasicProperties(delivery_mode=2)


_connections: list[pika.BlockingConnection] = []


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path / "data")
    try:
        yield process
    finally:
        for connection in _connections:
            close_quietly(connection)
        _connections.clear()
        process.kill()


def connect(broker: BrokerProcess) -> pika.BlockingConnection:
    """A connection the fixture closes, even if the broker died under it."""
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    _connections.append(connection)
    return connection


def restart(broker: BrokerProcess, how: signal.Signals) -> None:
    exit_code = broker.restart(how)
    assert exit_code in (None, 0), broker.log


def drain(
    channel: pika.adapters.blocking_connection.BlockingChannel, queue: str
) -> list[tuple[bytes, bool]]:
    got = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((body, method.redelivered))


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "kill-9"])
def test_durable_state_survives_and_transient_state_does_not(
    broker: BrokerProcess, how: signal.Signals
) -> None:
    broker.start()
    connection = connect(broker)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare("durable-x", "topic", durable=True)
    channel.exchange_declare("transient-x", "fanout")
    channel.queue_declare("durable-q", durable=True, arguments={"x-queue-mode": "lazy"})
    channel.queue_declare("transient-q")
    channel.queue_bind("durable-q", "durable-x", "orders.#")
    for number in range(100):
        channel.basic_publish("durable-x", "orders.new", b"p%d" % number, PERSISTENT)
    channel.basic_publish("durable-x", "orders.new", b"transient")  # not delivery_mode 2
    channel.basic_publish("", "transient-q", b"gone", PERSISTENT)
    if how is signal.SIGTERM:
        connection.close()
    restart(broker, how)

    connection = connect(broker)
    channel = connection.channel()
    assert channel.queue_declare("durable-q", passive=True).method.message_count == 100
    channel.exchange_declare("durable-x", passive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
        channel.queue_declare("transient-q", passive=True)
    assert missing.value.reply_code == 404
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.exchange_declare("transient-x", passive=True)
    channel = connection.channel()
    # The binding came back too: a new message is routed by it.
    channel.basic_publish("durable-x", "orders.later", b"routed", PERSISTENT)
    bodies = [body for body, _ in drain(channel, "durable-q")]
    assert bodies == [b"p%d" % number for number in range(100)] + [b"routed"]
    assert channel.queue_declare("durable-q", arguments={"x-queue-mode": "lazy"}, durable=True)


def test_delivered_but_unacked_messages_come_back_redelivered_after_kill_9(
    broker: BrokerProcess,
) -> None:
    broker.start()
    connection = connect(broker)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("work", durable=True)
    for number in range(5):
        channel.basic_publish("", "work", b"%d" % number, PERSISTENT)
    first = channel.basic_get("work")  # delivered, never acked
    second = channel.basic_get("work")
    assert first[0] is not None and second[0] is not None
    channel.basic_ack(second[0].delivery_tag)
    # Any reply after the ack is sent only once the store has handed the ack to the OS.
    channel.queue_declare("work", passive=True)
    restart(broker, signal.SIGKILL)

    channel = connect(broker).channel()
    assert drain(channel, "work") == [
        (b"0", True),  # delivered before the crash
        (b"2", False),
        (b"3", False),
        (b"4", False),
    ]


def test_exclusive_and_auto_delete_queues_after_restart(broker: BrokerProcess) -> None:
    broker.start()
    connection = connect(broker)
    channel = connection.channel()
    channel.queue_declare("exclusive", durable=True, exclusive=True)
    channel.queue_declare("auto", durable=True, auto_delete=True)
    restart(broker, signal.SIGKILL)
    channel = connect(broker).channel()
    assert channel.queue_declare("auto", passive=True).method.queue == "auto"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare("exclusive", passive=True)


def test_a_deleted_durable_queue_stays_deleted(broker: BrokerProcess) -> None:
    broker.start()
    channel = connect(broker).channel()
    channel.confirm_delivery()
    channel.queue_declare("temporary", durable=True)
    channel.basic_publish("", "temporary", b"x", PERSISTENT)
    channel.queue_delete("temporary")
    channel.queue_declare("temporary", durable=True)  # a new queue of the same name
    restart(broker, signal.SIGKILL)
    channel = connect(broker).channel()
    assert channel.queue_declare("temporary", passive=True).method.message_count == 0


@pytest.mark.parametrize("fsync", ["always", "never", "20"])
def test_no_confirmed_message_is_lost_across_kill_9(tmp_path: Path, fsync: str) -> None:
    config = tmp_path / "amqpd.yaml"
    config.write_text(f"listeners: [{{bind: 127.0.0.1, port: 0}}]\nstorage: {{fsync: {fsync}}}\n")
    ledger = crash_run(3, seed=11, data_dir=tmp_path / "data", extra_args=["--config", str(config)])
    assert ledger.problems() == []
    assert len(ledger.confirmed) > 30  # the cycles really published
    assert ledger.received


def test_dead_letter_headers_and_deadlines_survive_kill_9(broker: BrokerProcess) -> None:
    broker.start()
    connection = connect(broker)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("dlq", durable=True)
    dead_letter = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
    channel.queue_declare("rejects", durable=True, arguments=dead_letter)
    channel.queue_declare("expires", durable=True, arguments={**dead_letter, "x-message-ttl": 1500})
    channel.basic_publish("", "rejects", b"rejected", PERSISTENT)
    channel.basic_publish("", "expires", b"expiring", PERSISTENT)
    method, _, _ = channel.basic_get("rejects")
    assert method is not None
    channel.basic_reject(method.delivery_tag, requeue=False)
    # Confirmed after the reject: both the copy and the reject are on disk by now.
    channel.basic_publish("", "dlq", b"marker", PERSISTENT)
    restart(broker, signal.SIGKILL)

    channel = connect(broker).channel()
    method, properties, body = channel.basic_get("dlq", auto_ack=True)
    assert (body, properties.headers["x-death"][0]["reason"]) == (b"rejected", "rejected")
    assert properties.headers["x-first-death-queue"] == "rejects"
    assert channel.queue_declare("rejects", passive=True).method.message_count == 0
    # The deadline counts from the first publish, across the restart.
    deadline = time.monotonic() + 10
    while True:
        method, properties, body = channel.basic_get("dlq", auto_ack=True)
        if body == b"expiring":
            break
        assert time.monotonic() < deadline, "the TTL was not applied after the restart"
        channel.connection.process_data_events(time_limit=0.05)
    assert properties.headers["x-death"][0]["reason"] == "expired"
    assert channel.queue_declare("expires", passive=True).method.message_count == 0


def test_a_priority_queue_keeps_its_order_across_kill_9(broker: BrokerProcess) -> None:
    broker.start()
    channel = connect(broker).channel()
    channel.confirm_delivery()
    channel.queue_declare("prio", durable=True, arguments={"x-max-priority": 5})
    for index, priority in enumerate([0, 5, 2, 9, 2, 0]):
        properties = pika.BasicProperties(delivery_mode=2, priority=priority)
        channel.basic_publish("", "prio", f"{index}:{priority}".encode(), properties)
    restart(broker, signal.SIGKILL)

    channel = connect(broker).channel()
    assert [body for body, _ in drain(channel, "prio")] == [
        b"1:5",
        b"3:9",
        b"2:2",
        b"4:2",
        b"0:0",
        b"5:0",
    ]


def test_delivery_counts_survive_kill_9(broker: BrokerProcess) -> None:
    broker.start()
    channel = connect(broker).channel()
    channel.confirm_delivery()
    channel.queue_declare("limited", durable=True, arguments={"x-delivery-limit": 5})
    channel.basic_publish("", "limited", b"m", PERSISTENT)
    for _ in range(2):
        method, _, _ = channel.basic_get("limited")
        assert method is not None
        channel.basic_nack(method.delivery_tag, requeue=True)
    method, properties, _ = channel.basic_get("limited")  # the third delivery, held
    assert method is not None and properties.headers["x-delivery-count"] == 2
    restart(broker, signal.SIGKILL)

    channel = connect(broker).channel()
    method, properties, _ = channel.basic_get("limited")
    # The crash returned it a third time, as a closed channel would have.
    assert method is not None and method.redelivered
    assert properties.headers["x-delivery-count"] == 3


def test_a_restart_releases_a_waiting_retry_at_once_with_its_count(broker: BrokerProcess) -> None:
    broker.start()
    channel = connect(broker).channel()
    channel.confirm_delivery()
    channel.queue_declare("retrying", durable=True, arguments={"x-retry-delays": [600_000]})
    channel.basic_publish("", "retrying", b"m", PERSISTENT)
    method, _, _ = channel.basic_get("retrying")
    assert method is not None
    channel.basic_nack(method.delivery_tag, requeue=True)  # waits ten minutes
    assert channel.queue_declare("retrying", passive=True).method.message_count == 0
    restart(broker, signal.SIGKILL)

    channel = connect(broker).channel()
    method, properties, _ = channel.basic_get("retrying")
    assert method is not None and method.redelivered
    assert properties.headers["x-delivery-count"] == 1
