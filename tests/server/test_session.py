"""Connection-level behaviour seen on the wire: header check, heartbeats, timeouts, limits,
frame errors and the close handshakes. Uses a raw client so every frame is visible."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pamqp import commands, heartbeat

from tests.support.broker_process import BrokerProcess
from tests.support.raw_client import PROTOCOL_HEADER, Closed, RawClient


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker with small limits so that they are cheap to reach."""
    directory = tmp_path_factory.mktemp("session")
    config = directory / "amqpd.yaml"
    config.write_text(
        "listeners: [{bind: 127.0.0.1, port: 0}]\n"
        "limits:\n"
        "  handshake_timeout_s: 1\n"
        "  handshake_error_delay_s: 0.5\n"
        "  close_timeout_s: 1\n"
        "  message_bytes_max: 1000\n"
        "  channel_max: 8\n"
        "  outbound_bytes_max: 1048576\n"
    )
    process = BrokerProcess(directory / "data", ["--config", str(config)]).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def connect(broker: BrokerProcess) -> RawClient:
    return RawClient(broker.host, broker.port)


def test_wrong_protocol_header_gets_ours_back_then_close(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send_raw(b"HTTP/1.1")
        assert client.receive_bytes(8) == PROTOCOL_HEADER
        with pytest.raises(Closed):
            client.receive_bytes(1)


def test_amqp_0_8_header_gets_ours_back(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send_raw(b"AMQP\x01\x01\x08\x00")
        assert client.receive_bytes(8) == PROTOCOL_HEADER


def test_the_0_9_header_is_answered_with_0_9_1(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send_raw(b"AMQP\x01\x01\x00\x09")
        start = client.expect(commands.Connection.Start)
        assert (start.version_major, start.version_minor) == (0, 9)


def test_start_advertises_capabilities(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        start = client.expect(commands.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert set(start.mechanisms.split()) == {"PLAIN", "AMQPLAIN"}
    assert start.server_properties["product"] == "amqpd"
    capabilities = start.server_properties["capabilities"]
    for name in (
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
    ):
        assert capabilities[name] is True, name


def test_tune_offers_configured_limits(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        tune = client.handshake()
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (8, 131072, 60)


def test_amqplain_login(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        from pamqp import encode

        response = encode.field_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]
        client.send(
            0,
            commands.Connection.StartOk(
                client_properties={}, mechanism="AMQPLAIN", response=response.decode()
            ),
        )
        client.expect(commands.Connection.Tune)


def test_bad_password_with_authentication_failure_close(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(
            0,
            commands.Connection.StartOk(
                client_properties={"capabilities": {"authentication_failure_close": True}},
                mechanism="PLAIN",
                response="\0guest\0wrong",
            ),
        )
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 403
        assert close.reply_text == (
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For "
            "details see the broker logfile."
        )
    broker.wait_for("login refused from 127.0.0.1: user 'guest' - invalid credentials")


def test_bad_password_without_the_capability_closes_silently_after_a_delay(
    broker: BrokerProcess,
) -> None:
    with connect(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(
            0,
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0nobody\0x"
            ),
        )
        started = time.monotonic()
        assert client.wait_closed() == []
        assert time.monotonic() - started >= 0.45  # handshake_error_delay_s
    broker.wait_for("login refused from 127.0.0.1: user 'nobody' - invalid credentials")


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [("FOO", "\0guest\0guest"), ("PLAIN", "guestguest")],
    ids=["unknown-mechanism", "malformed-plain"],
)
def test_bad_sasl_closes_silently(broker: BrokerProcess, mechanism: str, response: str) -> None:
    with connect(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(
            0,
            commands.Connection.StartOk(
                client_properties={"capabilities": {"authentication_failure_close": True}},
                mechanism=mechanism,
                response=response,
            ),
        )
        assert client.wait_closed() == []


def test_unknown_vhost_is_refused_with_530(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(
            0,
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0guest\0guest"
            ),
        )
        client.expect(commands.Connection.Tune)
        client.send(0, commands.Connection.TuneOk(channel_max=0, frame_max=131072, heartbeat=0))
        client.send(0, commands.Connection.Open(virtual_host="nowhere"))
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 530
        assert close.reply_text == "NOT_ALLOWED - vhost nowhere not found"
        client.send(0, commands.Connection.CloseOk())
        assert client.wait_closed() == []


@pytest.mark.parametrize(
    ("channel_max", "frame_max"),
    [(0, 1 << 20), (0, 1024), (9, 131072)],
    ids=["frame_max-too-big", "frame_max-too-small", "channel_max-too-big"],
)
def test_tune_ok_outside_our_limits_closes_silently(
    broker: BrokerProcess, channel_max: int, frame_max: int
) -> None:
    with connect(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(
            0,
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0guest\0guest"
            ),
        )
        client.expect(commands.Connection.Tune)
        client.send(
            0,
            commands.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max, heartbeat=0),
        )
        client.send(0, commands.Connection.Open(virtual_host="/"))
        assert client.wait_closed() == []
    broker.wait_for("handshake failed in state tuning: NOT_ALLOWED - ")


def test_handshake_timeout_drops_a_silent_client(broker: BrokerProcess) -> None:
    started = time.monotonic()
    with connect(broker) as client, pytest.raises(Closed):
        client.receive_bytes(1, timeout_s=5)
    assert time.monotonic() - started < 4
    broker.wait_for("handshake not finished within 1 s; dropped")


def test_server_sends_heartbeats_and_drops_a_silent_client(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake(heartbeat_s=1)
        channel, frame = client.receive(timeout_s=3)
        assert (channel, type(frame)) == (0, heartbeat.Heartbeat)
        started = time.monotonic()
        frames = client.wait_closed(timeout_s=6)
        assert all(isinstance(frame, heartbeat.Heartbeat) for _, frame in frames)
        assert 1.5 < time.monotonic() - started < 5
    broker.wait_for("missed heartbeats from client, timeout: 1 s; dropped")


def test_a_client_that_sends_heartbeats_stays_connected(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake(heartbeat_s=1)
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            _channel, frame = client.receive(timeout_s=3)  # the server's heartbeats pace us
            assert isinstance(frame, heartbeat.Heartbeat)
            client.send(0, heartbeat.Heartbeat())
        client.open_channel(1)  # still alive and answering


def test_method_before_channel_open_is_a_504(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.send(5, commands.Queue.Declare(queue="x"))
        close = client.expect(commands.Connection.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (504, 50, 10)
        assert close.reply_text == "CHANNEL_ERROR - expected 'channel.open'"


def test_second_channel_open_is_a_504(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Channel.Open())
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 504
        assert close.reply_text == "CHANNEL_ERROR - second 'channel.open' seen"


def test_open_channels_are_counted_against_channel_max(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake(channel_max=3)
        for number in (1, 200, 65535):  # any channel number will do, as in RabbitMQ
            client.open_channel(number)
        client.send(4, commands.Channel.Open())
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 530
        assert close.reply_text == (
            "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)"
        )


def test_channel_open_on_a_closing_channel_is_a_504(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Queue.Declare(queue="missing", passive=True))
        client.expect(commands.Channel.Close)
        client.send(1, commands.Channel.Open())
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 504
        assert close.reply_text == "CHANNEL_ERROR - second 'channel.open' seen"


def test_channel_methods_on_channel_zero_are_a_504(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.send(0, commands.Queue.Declare(queue="x"))
        close = client.expect(commands.Connection.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (504, 50, 10)
        assert close.reply_text == "CHANNEL_ERROR - unexpected method in connection state running"


def test_methods_only_a_server_sends_are_a_503(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Channel.FlowOk(active=True))
        close = client.expect(commands.Connection.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (503, 20, 21)
        assert close.reply_text == "COMMAND_INVALID - unimplemented method"


def test_after_channel_close_only_close_ok_counts(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Queue.Declare(queue="missing", passive=True))
        close = client.expect(commands.Channel.Close)
        assert close.reply_code == 404
        # Ignored until close-ok: no reply, no error.
        client.send(1, commands.Queue.Declare(queue="", exclusive=True))
        client.publish(1, b"dropped", routing_key="nowhere")
        client.send(1, commands.Channel.CloseOk())
        client.open_channel(1)  # the number is free again
        client.send(1, commands.Queue.Declare(queue="", exclusive=True))
        assert client.expect(commands.Queue.DeclareOk).queue.startswith("amq.gen-")


def test_frame_above_frame_max_is_a_501(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake(frame_max=4096)
        client.open_channel(1)
        big_arguments = {"x-padding": "x" * 5000}  # a method frame over the 4096 agreed
        client.send(1, commands.Queue.Declare(queue="q", arguments=big_arguments))
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 501


def test_message_above_message_bytes_max_is_a_406(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.open_channel(1)
        client.publish(1, b"x" * 1001, routing_key="q")
        close = client.expect(commands.Channel.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 40)
        assert close.reply_text == (
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
        )


def test_content_header_without_publish_is_a_505(broker: BrokerProcess) -> None:
    from pamqp import header

    with connect(broker) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, header.ContentHeader(0, 3, commands.Basic.Properties()))
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 505


def test_client_close_gets_close_ok(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        client.handshake()
        client.send(
            0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
        )
        client.expect(commands.Connection.CloseOk)
        assert client.wait_closed() == []


def test_connection_limit(tmp_path: Path) -> None:
    config = tmp_path / "amqpd.yaml"
    config.write_text("listeners: [{bind: 127.0.0.1, port: 0}]\nlimits: {connections_max: 1}\n")
    process = BrokerProcess(tmp_path / "data", ["--config", str(config)]).start()
    try:
        with RawClient(process.host, process.port) as first:
            first.handshake()
            with RawClient(process.host, process.port) as second:
                second.send_raw(PROTOCOL_HEADER)
                with pytest.raises(Closed):
                    second.receive_bytes(1)
            process.wait_for(r"refused: connection limit \(1\) reached")
            first.open_channel(1)  # the first one is unaffected
    finally:
        assert process.stop() == 0


def test_a_consumer_that_stops_reading_holds_only_a_bounded_backlog(
    broker: BrokerProcess,
) -> None:
    """Deliveries stop at outbound_bytes_max (plus what the sockets hold): the rest stays
    in the queue instead of piling up in the broker's memory for a stuck client."""
    body = b"x" * 900  # under message_bytes_max (1000)
    count = 20_000  # 18 MB in all
    with connect(broker) as publisher:
        publisher.handshake()
        publisher.open_channel(1)
        publisher.declare_and_confirm(1, commands.Queue.Declare(queue="backlog", auto_delete=True))
        for _ in range(count):
            publisher.publish(1, body, routing_key="backlog")
        acked = 0
        while acked < count:
            acked = publisher.expect(commands.Basic.Ack).delivery_tag
        with connect(broker) as stuck:  # after publishing: handshake_timeout_s is 1 here
            stuck.handshake()
            stuck.open_channel(1)
            stuck.send(1, commands.Basic.Consume(queue="backlog", no_ack=True))  # never read
            deadline = time.monotonic() + 10
            consumers = 0
            while consumers == 0:  # until the stuck consumer is in place
                assert time.monotonic() < deadline, "the consumer never registered"
                publisher.send(1, commands.Queue.Declare(queue="backlog", passive=True))
                declare_ok = publisher.expect(commands.Queue.DeclareOk)
                ready, consumers = declare_ok.message_count, declare_ok.consumer_count
            # 1 MiB queued in the broker plus a few MB of socket buffers, at ~1 KB each.
            assert ready > count - 12_000
            # As much again while the consumer stays stuck: it goes to the queue (its log,
            # past queue_memory_bytes_max), not to the stuck connection's output.
            assert broker.process is not None
            before = resident_bytes(broker.process.pid)
            for _ in range(count):
                publisher.publish(1, body, routing_key="backlog")
            while acked < 2 * count:
                acked = publisher.expect(commands.Basic.Ack).delivery_tag
            grown = resident_bytes(broker.process.pid) - before
            publisher.send(1, commands.Queue.Declare(queue="backlog", passive=True))
            # The same bound on what went out to the stuck consumer, over both rounds.
            assert publisher.expect(commands.Queue.DeclareOk).message_count > 2 * count - 12_000
            assert grown < 8 * 1024 * 1024, f"resident size grew {grown} bytes for 18 MB"


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")
