"""exchange.declare / delete / bind with pika: types, equivalence, reserved names, errors.

Expected behaviour (reply codes and texts) is RabbitMQ 3.10's, checked by running these
tests against it.
"""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import Cleanup, drain, round_trip

pytestmark = pytest.mark.timeout(30)

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


@pytest.mark.parametrize("exchange_type", EXCHANGE_TYPES)
def test_declare_every_type(
    channel: BlockingChannel, name: str, cleanup: Cleanup, exchange_type: str
) -> None:
    ok = channel.exchange_declare(cleanup.exchange(name), exchange_type=exchange_type)
    assert isinstance(ok.method, pika.spec.Exchange.DeclareOk)
    # Redeclaring with the same properties is a no-op, and passive sees it.
    channel.exchange_declare(name, exchange_type=exchange_type)
    channel.exchange_declare(name, passive=True)


def test_declare_durable_and_auto_delete(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(f"{name}.durable"), "fanout", durable=True)
    channel.exchange_declare(cleanup.exchange(f"{name}.auto"), "fanout", auto_delete=True)
    channel.exchange_declare(f"{name}.durable", "fanout", durable=True)
    channel.exchange_declare(f"{name}.auto", "fanout", auto_delete=True)


def test_passive_declare_of_existing_exchange(channel: BlockingChannel) -> None:
    for exchange in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"):
        channel.exchange_declare(exchange, passive=True)


def test_passive_declare_of_missing_exchange_closes_channel_404(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(name, passive=True)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
    assert channel.is_closed
    assert connection.is_open
    round_trip(connection.channel())


def test_redeclare_with_other_type_is_406(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(name, "fanout")
    assert caught.value.reply_code == 406
    assert caught.value.reply_text.startswith("PRECONDITION_FAILED - inequivalent arg")
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in vhost '/': "
        "received 'fanout' but current is 'direct'"
    )
    assert connection.is_open


def test_redeclare_with_other_durable_is_406(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct", durable=False)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(name, "direct", durable=True)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text.startswith("PRECONDITION_FAILED - inequivalent arg")
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{name}' in vhost '/': "
        "received 'true' but current is 'false'"
    )


def test_passive_redeclare_ignores_type(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    channel.exchange_declare(name, "fanout", passive=True)


def test_declare_with_reserved_amq_prefix_is_403(channel: BlockingChannel, name: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(f"amq.{name}", "direct")
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == (
        f"ACCESS_REFUSED - exchange name 'amq.{name}' contains reserved prefix 'amq.*'"
    )


def test_redeclare_of_existing_amq_exchange_is_allowed(channel: BlockingChannel) -> None:
    channel.exchange_declare("amq.direct", "direct", durable=True)


def test_delete_of_amq_exchange_is_403(channel: BlockingChannel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_delete("amq.fanout")
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == (
        "ACCESS_REFUSED - deletion of system exchange 'amq.fanout' in vhost '/' not allowed"
    )


DEFAULT_EXCHANGE_REFUSED = "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_declare_default_exchange_is_403(channel: BlockingChannel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare("", "direct")
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == DEFAULT_EXCHANGE_REFUSED


def test_passive_declare_default_exchange_is_403(channel: BlockingChannel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare("", passive=True)
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == DEFAULT_EXCHANGE_REFUSED


def test_delete_default_exchange_is_403(channel: BlockingChannel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_delete("")
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == DEFAULT_EXCHANGE_REFUSED


def test_bind_queue_to_default_exchange_is_403(channel: BlockingChannel, queue: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_bind(queue, "", routing_key="other")
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == DEFAULT_EXCHANGE_REFUSED


def test_unbind_queue_from_default_exchange_is_403(channel: BlockingChannel, queue: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_unbind(queue, "", routing_key=queue)
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == DEFAULT_EXCHANGE_REFUSED


def test_bind_exchange_to_default_exchange_is_403(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "fanout")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_bind(destination=name, source="", routing_key="k")
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == DEFAULT_EXCHANGE_REFUSED


def test_default_exchange_routes_by_queue_name(channel: BlockingChannel, queue: str) -> None:
    channel.basic_publish("", queue, b"by name")
    assert drain(channel, queue) == [b"by name"]


def test_unknown_exchange_type_closes_connection_503(
    connection: BlockingConnection, channel: BlockingChannel, name: str
) -> None:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
        channel.exchange_declare(name, exchange_type="no-such-type")
    assert caught.value.reply_code == 503
    assert caught.value.reply_text == "COMMAND_INVALID - unknown exchange type 'no-such-type'"
    assert connection.is_closed


def test_delete_if_unused_with_a_binding_is_406(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}.x")
    channel.exchange_declare(exchange, "direct")
    channel.queue_bind(queue, exchange, routing_key="k")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_delete(exchange, if_unused=True)
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - exchange '{exchange}' in vhost '/' in use"
    )


def test_delete_if_unused_without_bindings_deletes(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    channel.exchange_delete(name, if_unused=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(name, passive=True)
    assert caught.value.reply_code == 404


def test_delete_of_missing_exchange_succeeds(channel: BlockingChannel, name: str) -> None:
    ok = channel.exchange_delete(name)
    assert isinstance(ok.method, pika.spec.Exchange.DeleteOk)
    round_trip(channel)


def test_delete_removes_bindings(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}.x")
    channel.exchange_declare(exchange, "fanout")
    channel.queue_bind(queue, exchange)
    channel.exchange_delete(exchange)
    channel.exchange_declare(exchange, "fanout")
    channel.basic_publish(exchange, "", b"after recreate")
    round_trip(channel)
    assert drain(channel, queue) == []


def test_exchange_to_exchange_bindings_route(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    source = cleanup.exchange(f"{name}.source")
    middle = cleanup.exchange(f"{name}.middle")
    channel.exchange_declare(source, "topic")
    channel.exchange_declare(middle, "direct")
    channel.exchange_bind(destination=middle, source=source, routing_key="orders.*")
    channel.queue_bind(queue, middle, routing_key="orders.new")
    channel.confirm_delivery()
    channel.basic_publish(source, "orders.new", b"routed twice")
    channel.basic_publish(source, "orders.old", b"stops at middle")
    channel.basic_publish(source, "other", b"stops at source")
    assert drain(channel, queue) == [b"routed twice"]
    channel.exchange_unbind(destination=middle, source=source, routing_key="orders.*")
    channel.basic_publish(source, "orders.new", b"after unbind")
    assert drain(channel, queue) == []


def test_exchange_binding_to_missing_source_is_404(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "fanout")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_bind(destination=name, source=f"{name}.missing")
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no exchange '{name}.missing' in vhost '/'"


def test_bind_queue_to_missing_exchange_is_404(
    channel: BlockingChannel, name: str, queue: str
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_bind(queue, f"{name}.missing", routing_key="k")
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no exchange '{name}.missing' in vhost '/'"


def test_bind_missing_queue_is_404(channel: BlockingChannel, name: str, cleanup: Cleanup) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.queue_bind(f"{name}.missing", name, routing_key="k")
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == f"NOT_FOUND - no queue '{name}.missing' in vhost '/'"


def test_publish_to_internal_exchange_is_403(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "fanout", internal=True)
    channel.basic_publish(name, "", b"refused")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        round_trip(channel)
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == (
        f"ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost '/'"
    )
    assert connection.is_open


def test_internal_exchange_receives_through_exchange_binding(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    internal = cleanup.exchange(f"{name}.internal")
    front = cleanup.exchange(f"{name}.front")
    channel.exchange_declare(internal, "fanout", internal=True)
    channel.exchange_declare(front, "fanout")
    channel.exchange_bind(destination=internal, source=front)
    channel.queue_bind(queue, internal)
    channel.confirm_delivery()
    channel.basic_publish(front, "", b"via front")
    assert drain(channel, queue) == [b"via front"]


def test_alternate_exchange_receives_unroutable_messages(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    alternate = cleanup.exchange(f"{name}.ae")
    primary = cleanup.exchange(f"{name}.primary")
    routed = cleanup.queue(f"{name}.routed")
    unrouted = cleanup.queue(f"{name}.unrouted")
    channel.exchange_declare(alternate, "fanout")
    channel.exchange_declare(primary, "direct", arguments={"alternate-exchange": alternate})
    channel.queue_declare(routed)
    channel.queue_declare(unrouted)
    channel.queue_bind(routed, primary, routing_key="known")
    channel.queue_bind(unrouted, alternate)
    channel.confirm_delivery()
    channel.basic_publish(primary, "known", b"routed")
    # mandatory is satisfied by the alternate exchange: no basic.return.
    channel.basic_publish(primary, "unknown", b"unrouted", mandatory=True)
    assert drain(channel, routed) == [b"routed"]
    method, _, body = channel.basic_get(unrouted, auto_ack=True)
    assert body == b"unrouted"
    assert method.exchange == primary
    assert method.routing_key == "unknown"


def test_alternate_exchange_that_does_not_exist_drops(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    primary = cleanup.exchange(name)
    channel.exchange_declare(primary, "direct", arguments={"alternate-exchange": f"{name}.no"})
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(primary, "nowhere", b"x", mandatory=True)


def test_redeclare_with_other_arguments_is_406(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(
        cleanup.exchange(name), "direct", arguments={"alternate-exchange": "first"}
    )
    channel.exchange_declare(name, "direct", arguments={"alternate-exchange": "first"})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(name, "direct", arguments={"alternate-exchange": "second"})
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{name}' in "
        "vhost '/': received 'second' but current is 'first'"
    )


def test_passive_declare_of_missing_amq_exchange_is_404(channel: BlockingChannel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare("amq.no-such-exchange", passive=True)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == (
        "NOT_FOUND - no exchange 'amq.no-such-exchange' in vhost '/'"
    )


def test_auto_delete_exchange_goes_with_its_last_binding(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}.auto")
    channel.exchange_declare(exchange, "direct", auto_delete=True)
    channel.queue_bind(queue, exchange, routing_key="a")
    channel.queue_bind(queue, exchange, routing_key="b")
    channel.queue_unbind(queue, exchange, routing_key="a")
    channel.exchange_declare(exchange, passive=True)
    channel.queue_unbind(queue, exchange, routing_key="b")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(exchange, passive=True)
    assert caught.value.reply_code == 404


def test_auto_delete_exchange_goes_when_its_bound_queue_is_deleted(
    channel: BlockingChannel, name: str, queue: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}.auto")
    channel.exchange_declare(exchange, "fanout", auto_delete=True)
    channel.queue_bind(queue, exchange)
    channel.queue_delete(queue)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.exchange_declare(exchange, passive=True)
    assert caught.value.reply_code == 404


def test_auto_delete_exchange_without_bindings_stays(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "fanout", auto_delete=True)
    channel.exchange_declare(name, passive=True)


def test_exchange_unbind_of_missing_binding_succeeds(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    source = cleanup.exchange(f"{name}.source")
    destination = cleanup.exchange(f"{name}.destination")
    channel.exchange_declare(source, "direct")
    channel.exchange_declare(destination, "direct")
    ok = channel.exchange_unbind(destination=destination, source=source, routing_key="never")
    assert isinstance(ok.method, pika.spec.Exchange.UnbindOk)
    round_trip(channel)
