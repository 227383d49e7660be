"""Stream queues over AMQP 0-9-1 with pika against the real broker: declaring, offsets,
the x-stream-offset header, credit, broadcast, and RabbitMQ 3.10's refusals."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from amqpd.config.model import Management, Storage
from interop.system import free_port
from tests.integration.helpers import Cleanup, Deliveries, connect, wait_until
from tests.streams.conftest import STREAM
from tests.support.in_process import running_node, url_of


def publish(
    channel: BlockingChannel, queue: str, count: int, start: int = 0, **headers: object
) -> None:
    channel.confirm_delivery()
    for number in range(start, start + count):
        channel.basic_publish(
            "",
            queue,
            f"m{number}".encode(),
            pika.BasicProperties(headers=dict(headers) or None),
        )


def consume(
    connection: BlockingConnection,
    queue: str,
    expected: int,
    prefetch: int = 100,
    **arguments: object,
) -> Deliveries:
    """A new channel consuming `queue` with `arguments`, acking, until `expected` came."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    deliveries = Deliveries()

    def on_message(ch: BlockingChannel, method: object, properties: object, body: bytes) -> None:
        deliveries(ch, method, properties, body)  # type: ignore[arg-type]
        ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]

    channel.basic_consume(queue, on_message, arguments=dict(arguments))
    wait_until(connection, lambda: len(deliveries) >= expected, what=f"{expected} deliveries")
    return deliveries


def offsets(deliveries: Deliveries) -> list[int]:
    return [properties.headers["x-stream-offset"] for _, properties, _ in deliveries.items]


def settle(connection: BlockingConnection) -> None:
    """Let anything more the broker would send arrive (a round trip on a new channel)."""
    probe = connection.channel()
    probe.exchange_declare("amq.direct", passive=True)
    probe.close()


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({"durable": False}, "invalid property 'non-durable'"),
        ({"durable": True, "exclusive": True}, "invalid property 'exclusive-owner'"),
        ({"durable": True, "auto_delete": True}, "invalid property 'auto-delete'"),
    ],
)
def test_a_stream_is_durable_and_shared(
    connection: BlockingConnection, name: str, flags: dict[str, bool], reason: str
) -> None:
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare(name, arguments=STREAM, **flags)
    assert closed.value.reply_code == 406
    assert f"{reason} for queue '{name}' in vhost '/'" in closed.value.reply_text


@pytest.mark.parametrize(
    "argument",
    [
        ("x-message-ttl", 1000),
        ("x-max-length", 10),
        ("x-dead-letter-exchange", "dlx"),
        ("x-max-priority", 5),
        ("x-single-active-consumer", True),
        ("x-expires", 1000),
        ("x-overflow", "reject-publish"),
        ("x-delivery-limit", 3),
    ],
)
def test_classic_queue_arguments_are_refused_on_a_stream(
    connection: BlockingConnection, name: str, argument: tuple[str, object]
) -> None:
    key, value = argument
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        connection.channel().queue_declare(name, durable=True, arguments={**STREAM, key: value})
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/' "
        "of queue type rabbit_stream_queue"
    )


def test_a_malformed_max_age_is_refused_with_the_reason(
    connection: BlockingConnection, name: str
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        connection.channel().queue_declare(
            name, durable=True, arguments={**STREAM, "x-max-age": "3 days"}
        )
    assert closed.value.reply_code == 406
    assert "invalid arg 'x-max-age'" in closed.value.reply_text


def test_offsets_choose_where_a_consumer_starts(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 5)
    assert offsets(consume(connection, stream, 5, **{"x-stream-offset": "first"})) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert consume(connection, stream, 1, **{"x-stream-offset": "last"}).bodies == [b"m4"]
    assert offsets(consume(connection, stream, 3, **{"x-stream-offset": 2})) == [2, 3, 4]
    assert offsets(consume(connection, stream, 5, **{"x-stream-offset": -1})) == [0, 1, 2, 3, 4]
    hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    assert len(consume(connection, stream, 5, **{"x-stream-offset": hour_ago})) == 5
    assert len(consume(connection, stream, 5, **{"x-stream-offset": "1h"})) == 5
    # next (the default) and an offset past the end: only what comes later
    later = consume(connection, stream, 0)
    beyond = consume(connection, stream, 0, **{"x-stream-offset": 100})
    publish(channel, stream, 1, start=5)
    wait_until(connection, lambda: len(later) == 1 and len(beyond) == 1)
    assert offsets(later) == offsets(beyond) == [5]


def test_a_timestamp_in_the_future_waits_for_new_messages(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 3)
    tomorrow = datetime.datetime.now() + datetime.timedelta(days=1)
    waiting = consume(connection, stream, 0, **{"x-stream-offset": tomorrow})
    settle(connection)
    assert len(waiting) == 0


def test_deliveries_carry_their_offset_as_a_long_and_keep_their_headers(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 1, colour="red")
    channel.basic_publish("", stream, b"bare")  # no headers at all: the table is made
    deliveries = consume(connection, stream, 2, **{"x-stream-offset": "first"})
    first, second = (properties.headers for _, properties, _ in deliveries.items)
    assert first == {"colour": "red", "x-stream-offset": 0}
    assert second == {"x-stream-offset": 1}
    assert [method.redelivered for method in deliveries.methods] == [False, False]


def test_every_consumer_reads_every_message(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 20)
    readers = [consume(connection, stream, 20, **{"x-stream-offset": "first"}) for _ in range(3)]
    for reader in readers:
        assert reader.bodies == [f"m{n}".encode() for n in range(20)]


def test_an_ack_only_returns_credit(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 5)
    reader = connection.channel()
    reader.basic_qos(prefetch_count=2)
    deliveries = Deliveries()
    reader.basic_consume(stream, deliveries, arguments={"x-stream-offset": "first"})
    wait_until(connection, lambda: len(deliveries) == 2)
    settle(connection)
    assert len(deliveries) == 2  # no credit left
    reader.basic_ack(deliveries.methods[-1].delivery_tag, multiple=True)
    wait_until(connection, lambda: len(deliveries) == 4)
    # the messages stay for the next reader
    assert len(consume(connection, stream, 5, **{"x-stream-offset": "first"})) == 5


def test_a_stream_consumer_needs_a_prefetch(connection: BlockingConnection, stream: str) -> None:
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_consume(stream, Deliveries())
        connection.process_data_events(time_limit=1)
        channel.basic_qos(prefetch_count=1)
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (
        f"PRECONDITION_FAILED - consumer prefetch count is not set for "
        f"'queue '{stream}' in vhost '/''"
    )


@pytest.mark.parametrize(
    ("operation", "text"),
    [
        ("auto_ack", "automatic acknowledgement not supported by stream queues"),
        ("get", "basic.get not supported by stream queues"),
        ("purge", "queue.purge not supported by stream queues"),
        ("nack", "basic.nack and basic.reject not supported by stream queues"),
        ("reject", "basic.nack and basic.reject not supported by stream queues"),
    ],
)
def test_what_a_stream_does_not_do_closes_the_connection_with_540(
    amqp_url: str, stream: str, operation: str, text: str
) -> None:
    with connect(amqp_url) as connection:
        channel = connection.channel()
        publish(channel, stream, 1)
        channel.basic_qos(prefetch_count=10)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            if operation == "auto_ack":
                channel.basic_consume(stream, Deliveries(), auto_ack=True)
            elif operation == "get":
                channel.basic_get(stream)
            elif operation == "purge":
                channel.queue_purge(stream)
            else:
                deliveries = Deliveries()
                channel.basic_consume(stream, deliveries, arguments={"x-stream-offset": "first"})
                wait_until(connection, lambda: len(deliveries) == 1)
                tag = deliveries.methods[0].delivery_tag
                if operation == "nack":
                    channel.basic_nack(tag, requeue=True)
                else:
                    channel.basic_reject(tag, requeue=False)
            connection.process_data_events(time_limit=2)
            channel.exchange_declare("amq.direct", passive=True)
        assert closed.value.reply_code == 540
        assert closed.value.reply_text == (
            f"NOT_IMPLEMENTED - {text} queue '{stream}' in vhost '/'"
        )


@pytest.mark.parametrize("offset", ["yesterday", "1 h", True])
def test_a_bad_offset_is_refused(
    connection: BlockingConnection, stream: str, offset: object
) -> None:
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_consume(stream, Deliveries(), arguments={"x-stream-offset": offset})
    assert closed.value.reply_code == 406
    assert "invalid arg 'x-stream-offset'" in closed.value.reply_text


def test_redeclaring_compares_the_stream_arguments(
    connection: BlockingConnection, name: str, cleanup: Cleanup
) -> None:
    arguments = {**STREAM, "x-max-length-bytes": 10_000_000}
    connection.channel().queue_declare(cleanup.queue(name), durable=True, arguments=arguments)
    connection.channel().queue_declare(name, durable=True, arguments=arguments)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        connection.channel().queue_declare(name, durable=True)
    assert closed.value.reply_code == 406
    assert "inequivalent arg 'x-max-length-bytes'" in closed.value.reply_text
    ok = connection.channel().queue_declare(name, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 0)  # as RabbitMQ reports a stream


def test_a_stream_outlives_its_consumers_and_a_restart(broker_process: object) -> None:
    from tests.support.broker_process import BrokerProcess

    assert isinstance(broker_process, BrokerProcess)
    broker = broker_process.start()
    with connect(broker.url) as connection:
        channel = connection.channel()
        channel.queue_declare("events", durable=True, arguments=STREAM)
        publish(channel, "events", 50)
    broker.restart(how=9)
    with connect(broker.url) as connection:
        deliveries = consume(connection, "events", 50, **{"x-stream-offset": "first"})
        assert offsets(deliveries) == list(range(50))
        publish(connection.channel(), "events", 1, start=50)
        assert offsets(consume(connection, "events", 1, **{"x-stream-offset": "last"})) == [50]


def _first_offset(base: str, queue: str) -> int:
    shown = httpx.get(f"{base}/api/queues/%2F/{queue}", auth=("guest", "guest")).json()
    return int(shown["first_offset"])


def _wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)  # polling the API with a deadline; the broker's own timer acts


def test_retention_drops_whole_segments_oldest_first(tmp_path: Path) -> None:
    with running_node(
        tmp_path,
        storage=Storage(segment_bytes_max=65_536),
        management=Management(port=free_port()),
    ) as node:
        address = node.management_address
        assert address is not None
        base = f"http://{address[0]}:{address[1]}"
        with connect(url_of(node)) as connection:
            channel = connection.channel()
            channel.queue_declare(
                "by-size", durable=True, arguments={**STREAM, "x-max-length-bytes": 100_000}
            )
            channel.queue_declare("by-age", durable=True, arguments={**STREAM, "x-max-age": "1s"})
            channel.confirm_delivery()
            for number in range(120):  # about 250 KB: four segments of 64 KiB
                for queue in ("by-size", "by-age"):
                    channel.basic_publish("", queue, b"x" * 2000 + str(number).encode())
            _wait_for(lambda: _first_offset(base, "by-size") > 0)
            first = _first_offset(base, "by-size")
            # whole segments went, the newest ones stay, under the limit plus one segment
            assert 0 < first < 120
            assert (120 - first) * 2000 <= 100_000 + 65_536
            kept = consume(connection, "by-size", 120 - first, **{"x-stream-offset": "first"})
            assert offsets(kept) == list(range(first, 120))
            # by age: everything but the newest segment goes once a second has passed
            _wait_for(lambda: _first_offset(base, "by-age") > 60)
            assert _first_offset(base, "by-age") < 120
