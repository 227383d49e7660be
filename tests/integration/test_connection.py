"""Connection and channel lifecycle with pika: login, vhosts, tuning, heartbeats, channels.

Expected behaviour is RabbitMQ 3.10's, checked by running these tests against it.
"""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingConnection

from tests.integration.helpers import connect, parameters, round_trip

pytestmark = pytest.mark.timeout(30)


def with_credentials(url: str, password: str) -> str:
    return url.replace("guest:guest@", f"guest:{password}@", 1)


def with_vhost(url: str, vhost: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + vhost


def test_connect_and_close(amqp_url: str) -> None:
    connection = connect(amqp_url)
    assert connection.is_open
    channel = connection.channel()
    assert channel.is_open
    round_trip(channel)
    connection.close()
    assert connection.is_closed
    assert channel.is_closed


def test_server_properties_advertise_capabilities(connection: BlockingConnection) -> None:
    capabilities = connection._impl.server_capabilities
    for capability in (
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "authentication_failure_close",
        "per_consumer_qos",
    ):
        assert capabilities.get(capability) is True, capability


def test_wrong_password_is_refused(amqp_url: str) -> None:
    with pytest.raises(
        (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)
    ) as caught:
        connect(with_credentials(amqp_url, "not-the-password"))
    # pika wraps the broker's connection.close (authentication_failure_close capability).
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in (
        str(caught.value)
    )


def test_unknown_vhost_is_refused_with_530(amqp_url: str, name: str) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as caught:
        connect(with_vhost(amqp_url, name))
    assert f"(530) 'NOT_ALLOWED - vhost {name} not found'" in str(caught.value)


def test_heartbeat_negotiated_and_kept_while_idle(amqp_url: str) -> None:
    """Client asks 5 s (server offers 60): 5 s wins, and an idle connection survives."""
    heartbeat_s = 5
    connection = connect(amqp_url, heartbeat=heartbeat_s)
    try:
        assert connection._impl.params.heartbeat == heartbeat_s
        checker = connection._impl._heartbeat_checker
        assert checker is not None
        # Idle for more than two intervals: pika sends heartbeats every 2.5 s and would
        # drop the connection if the broker sent nothing for its check interval.
        deadline = time.monotonic() + 2 * heartbeat_s + 1
        while (remaining := deadline - time.monotonic()) > 0:
            connection.process_data_events(time_limit=remaining)
        assert connection.is_open
        assert checker._heartbeat_frames_received >= 2, "broker sent no heartbeats while idle"
        round_trip(connection.channel())
    finally:
        if connection.is_open:
            connection.close()


def test_heartbeat_disabled_when_client_asks_zero(amqp_url: str) -> None:
    connection = connect(amqp_url, heartbeat=0)
    try:
        assert connection._impl.params.heartbeat == 0
        assert connection._impl._heartbeat_checker is None
        round_trip(connection.channel())
    finally:
        connection.close()


def test_client_properties_with_connection_name_accepted(amqp_url: str, name: str) -> None:
    connection = connect(
        amqp_url,
        client_properties={
            "connection_name": name,
            "product": "amqpd integration tests",
            "capabilities": {"consumer_cancel_notify": True},
        },
    )
    try:
        round_trip(connection.channel())
    finally:
        connection.close()


def test_channel_max_negotiated_to_the_lower_value(amqp_url: str) -> None:
    connection = connect(amqp_url, channel_max=3)
    try:
        assert connection._impl.params.channel_max == 3
        channels = [connection.channel() for _ in range(3)]
        for channel in channels:
            round_trip(channel)
        # pika refuses a fourth channel itself...
        with pytest.raises(pika.exceptions.NoFreeChannels):
            connection.channel()
        # ...so name channel 4 explicitly to see what the broker does with it.
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
            connection.channel(channel_number=4)
        assert caught.value.reply_code == 530
        assert caught.value.reply_text == (
            "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)"
        )
    finally:
        if connection.is_open:
            connection.close()


def test_channel_max_default_is_2047(connection: BlockingConnection) -> None:
    assert connection._impl.params.channel_max == 2047


def test_frame_max_default_is_131072(connection: BlockingConnection) -> None:
    assert connection._impl.params.frame_max == 131072


def test_channel_open_close_and_number_reuse(connection: BlockingConnection) -> None:
    first = connection.channel()
    number = first.channel_number
    round_trip(first)
    first.close()
    assert first.is_closed
    # pika hands out the freed number again: the broker must accept channel.open on it.
    again = connection.channel()
    assert again.channel_number == number
    round_trip(again)
    assert connection.is_open


def test_closing_a_channel_twice_client_side(connection: BlockingConnection) -> None:
    channel = connection.channel()
    channel.close()
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        channel.close()
    other = connection.channel()
    round_trip(other)
    assert connection.is_open


def test_many_channels_concurrently(connection: BlockingConnection) -> None:
    channels = [connection.channel() for _ in range(50)]
    for channel in channels:
        round_trip(channel)
    for channel in channels[::2]:
        channel.close()
    for channel in channels[1::2]:
        round_trip(channel)


def test_connection_close_with_open_channels_and_consumers(amqp_url: str, name: str) -> None:
    connection = connect(amqp_url)
    channel = connection.channel()
    channel.queue_declare(name, exclusive=True)
    channel.basic_consume(name, lambda *_: None)
    channel.basic_publish("", name, b"x")
    connection.close()
    assert connection.is_closed
    # The exclusive queue went with its connection.
    with connect(amqp_url) as probe:
        probe_channel = probe.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
            probe_channel.queue_declare(name, passive=True)
        assert caught.value.reply_code == 404


def test_blocked_connection_parameters_accepted(amqp_url: str) -> None:
    params = parameters(amqp_url, blocked_connection_timeout=5.0)
    with BlockingConnection(params) as connection:
        round_trip(connection.channel())
