"""basic.* with pika: publish, consume, get, acks, requeue order, QoS, recover, cancel.

Expected behaviour (order, redelivered flags, reply codes and texts) is RabbitMQ 3.10's,
checked by running these tests against it.
"""

from __future__ import annotations

import datetime
import decimal

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import (
    Cleanup,
    Deliveries,
    connect,
    drain,
    queue_depth,
    raw_rpc,
    round_trip,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)


def publish_numbers(channel: BlockingChannel, queue: str, count: int) -> None:
    """Publish bodies b"1" .. b"count" to `queue` and wait until the broker has them."""
    for number in range(1, count + 1):
        channel.basic_publish("", queue, str(number).encode())
    round_trip(channel)


def get(channel: BlockingChannel, queue: str) -> tuple[pika.spec.Basic.GetOk, bytes]:
    method, _, body = channel.basic_get(queue)
    assert method is not None, f"queue {queue} was empty"
    return method, body


def login_user(amqp_url: str) -> str:
    credentials = pika.URLParameters(amqp_url).credentials
    assert isinstance(credentials, pika.PlainCredentials)
    return credentials.username


# --- publish and deliver -------------------------------------------------------------------


def test_properties_round_trip_exactly(
    amqp_url: str, connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    headers = {
        "string": "héllo",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "bool": True,
        "decimal": decimal.Decimal("3.14"),
        "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "bytes": b"\x00\xffraw",
        "none": None,
        "list": [1, "two", [3], {"four": 4}],
        "nested": {"inner": {"deep": "value", "n": 1}, "empty": {}},
    }
    properties = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-1",
        reply_to="reply.queue",
        message_id="msg-1",
        timestamp=1_700_000_000,
        type="order.created",
        user_id=login_user(amqp_url),
        app_id="integration-tests",
    )
    body = '{"ok": true, "text": "ünïcode"}'.encode()
    channel.basic_publish("", queue, body, properties)
    deliveries = Deliveries()
    channel.basic_consume(queue, deliveries, auto_ack=True)
    wait_until(connection, lambda: len(deliveries) == 1, what="the delivery")
    method, got, got_body = deliveries.items[0]
    assert got_body == body
    assert (method.exchange, method.routing_key, method.redelivered) == ("", queue, False)
    assert got.content_type == "application/json"
    assert got.content_encoding == "utf-8"
    assert got.headers == headers
    assert got.delivery_mode == 2
    assert got.priority == 7
    assert got.correlation_id == "corr-1"
    assert got.reply_to == "reply.queue"
    assert got.expiration is None
    assert got.message_id == "msg-1"
    assert got.timestamp == 1_700_000_000
    assert got.type == "order.created"
    assert got.user_id == login_user(amqp_url)
    assert got.app_id == "integration-tests"
    assert got.cluster_id is None


def test_absent_properties_stay_absent(channel: BlockingChannel, queue: str) -> None:
    channel.basic_publish("", queue, b"bare")
    _, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"bare"
    assert properties.headers is None
    assert properties.content_type is None
    assert properties.delivery_mode is None
    assert properties.priority is None
    assert properties.timestamp is None


def test_large_body_spans_many_frames(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, 8 body frames at frame_max 131072
    channel.basic_publish("", queue, body)
    channel.basic_publish("", queue, b"after")
    deliveries = Deliveries()
    channel.basic_consume(queue, deliveries, auto_ack=True)
    wait_until(connection, lambda: len(deliveries) == 2, what="both deliveries")
    assert len(deliveries.bodies[0]) == len(body)
    assert deliveries.bodies[0] == body
    assert deliveries.bodies[1] == b"after"
    channel.basic_publish("", queue, body)
    wait_until(connection, lambda: len(deliveries) == 3, what="the third delivery")
    assert deliveries.bodies[2] == body


def test_zero_length_body(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_publish("", queue, b"", pika.BasicProperties(message_id="empty"))
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None
    assert (body, properties.message_id) == (b"", "empty")
    channel.basic_publish("", queue, b"")
    deliveries = Deliveries()
    channel.basic_consume(queue, deliveries, auto_ack=True)
    wait_until(connection, lambda: len(deliveries) == 1, what="the empty delivery")
    assert deliveries.bodies == [b""]


def test_publish_to_missing_exchange_is_404(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    channel.basic_publish(name, "k", b"lost")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
    assert connection.is_open


def test_user_id_other_than_login_is_406(
    amqp_url: str, connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_publish("", queue, b"spoofed", pika.BasicProperties(user_id="mallory"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was "
        f"'{login_user(amqp_url)}'"
    )
    assert queue_depth(connection.channel(), queue) == (0, 0)


@pytest.mark.parametrize("expiration", ["not-a-number", "-1", "1.5"])
def test_invalid_expiration_is_406(
    connection: BlockingConnection, channel: BlockingChannel, queue: str, expiration: str
) -> None:
    channel.basic_publish("", queue, b"x", pika.BasicProperties(expiration=expiration))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 406
    # RabbitMQ appends an Erlang reason term (no_integer, {value_negative,-1}, ...).
    assert caught.value.reply_text.startswith(
        f"PRECONDITION_FAILED - invalid expiration '{expiration}'"
    )
    assert queue_depth(connection.channel(), queue) == (0, 0)


def test_consume_from_missing_queue_is_404(channel: BlockingChannel, name: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.basic_consume(name, lambda *_: None)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"


# --- basic.get -------------------------------------------------------------------------------


def test_get_ok_message_count_and_get_empty(channel: BlockingChannel, queue: str) -> None:
    assert channel.basic_get(queue) == (None, None, None)
    publish_numbers(channel, queue, 3)
    counts = []
    for expected in (b"1", b"2", b"3"):
        method, _, body = channel.basic_get(queue, auto_ack=True)
        assert isinstance(method, pika.spec.Basic.GetOk)
        assert body == expected
        assert method.redelivered is False
        assert (method.exchange, method.routing_key) == ("", queue)
        counts.append(method.message_count)
    assert counts == [2, 1, 0]
    assert channel.basic_get(queue) == (None, None, None)


def test_get_from_missing_queue_is_404(channel: BlockingChannel, name: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.basic_get(name)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"


def test_delivery_tags_are_per_channel_and_increase(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 4)
    other = connection.channel()
    tags = [get(channel, queue)[0].delivery_tag, get(other, queue)[0].delivery_tag]
    tags += [get(channel, queue)[0].delivery_tag, get(other, queue)[0].delivery_tag]
    assert tags == [1, 1, 2, 2]


# --- ack, nack, reject -----------------------------------------------------------------------


def test_ack_removes_and_unacked_is_not_ready(channel: BlockingChannel, queue: str) -> None:
    publish_numbers(channel, queue, 2)
    first, _ = get(channel, queue)
    assert queue_depth(channel, queue) == (1, 0)
    channel.basic_ack(first.delivery_tag)
    second, body = get(channel, queue)
    assert body == b"2"
    channel.basic_ack(second.delivery_tag)
    channel.close()


def test_requeued_messages_return_to_their_original_position(
    channel: BlockingChannel, queue: str
) -> None:
    """Publish 1..6, take 1..4 unacked, requeue 4 then 2: the queue reads 2, 4, 5, 6."""
    publish_numbers(channel, queue, 6)
    taken = {
        int(body): method.delivery_tag for method, body in (get(channel, queue) for _ in "1234")
    }
    channel.basic_reject(taken[4], requeue=True)
    channel.basic_nack(taken[2], requeue=True)
    round_trip(channel)
    seen = []
    for _ in range(4):
        method, body = get(channel, queue)
        seen.append((body, method.redelivered))
        channel.basic_ack(method.delivery_tag)
    assert seen == [(b"2", True), (b"4", True), (b"5", False), (b"6", False)]
    channel.basic_ack(taken[1])
    channel.basic_ack(taken[3])
    assert queue_depth(channel, queue) == (0, 0)


def test_requeue_of_all_unacked_keeps_publication_order(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    """Publish 1..5, take all 5, requeue #4 then #2: consumers see 2, 4 (by position)."""
    publish_numbers(channel, queue, 5)
    tags = [get(channel, queue)[0].delivery_tag for _ in range(5)]
    channel.basic_nack(tags[3], requeue=True)
    channel.basic_reject(tags[1], requeue=True)
    deliveries = Deliveries()
    consumer = connection.channel()
    consumer.basic_consume(queue, deliveries)
    wait_until(connection, lambda: len(deliveries) == 2, what="two redeliveries")
    assert deliveries.bodies == [b"2", b"4"]
    assert [method.redelivered for method in deliveries.methods] == [True, True]
    for method in deliveries.methods:
        consumer.basic_ack(method.delivery_tag)
    channel.basic_ack(0, multiple=True)
    round_trip(channel)
    round_trip(consumer)
    assert queue_depth(channel, queue) == (0, 1)


def test_nack_multiple_requeues_everything_up_to_the_tag(
    channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 4)
    tags = [get(channel, queue)[0].delivery_tag for _ in range(3)]
    channel.basic_nack(tags[1], multiple=True, requeue=True)
    round_trip(channel)
    seen = [(body, method.redelivered) for method, body in (get(channel, queue) for _ in "123")]
    assert seen == [(b"1", True), (b"2", True), (b"4", False)]
    channel.basic_ack(0, multiple=True)
    assert channel.basic_get(queue) == (None, None, None)


def test_nack_and_reject_without_requeue_drop(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 3)
    first, _ = get(channel, queue)
    second, _ = get(channel, queue)
    channel.basic_reject(first.delivery_tag, requeue=False)
    channel.basic_nack(second.delivery_tag, requeue=False)
    round_trip(channel)
    channel.close()  # nothing unacked is left to requeue
    probe = connection.channel()
    assert queue_depth(probe, queue) == (1, 0)
    assert drain(probe, queue) == [b"3"]


def test_ack_of_unknown_tag_is_406(
    connection: BlockingConnection, channel: BlockingChannel
) -> None:
    channel.basic_ack(99)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 99"
    assert connection.is_open


def test_double_ack_is_406(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 1)
    method, _ = get(channel, queue)
    channel.basic_ack(method.delivery_tag)
    channel.basic_ack(method.delivery_tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"
    )
    # The first ack stood: nothing was requeued when the channel closed.
    assert queue_depth(connection.channel(), queue) == (0, 0)


def test_reject_of_unknown_tag_is_406(channel: BlockingChannel) -> None:
    channel.basic_reject(7, requeue=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 7"


def test_ack_on_another_channel_is_406(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 1)
    method, _ = get(channel, queue)
    other = connection.channel()
    other.basic_ack(method.delivery_tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(other)
    assert caught.value.reply_code == 406
    channel.basic_ack(method.delivery_tag)
    round_trip(channel)


def test_ack_of_auto_ack_delivery_is_406(channel: BlockingChannel, queue: str) -> None:
    publish_numbers(channel, queue, 1)
    method, _, _ = channel.basic_get(queue, auto_ack=True)
    channel.basic_ack(method.delivery_tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"
    )


def test_multiple_ack(connection: BlockingConnection, channel: BlockingChannel, queue: str) -> None:
    publish_numbers(channel, queue, 4)
    tags = [get(channel, queue)[0].delivery_tag for _ in range(4)]
    channel.basic_ack(tags[2], multiple=True)
    round_trip(channel)
    channel.close()  # requeues the only unacked message left, #4
    probe = connection.channel()
    method, body = get(probe, queue)
    assert (body, method.redelivered) == (b"4", True)
    assert method.message_count == 0


def test_ack_zero_multiple_acks_everything(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 3)
    for _ in range(3):
        get(channel, queue)
    channel.basic_ack(0, multiple=True)
    round_trip(channel)
    channel.close()
    assert queue_depth(connection.channel(), queue) == (0, 0)


# --- QoS -------------------------------------------------------------------------------------


def two_loaded_queues(channel: BlockingChannel, name: str, cleanup: Cleanup) -> list[str]:
    queues = [cleanup.queue(f"{name}.a"), cleanup.queue(f"{name}.b")]
    for queue in queues:
        channel.queue_declare(queue)
        publish_numbers(channel, queue, 5)
    return queues


def test_prefetch_count_per_consumer(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queues = two_loaded_queues(channel, name, cleanup)
    channel.basic_qos(prefetch_count=2)
    per_queue = [Deliveries(), Deliveries()]
    for queue, deliveries in zip(queues, per_queue, strict=True):
        channel.basic_consume(queue, deliveries)
    wait_until(connection, lambda: sum(map(len, per_queue)) == 4, what="four deliveries")
    # The rest stays ready: each consumer holds exactly its prefetch.
    assert [queue_depth(channel, queue) for queue in queues] == [(3, 1), (3, 1)]
    assert [len(deliveries) for deliveries in per_queue] == [2, 2]
    channel.basic_ack(per_queue[0].methods[0].delivery_tag)
    wait_until(connection, lambda: len(per_queue[0]) == 3, what="a delivery after the ack")
    assert [queue_depth(channel, queue) for queue in queues] == [(2, 1), (3, 1)]
    assert [len(deliveries) for deliveries in per_queue] == [3, 2]


def test_prefetch_count_global_is_shared_by_the_channel(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queues = two_loaded_queues(channel, name, cleanup)
    channel.basic_qos(prefetch_count=3, global_qos=True)
    per_queue = [Deliveries(), Deliveries()]
    for queue, deliveries in zip(queues, per_queue, strict=True):
        channel.basic_consume(queue, deliveries)
    wait_until(connection, lambda: sum(map(len, per_queue)) == 3, what="three deliveries")
    assert sum(queue_depth(channel, queue)[0] for queue in queues) == 7  # 10 - 3 held
    assert sum(map(len, per_queue)) == 3
    (first, *_) = [d for d in per_queue if len(d)]
    channel.basic_ack(first.methods[0].delivery_tag)
    wait_until(connection, lambda: sum(map(len, per_queue)) == 4, what="a delivery after ack")
    assert sum(queue_depth(channel, queue)[0] for queue in queues) == 6
    assert sum(map(len, per_queue)) == 4


def test_prefetch_per_consumer_and_global_together(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queues = two_loaded_queues(channel, name, cleanup)
    channel.basic_qos(prefetch_count=3, global_qos=True)
    channel.basic_qos(prefetch_count=1, global_qos=False)
    per_queue = [Deliveries(), Deliveries()]
    for queue, deliveries in zip(queues, per_queue, strict=True):
        channel.basic_consume(queue, deliveries)
    wait_until(connection, lambda: sum(map(len, per_queue)) == 2, what="two deliveries")
    assert [queue_depth(channel, queue) for queue in queues] == [(4, 1), (4, 1)]
    assert [len(deliveries) for deliveries in per_queue] == [1, 1]


def test_prefetch_does_not_limit_basic_get(channel: BlockingChannel, queue: str) -> None:
    channel.basic_qos(prefetch_count=1)
    publish_numbers(channel, queue, 3)
    bodies = [get(channel, queue)[1] for _ in range(3)]
    assert bodies == [b"1", b"2", b"3"]


def test_prefetch_size_is_540_not_implemented(
    connection: BlockingConnection, channel: BlockingChannel
) -> None:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
        channel.basic_qos(prefetch_size=1024, prefetch_count=1)
    assert caught.value.reply_code == 540
    assert caught.value.reply_text == "NOT_IMPLEMENTED - prefetch_size!=0 (1024)"
    assert connection.is_closed


# --- recover, channel close, consumers ----------------------------------------------------------


def test_recover_requeue_redelivers(channel: BlockingChannel, queue: str) -> None:
    publish_numbers(channel, queue, 3)
    get(channel, queue)
    get(channel, queue)
    channel.basic_recover(requeue=True)
    seen = [(body, method.redelivered) for method, body in (get(channel, queue) for _ in "123")]
    assert seen == [(b"1", True), (b"2", True), (b"3", False)]
    channel.basic_ack(0, multiple=True)


def test_recover_without_requeue_is_540(
    connection: BlockingConnection, channel: BlockingChannel
) -> None:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
        channel.basic_recover(requeue=False)
    assert caught.value.reply_code == 540
    assert caught.value.reply_text == "NOT_IMPLEMENTED - requeue=false"
    assert connection.is_closed


def test_channel_flow(connection: BlockingConnection, channel: BlockingChannel, queue: str) -> None:
    assert channel.flow(True) is True
    if connection._impl.server_properties["product"] == "RabbitMQ":
        # RabbitMQ refuses to pause a channel.
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
            channel.flow(False)
        assert caught.value.reply_code == 540
        assert caught.value.reply_text == "NOT_IMPLEMENTED - active=false"
        assert connection.is_closed
        return
    # amqpd pauses deliveries as the AMQP spec describes (a listed deviation).
    deliveries = Deliveries()
    channel.basic_consume(queue, deliveries, auto_ack=True)
    assert channel.flow(False) is False
    publish_numbers(channel, queue, 2)
    assert queue_depth(channel, queue) == (2, 1)  # held back while paused
    assert channel.flow(True) is True
    wait_until(connection, lambda: len(deliveries) == 2, what="deliveries after resuming")
    assert deliveries.bodies == [b"1", b"2"]


def test_recover_redelivers_to_the_consumer(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 2)
    deliveries = Deliveries()
    channel.basic_consume(queue, deliveries)
    wait_until(connection, lambda: len(deliveries) == 2, what="two deliveries")
    channel.basic_recover(requeue=True)
    wait_until(connection, lambda: len(deliveries) == 4, what="two redeliveries")
    assert deliveries.bodies == [b"1", b"2", b"1", b"2"]
    assert [m.redelivered for m in deliveries.methods] == [False, False, True, True]
    assert len({m.delivery_tag for m in deliveries.methods}) == 4
    channel.basic_ack(deliveries.methods[-1].delivery_tag, multiple=True)
    round_trip(channel)


def test_closing_a_channel_requeues_unacked_to_another_consumer(
    amqp_url: str, channel: BlockingChannel, queue: str
) -> None:
    publish_numbers(channel, queue, 2)
    get(channel, queue)
    get(channel, queue)
    with connect(amqp_url) as other_connection:
        other = other_connection.channel()
        deliveries = Deliveries()
        other.basic_consume(queue, deliveries)
        assert queue_depth(other, queue) == (0, 1)  # both held unacked by `channel`
        assert len(deliveries) == 0
        channel.close()
        wait_until(other_connection, lambda: len(deliveries) == 2, what="the requeued pair")
        assert deliveries.bodies == [b"1", b"2"]
        assert [m.redelivered for m in deliveries.methods] == [True, True]
        other.basic_ack(0, multiple=True)
        round_trip(other)


def test_consumer_receives_in_order_with_consumer_tag(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    deliveries = Deliveries()
    tag = channel.basic_consume(queue, deliveries, consumer_tag="my-tag")
    assert tag == "my-tag"
    publish_numbers(channel, queue, 20)
    wait_until(connection, lambda: len(deliveries) == 20, what="20 deliveries")
    assert deliveries.bodies == [str(n).encode() for n in range(1, 21)]
    assert {m.consumer_tag for m in deliveries.methods} == {"my-tag"}
    assert [m.delivery_tag for m in deliveries.methods] == list(range(1, 21))
    channel.basic_ack(20, multiple=True)
    channel.basic_cancel(tag)
    assert queue_depth(channel, queue) == (0, 0)


def test_consumers_share_a_queue_round_robin(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    first, second = Deliveries(), Deliveries()
    channel.basic_consume(queue, first, auto_ack=True)
    channel.basic_consume(queue, second, auto_ack=True)
    publish_numbers(channel, queue, 6)
    wait_until(connection, lambda: len(first) + len(second) == 6, what="six deliveries")
    assert first.bodies == [b"1", b"3", b"5"]
    assert second.bodies == [b"2", b"4", b"6"]


def test_consumer_tag_reuse_on_a_channel_is_530(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_consume(queue, lambda *_: None, consumer_tag="taken")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
        raw_rpc(
            connection,
            channel,
            pika.spec.Basic.Consume(queue=queue, consumer_tag="taken"),
            [pika.spec.Basic.ConsumeOk],
        )
    assert caught.value.reply_code == 530
    assert caught.value.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'taken'"


def test_same_consumer_tag_on_two_channels_is_fine(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_consume(queue, lambda *_: None, consumer_tag="shared")
    other = connection.channel()
    other.basic_consume(queue, lambda *_: None, consumer_tag="shared")
    assert queue_depth(channel, queue) == (0, 2)


def test_server_generated_consumer_tag(channel: BlockingChannel, queue: str) -> None:
    reply = raw_rpc(
        channel.connection,
        channel,
        pika.spec.Basic.Consume(queue=queue, consumer_tag=""),
        [pika.spec.Basic.ConsumeOk],
    )
    assert reply.consumer_tag.startswith("amq.ctag-")
    # pika does not know this consumer: cancel it before a broker-side cancel surprises pika.
    raw_rpc(
        channel.connection,
        channel,
        pika.spec.Basic.Cancel(consumer_tag=reply.consumer_tag),
        [pika.spec.Basic.CancelOk],
    )
    assert queue_depth(channel, queue) == (0, 0)


def test_exclusive_consumer_conflicts_are_403(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_consume(queue, lambda *_: None)
    other = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        other.basic_consume(queue, lambda *_: None, exclusive=True)
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == (
        f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
    )


def test_consume_on_a_queue_with_an_exclusive_consumer_is_403(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_consume(queue, lambda *_: None, exclusive=True)
    other = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        other.basic_consume(queue, lambda *_: None)
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == (
        f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
    )
    # basic.get is not a consumer and is still allowed.
    assert connection.channel().basic_get(queue) == (None, None, None)


def test_cancel_of_unknown_tag_is_fine(
    connection: BlockingConnection, channel: BlockingChannel
) -> None:
    reply = raw_rpc(
        connection,
        channel,
        pika.spec.Basic.Cancel(consumer_tag="never-used"),
        [pika.spec.Basic.CancelOk],
    )
    assert isinstance(reply, pika.spec.Basic.CancelOk)
    assert reply.consumer_tag == "never-used"
    round_trip(channel)


def test_cancel_stops_deliveries(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    deliveries = Deliveries()
    tag = channel.basic_consume(queue, deliveries, auto_ack=True)
    publish_numbers(channel, queue, 1)
    wait_until(connection, lambda: len(deliveries) == 1, what="the delivery")
    channel.basic_cancel(tag)
    publish_numbers(channel, queue, 1)
    assert queue_depth(channel, queue) == (1, 0)  # still ready: nobody took it
    assert len(deliveries) == 1


def test_queue_deleted_while_consumed_cancels_the_consumer(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    cancelled: list[pika.spec.Basic.Cancel] = []
    channel.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    tag = channel.basic_consume(queue, lambda *_: None)
    connection.channel().queue_delete(queue)
    wait_until(connection, lambda: bool(cancelled), what="basic.cancel from the broker")
    assert isinstance(cancelled[0], pika.spec.Basic.Cancel)
    assert cancelled[0].consumer_tag == tag
    # The channel stays open.
    round_trip(channel)
