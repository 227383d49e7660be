"""Replay of an ordinary queue (x-replay-max-age) with pika against the real broker: what
consumers took stays readable from a point in time, without disturbing them."""

from __future__ import annotations

import datetime

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import Cleanup, Deliveries, connect, drain, wait_until
from tests.streams.test_streams import consume, offsets, publish, settle
from tests.support.broker_process import BrokerProcess

REPLAY = {"x-replay-max-age": "1h"}


@pytest.fixture
def replayed(channel: BlockingChannel, name: str, cleanup: Cleanup) -> str:
    channel.queue_declare(cleanup.queue(name), durable=True, arguments=REPLAY)
    return name


def test_consumed_messages_can_be_read_again_from_a_point_in_time(
    connection: BlockingConnection, channel: BlockingChannel, replayed: str
) -> None:
    publish(channel, replayed, 10)
    assert drain(channel, replayed) == [f"m{n}".encode() for n in range(10)]  # all consumed
    assert channel.queue_declare(replayed, passive=True).method.message_count == 0
    hour_ago = datetime.datetime.now() - datetime.timedelta(minutes=5)
    again = consume(connection, replayed, 10, **{"x-stream-offset": hour_ago})
    assert again.bodies == [f"m{n}".encode() for n in range(10)]
    assert offsets(again) == list(range(10))
    # replaying took nothing: the queue is still empty, and new messages reach both kinds
    publish(channel, replayed, 1, start=10)
    wait_until(connection, lambda: len(again) == 11)
    assert drain(channel, replayed) == [b"m10"]


def test_replay_sees_ready_and_transient_messages_and_leaves_them(
    connection: BlockingConnection, channel: BlockingChannel, replayed: str
) -> None:
    channel.confirm_delivery()
    channel.basic_publish("", replayed, b"transient", pika.BasicProperties(delivery_mode=1))
    channel.basic_publish("", replayed, b"persistent", pika.BasicProperties(delivery_mode=2))
    replay = consume(connection, replayed, 2, **{"x-stream-offset": "first"})
    assert replay.bodies == [b"transient", b"persistent"]
    settle(connection)
    assert drain(channel, replayed) == [b"transient", b"persistent"]


def test_an_ordinary_consumer_of_a_replay_queue_consumes_as_usual(
    connection: BlockingConnection, channel: BlockingChannel, replayed: str
) -> None:
    publish(channel, replayed, 5)
    taken = consume(connection, replayed, 5)  # no x-stream-offset: it removes
    settle(connection)
    assert len(taken) == 5
    assert channel.queue_declare(replayed, passive=True).method.message_count == 0
    replay = consume(connection, replayed, 5, **{"x-stream-offset": "first"})
    assert replay.bodies == taken.bodies


def test_replay_deliveries_return_credit_whatever_the_answer(
    connection: BlockingConnection, channel: BlockingChannel, replayed: str
) -> None:
    publish(channel, replayed, 3)
    reader = connection.channel()
    reader.basic_qos(prefetch_count=1)
    deliveries = Deliveries()
    reader.basic_consume(replayed, deliveries, arguments={"x-stream-offset": "first"})
    wait_until(connection, lambda: len(deliveries) == 1)
    reader.basic_nack(deliveries.methods[0].delivery_tag, requeue=True)
    wait_until(connection, lambda: len(deliveries) == 2)
    reader.basic_reject(deliveries.methods[1].delivery_tag, requeue=False)
    wait_until(connection, lambda: len(deliveries) == 3)
    assert deliveries.bodies == [b"m0", b"m1", b"m2"]  # nothing came back, nothing was lost
    assert channel.queue_declare(replayed, passive=True).method.message_count == 3


@pytest.mark.parametrize(
    ("flags", "arguments", "reason"),
    [
        ({"durable": False}, {}, "only a durable, non-exclusive queue"),
        ({"durable": True, "exclusive": True}, {}, "only a durable, non-exclusive queue"),
        ({"durable": True}, {"x-max-priority": 3}, "it excludes 'x-max-priority'"),
        ({"durable": True}, {"x-replay-max-age": "soon"}, "invalid arg 'x-replay-max-age'"),
    ],
)
def test_replay_needs_a_durable_queue_of_one_lane(
    connection: BlockingConnection,
    name: str,
    flags: dict[str, bool],
    arguments: dict[str, object],
    reason: str,
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        connection.channel().queue_declare(name, arguments={**REPLAY, **arguments}, **flags)
    assert closed.value.reply_code == 406
    assert reason in closed.value.reply_text


def test_consumed_messages_stay_replayable_after_a_restart(broker_process: BrokerProcess) -> None:
    broker = broker_process.start()
    with connect(broker.url) as connection:
        channel = connection.channel()
        channel.queue_declare("audit", durable=True, arguments=REPLAY)
        publish(channel, "audit", 20)
        assert len(drain(channel, "audit")) == 20
    broker.restart(how=9)
    with connect(broker.url) as connection:
        channel = connection.channel()
        assert channel.queue_declare("audit", passive=True).method.message_count == 0
        replay = consume(connection, "audit", 20, **{"x-stream-offset": "first"})
        assert replay.bodies == [f"m{n}".encode() for n in range(20)]
