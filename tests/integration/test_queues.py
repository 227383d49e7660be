"""queue.declare / bind / unbind / purge / delete with pika, including the error cases.

Expected behaviour (reply codes and texts) is RabbitMQ 3.10's, checked by running these
tests against it.
"""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import Cleanup, connect, drain, queue_depth, round_trip, wait_until

pytestmark = pytest.mark.timeout(30)


def publish_bodies(channel: BlockingChannel, queue: str, count: int) -> None:
    for index in range(1, count + 1):
        channel.basic_publish("", queue, str(index).encode())
    round_trip(channel)


def test_server_named_queue(channel: BlockingChannel) -> None:
    ok = channel.queue_declare("", exclusive=True).method
    assert ok.queue.startswith("amq.gen-")
    assert len(ok.queue) > len("amq.gen-")
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    other = channel.queue_declare("", exclusive=True).method
    assert other.queue != ok.queue
    channel.basic_publish("", ok.queue, b"to a generated name")
    assert drain(channel, ok.queue) == [b"to a generated name"]


def test_declare_ok_echoes_the_name(channel: BlockingChannel, name: str, cleanup: Cleanup) -> None:
    ok = channel.queue_declare(cleanup.queue(name)).method
    assert isinstance(ok, pika.spec.Queue.DeclareOk)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 0)


def test_passive_declare(channel: BlockingChannel, queue: str) -> None:
    ok = channel.queue_declare(queue, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (queue, 0, 0)
    # Passive ignores the other flags.
    channel.queue_declare(queue, passive=True, durable=True, exclusive=True, auto_delete=True)


def test_passive_declare_of_missing_queue_is_404(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(name, passive=True)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    assert connection.is_open


def test_durable_queue_redeclare_must_match(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), durable=True)
    channel.queue_declare(name, durable=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(name, durable=False)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '/': "
        "received 'false' but current is 'true'"
    )


def test_auto_delete_redeclare_must_match(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), auto_delete=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(name, auto_delete=False)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{name}' in vhost '/': "
        "received 'false' but current is 'true'"
    )


def test_arguments_redeclare_must_match(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    locator = {"x-queue-master-locator": "min-masters"}
    channel.queue_declare(cleanup.queue(name), arguments=locator)
    channel.queue_declare(name, arguments=locator)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(name)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-master-locator' for queue '{name}' "
        "in vhost '/': received none but current is the value 'min-masters' of type 'longstr'"
    )


def test_quorum_only_arguments_are_refused_on_classic_queues(
    channel: BlockingChannel, name: str
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(name, arguments={"x-max-in-memory-length": 10})
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-max-in-memory-length' for queue '{name}' in "
        "vhost '/' of queue type rabbit_classic_queue"
    )


def test_queue_mode_redeclare_must_match(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), arguments={"x-queue-mode": "lazy"})
    channel.queue_declare(name, arguments={"x-queue-mode": "lazy"})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(name, arguments={"x-queue-mode": "default"})
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-mode' for queue '{name}' in vhost "
        "'/': received 'default' but current is 'lazy'"
    )


def test_unknown_arguments_are_not_compared(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), arguments={"app-tag": "one"})
    ok = channel.queue_declare(name, arguments={"app-tag": "two", "x-unknown": 1}).method
    assert ok.queue == name
    round_trip(channel)


def test_declare_with_reserved_amq_prefix_is_403(channel: BlockingChannel, name: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(f"amq.{name}")
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == (
        f"ACCESS_REFUSED - queue name 'amq.{name}' contains reserved prefix 'amq.*'"
    )


def test_exclusive_queue_is_deleted_with_its_connection(amqp_url: str, name: str) -> None:
    with connect(amqp_url) as owner:
        owner.channel().queue_declare(name, exclusive=True)
    with connect(amqp_url) as other:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
            other.channel().queue_declare(name, passive=True)
        assert caught.value.reply_code == 404


def test_exclusive_queue_from_another_connection_is_405(
    amqp_url: str, channel: BlockingChannel, name: str
) -> None:
    channel.queue_declare(name, exclusive=True)
    locked = (
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost "
        "'/'. It could be originally declared on another connection or the exclusive property "
        "value does not match that of the original declaration."
    )
    with connect(amqp_url) as other:
        attempts = {
            "declare": lambda ch: ch.queue_declare(name, exclusive=True),
            "passive declare": lambda ch: ch.queue_declare(name, passive=True),
            "consume": lambda ch: ch.basic_consume(name, lambda *_: None),
            "get": lambda ch: ch.basic_get(name),
            "purge": lambda ch: ch.queue_purge(name),
            "delete": lambda ch: ch.queue_delete(name),
            "bind": lambda ch: ch.queue_bind(name, "amq.direct", routing_key="k"),
        }
        results = {}
        for operation, attempt in attempts.items():
            other_channel = other.channel()
            try:
                attempt(other_channel)
            except pika.exceptions.ChannelClosedByBroker as error:
                results[operation] = (error.reply_code, error.reply_text)
            else:
                results[operation] = None
        assert results == dict.fromkeys(attempts, (405, locked))
    # The owner's connection still works with it.
    assert queue_depth(channel, name) == (0, 0)


def test_exclusive_queue_can_be_used_by_other_channels_of_its_connection(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    channel.queue_declare(name, exclusive=True)
    other = connection.channel()
    other.queue_declare(name, exclusive=True)
    other.basic_publish("", name, b"same connection")
    assert drain(other, name) == [b"same connection"]


def test_declare_ok_counts_ready_messages_and_consumers(
    amqp_url: str, channel: BlockingChannel, queue: str
) -> None:
    publish_bodies(channel, queue, 3)
    assert queue_depth(channel, queue) == (3, 0)
    method, _, _ = channel.basic_get(queue)
    assert method is not None
    # message_count counts ready messages only: the unacked one is left out.
    assert queue_depth(channel, queue) == (2, 0)
    with connect(amqp_url) as consumer_connection:
        consumer_channel = consumer_connection.channel()
        consumer_channel.basic_qos(prefetch_count=1)
        delivered: list[bytes] = []
        consumer_channel.basic_consume(queue, lambda _ch, _m, _p, body: delivered.append(body))
        wait_until(consumer_connection, lambda: len(delivered) == 1, what="one delivery")
        assert queue_depth(channel, queue) == (1, 1)
    # Closing the consumer's connection requeued its unacked message.
    assert queue_depth(channel, queue) == (2, 0)


def test_auto_delete_queue_is_deleted_when_last_consumer_cancels(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    channel.queue_declare(name, auto_delete=True)
    first = channel.basic_consume(name, lambda *_: None)
    second = channel.basic_consume(name, lambda *_: None)
    channel.basic_cancel(first)
    assert queue_depth(channel, name) == (0, 1)
    channel.basic_cancel(second)
    probe = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        probe.queue_declare(name, passive=True)
    assert caught.value.reply_code == 404


def test_auto_delete_queue_survives_without_a_first_consumer(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), auto_delete=True)
    channel.basic_publish("", name, b"x")
    assert channel.basic_get(name, auto_ack=True)[2] == b"x"
    assert channel.basic_get(name, auto_ack=True)[0] is None
    assert queue_depth(channel, name) == (0, 0)


def test_auto_delete_queue_is_deleted_when_consumer_channel_closes(
    connection: BlockingConnection, name: str
) -> None:
    consumer_channel = connection.channel()
    consumer_channel.queue_declare(name, auto_delete=True)
    consumer_channel.basic_consume(name, lambda *_: None)
    consumer_channel.close()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(name, passive=True)
    assert caught.value.reply_code == 404


def test_purge_returns_the_ready_count(channel: BlockingChannel, queue: str) -> None:
    publish_bodies(channel, queue, 4)
    method, _, body = channel.basic_get(queue)
    assert body == b"1"
    ok = channel.queue_purge(queue).method
    assert isinstance(ok, pika.spec.Queue.PurgeOk)
    assert ok.message_count == 3
    assert queue_depth(channel, queue) == (0, 0)
    # The unacked message is untouched by purge and can still be acked.
    channel.basic_ack(method.delivery_tag)
    round_trip(channel)
    assert channel.queue_purge(queue).method.message_count == 0


def test_purge_of_missing_queue_is_404(channel: BlockingChannel, name: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_purge(name)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"


def test_delete_returns_the_message_count(channel: BlockingChannel, queue: str) -> None:
    publish_bodies(channel, queue, 2)
    ok = channel.queue_delete(queue).method
    assert isinstance(ok, pika.spec.Queue.DeleteOk)
    assert ok.message_count == 2
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_declare(queue, passive=True)
    assert caught.value.reply_code == 404


def test_delete_if_unused_with_a_consumer_is_406(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_consume(queue, lambda *_: None)
    other = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        other.queue_delete(queue, if_unused=True)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' in use"
    assert queue_depth(channel, queue) == (0, 1)


def test_delete_if_empty_with_messages_is_406(channel: BlockingChannel, queue: str) -> None:
    publish_bodies(channel, queue, 1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_delete(queue, if_empty=True)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' not empty"
    )


def test_delete_if_unused_and_if_empty_when_both_hold(channel: BlockingChannel, queue: str) -> None:
    ok = channel.queue_delete(queue, if_unused=True, if_empty=True).method
    assert ok.message_count == 0
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare(queue, passive=True)


def test_delete_of_missing_queue_succeeds(channel: BlockingChannel, name: str) -> None:
    ok = channel.queue_delete(name).method
    assert ok.message_count == 0
    round_trip(channel)


def test_unbind(channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup) -> None:
    exchange = cleanup.exchange(f"{name}.x")
    channel.exchange_declare(exchange, "direct")
    channel.queue_bind(queue, exchange, routing_key="k")
    channel.confirm_delivery()
    channel.basic_publish(exchange, "k", b"bound")
    assert drain(channel, queue) == [b"bound"]
    ok = channel.queue_unbind(queue, exchange, routing_key="k").method
    assert isinstance(ok, pika.spec.Queue.UnbindOk)
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(exchange, "k", b"unbound", mandatory=True)
    assert drain(channel, queue) == []


def test_unbind_of_missing_binding_succeeds(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}.x")
    channel.exchange_declare(exchange, "direct")
    channel.queue_unbind(queue, exchange, routing_key="never-bound")
    round_trip(channel)


def test_bind_arguments_distinguish_bindings(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}.x")
    channel.exchange_declare(exchange, "headers")
    channel.queue_bind(queue, exchange, arguments={"x-match": "any", "a": 1})
    channel.queue_bind(queue, exchange, arguments={"x-match": "any", "b": 1})
    channel.queue_unbind(queue, exchange, arguments={"x-match": "any", "a": 1})
    channel.confirm_delivery()
    channel.basic_publish(exchange, "", b"a", pika.BasicProperties(headers={"a": 1}))
    channel.basic_publish(exchange, "", b"b", pika.BasicProperties(headers={"b": 1}))
    assert drain(channel, queue) == [b"b"]


def test_empty_queue_name_means_last_declared_queue(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(name)
    channel.exchange_declare(exchange, "direct")
    generated = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind("", exchange, routing_key="k")
    # With queue and routing key both empty, the routing key is the queue's name too.
    channel.queue_bind("", exchange, routing_key="")
    channel.confirm_delivery()
    channel.basic_publish(exchange, "k", b"via k")
    channel.basic_publish(exchange, generated, b"via name")
    assert channel.queue_purge("").method.message_count == 2
    channel.basic_publish(exchange, "k", b"again")
    _, _, body = channel.basic_get("", auto_ack=True)
    assert body == b"again"
    assert channel.queue_declare(generated, passive=True).method.message_count == 0


def test_empty_queue_name_without_a_declared_queue_is_404(channel: BlockingChannel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_bind("", "amq.direct", routing_key="k")
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == "NOT_FOUND - no previously declared queue"


def test_redeclare_own_exclusive_queue_as_non_exclusive_is_405(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    channel.queue_declare(name, exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(name, exclusive=False)
    assert caught.value.reply_code == 405
    assert caught.value.reply_text.startswith(
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'"
    )
