"""The sans-IO connection state machine (amqpd.protocol.connection.ProtocolConnection).

Driven with plain bytes: client frames are built with pamqp 4.0.1, and what the server
writes is parsed back with pamqp. Covers the handshake, channel open/close, content
assembly into Publish events, Ack events, every error path with its reply code, the
discard rules after the server closes a channel or the connection, and the property that
feeding a whole session at once or in chunks of any size gives the same events and the
same output bytes.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Iterable
from typing import Any

import pamqp.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic, Channel, Connection, Queue
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from amqpd.errors import (
    ChannelError,
    CommandInvalid,
    ConnectionException,
    FrameError,
    LoginRefused,
    NotAllowed,
    PreconditionFailed,
    UnexpectedFrame,
)
from amqpd.protocol import spec
from amqpd.protocol.connection import Limits, Phase, ProtocolConnection
from amqpd.protocol.events import (
    Ack,
    BadProtocolHeader,
    ChannelClosed,
    ChannelFailed,
    ChannelOpened,
    CloseCompleted,
    CloseRequested,
    Event,
    LoginRequested,
    MethodReceived,
    OpenRequested,
    Publish,
    Tuned,
)
from amqpd.protocol.frames import (
    FRAME_METHOD,
    FRAME_OVERHEAD_BYTES,
    PROTOCOL_HEADER,
    encode_frame,
)
from amqpd.protocol.sasl import MECHANISMS_WITH_EXTERNAL

LIMITS = Limits(channel_max=16, frame_max=131_072, heartbeat_s=60, message_bytes_max=1 << 20)
SERVER_PROPERTIES: dict[str, Any] = {"product": "amqpd", "capabilities": {"basic.nack": True}}
CLIENT_PROPERTIES: dict[str, Any] = {
    "product": "test",
    "capabilities": {"consumer_cancel_notify": True},
}


def frame(value: Any, channel: int = 0) -> bytes:
    return pamqp.frame.marshal(value, channel)


def tune_ok(channel_max: int = 0, frame_max: int = 0, heartbeat: int = 0) -> bytes:
    return frame(Connection.TuneOk(channel_max, frame_max, heartbeat))


def start_ok(mechanism: str = "PLAIN", response: str = "\x00guest\x00secret") -> bytes:
    return frame(
        Connection.StartOk(
            client_properties=CLIENT_PROPERTIES,
            mechanism=mechanism,
            response=response,
            locale="en_US",
        )
    )


OPEN = frame(Connection.Open(virtual_host="/"))
LOGIN = LoginRequested("PLAIN", "guest", "secret", CLIENT_PROPERTIES, "en_US")


def channel_open(channel: int) -> bytes:
    return frame(Channel.Open(), channel)


def publish(
    channel: int,
    body: bytes,
    exchange: str = "",
    routing_key: str = "rk",
    mandatory: bool = False,
    immediate: bool = False,
    body_frame_bytes: int | None = None,
    properties: Basic.Properties | None = None,
) -> tuple[bytes, tuple[Any, ...]]:
    """The frames of one basic.publish, and the Publish event they must assemble into."""
    header = ContentHeader(body_size=len(body), properties=properties or Basic.Properties())
    step = body_frame_bytes or max(len(body), 1)
    wire = (
        frame(Basic.Publish(0, exchange, routing_key, mandatory, immediate), channel)
        + frame(header, channel)
        + b"".join(
            frame(ContentBody(body[start : start + step]), channel)
            for start in range(0, len(body), step)
        )
    )
    event = (
        "Publish",
        channel,
        exchange,
        routing_key,
        mandatory,
        immediate,
        header.marshal(),
        body,
    )
    return wire, event


def snapshot(event: Event) -> Any:
    """Something comparable with ==: Publish and Ack are plain slotted classes."""
    if isinstance(event, Publish):
        return (
            "Publish",
            event.channel,
            event.exchange,
            event.routing_key,
            event.mandatory,
            event.immediate,
            bytes(event.header),
            bytes(event.body),
        )
    if isinstance(event, Ack):
        return ("Ack", event.channel, event.delivery_tag, event.multiple)
    if isinstance(event, ChannelFailed):
        error = event.error
        return ("ChannelFailed", event.channel, type(error), error.reply_code, error.detail)
    return event


class Driver:
    """Feeds bytes and answers login and open requests as the server does."""

    def __init__(self, limits: Limits = LIMITS) -> None:
        self.conn = ProtocolConnection(limits, SERVER_PROPERTIES)
        self.output = b""

    def feed(self, data: bytes) -> list[Any]:
        events = []
        for event in self.conn.receive_data(data):
            events.append(snapshot(event))
            if isinstance(event, LoginRequested):
                self.conn.accept_login()
            elif isinstance(event, OpenRequested):
                self.conn.accept_open()
        return events

    def feed_chunks(self, chunks: Iterable[bytes]) -> list[Any]:
        events = []
        for chunk in chunks:
            events += self.feed(chunk)
            self.output += self.conn.data_to_send()
        return events

    def sent(self) -> list[tuple[int, Any]]:
        """The frames the server wrote since the last call, parsed by pamqp."""
        data = self.conn.data_to_send()
        self.output += data
        return parse(data)


def parse(data: bytes) -> list[tuple[int, Any]]:
    frames = []
    while data:
        consumed, channel, value = pamqp.frame.unmarshal(data)
        frames.append((channel, value))
        data = data[consumed:]
    return frames


def split_frames(wire: bytes) -> list[bytes]:
    """Whole frames, one by one, found by their size fields."""
    frames = []
    while wire:
        end = 7 + int.from_bytes(wire[3:7], "big") + 1
        frames.append(wire[:end])
        wire = wire[end:]
    return frames


def names(frames: list[tuple[int, Any]]) -> list[tuple[int, str]]:
    return [(channel, value.name) for channel, value in frames]


def opened(limits: Limits = LIMITS, channels: Iterable[int] = (1,), **tune: int) -> Driver:
    """A driver past the handshake, with channels open and the output taken."""
    driver = Driver(limits)
    driver.feed(PROTOCOL_HEADER + start_ok() + tune_ok(**tune) + OPEN)
    for channel in channels:
        driver.feed(channel_open(channel))
    driver.sent()
    return driver


# ---------------------------------------------------------------- handshake


def test_handshake_step_by_step() -> None:
    driver = Driver()
    conn = driver.conn
    assert driver.feed(PROTOCOL_HEADER) == []
    [(channel, start)] = driver.sent()
    assert channel == 0
    assert isinstance(start, Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.server_properties == SERVER_PROPERTIES
    assert start.mechanisms == "PLAIN AMQPLAIN"
    assert start.locales == "en_US"

    # start-ok: the server decides; nothing is sent until it accepts.
    events = list(conn.receive_data(start_ok()))
    assert events == [LOGIN]
    assert conn.phase is Phase.AWAITING_LOGIN_DECISION
    assert conn.client_properties == CLIENT_PROPERTIES
    assert conn.has_capability("consumer_cancel_notify")
    assert not conn.has_capability("basic.nack")
    assert driver.sent() == []
    conn.accept_login()
    [(channel, tune)] = driver.sent()
    assert channel == 0
    assert isinstance(tune, Connection.Tune)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (16, 131_072, 60)

    assert driver.feed(tune_ok(channel_max=8, frame_max=4096, heartbeat=30)) == [
        Tuned(channel_max=8, frame_max=4096, heartbeat_s=30)
    ]
    assert (conn.channel_max, conn.frame_max, conn.heartbeat_s) == (8, 4096, 30)
    assert conn.body_frame_bytes_max == 4096 - FRAME_OVERHEAD_BYTES
    assert driver.sent() == []

    events = list(conn.receive_data(frame(Connection.Open(virtual_host="vh"))))
    assert events == [OpenRequested("vh")]
    assert driver.sent() == []
    conn.accept_open()
    assert names(driver.sent()) == [(0, "Connection.OpenOk")]
    assert conn.phase is Phase.OPEN


def test_tune_ok_zeros_take_the_servers_limits() -> None:
    driver = Driver()
    events = driver.feed(PROTOCOL_HEADER + start_ok() + tune_ok(0, 0, 0))
    assert events == [LOGIN, Tuned(channel_max=16, frame_max=131_072, heartbeat_s=0)]
    assert driver.conn.body_frame_bytes_max == 131_072 - FRAME_OVERHEAD_BYTES


def test_whole_handshake_in_one_read() -> None:
    driver = Driver()
    events = driver.feed(PROTOCOL_HEADER + start_ok() + tune_ok(4, 8192, 10) + OPEN)
    assert events == [LOGIN, Tuned(4, 8192, 10), OpenRequested("/")]
    assert names(driver.sent()) == [
        (0, "Connection.Start"),
        (0, "Connection.Tune"),
        (0, "Connection.OpenOk"),
    ]


def test_amqplain_login() -> None:
    response = "\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x02pw"
    driver = Driver()
    [event] = driver.feed(PROTOCOL_HEADER + start_ok("AMQPLAIN", response))
    assert isinstance(event, LoginRequested)
    assert (event.mechanism, event.username, event.password) == ("AMQPLAIN", "guest", "pw")


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [("PLAIN", "guest"), ("AMQPLAIN", "\x05LOGINS\x00"), ("EXTERNAL", ""), ("plain", "\x00a\x00b")],
)
def test_bad_login_is_refused(mechanism: str, response: str) -> None:
    driver = Driver()
    with pytest.raises(LoginRefused) as caught:
        driver.feed(PROTOCOL_HEADER + start_ok(mechanism, response))
    assert caught.value.reply_code == 403


def test_the_mechanisms_offered_are_the_callers() -> None:
    driver = Driver()
    driver.conn = ProtocolConnection(LIMITS, SERVER_PROPERTIES, MECHANISMS_WITH_EXTERNAL)
    [event] = driver.feed(PROTOCOL_HEADER + start_ok("EXTERNAL", ""))
    [(_, start), (_, tune)] = driver.sent()
    assert isinstance(start, Connection.Start) and isinstance(tune, Connection.Tune)
    assert start.mechanisms == "EXTERNAL PLAIN AMQPLAIN"
    # The identity is the transport's (the client certificate): none comes from here.
    assert isinstance(event, LoginRequested)
    assert (event.mechanism, event.username, event.password) == ("EXTERNAL", "", "")


def test_a_mechanism_not_offered_is_refused_even_if_known() -> None:
    driver = Driver()
    driver.conn = ProtocolConnection(LIMITS, SERVER_PROPERTIES, ("PLAIN",))
    with pytest.raises(LoginRefused, match="unsupported authentication mechanism 'AMQPLAIN'"):
        driver.feed(PROTOCOL_HEADER + start_ok("AMQPLAIN", "\x05LOGINS\x00\x00\x00\x01a"))


def test_protocol_header_may_arrive_in_pieces() -> None:
    driver = Driver()
    for byte in PROTOCOL_HEADER[:-1]:
        assert driver.feed(bytes((byte,))) == []
        assert driver.sent() == []
    assert driver.feed(PROTOCOL_HEADER[-1:]) == []
    assert names(driver.sent()) == [(0, "Connection.Start")]


@pytest.mark.parametrize(
    "header",
    [
        b"AMQP\x00\x00\x08\x00",  # 0-8
        b"AMQP\x01\x01\x00\x08",
        b"AMQP\x00\x00\x09\x02",
        b"AMQP\x00\x01\x00\x00",  # 1.0
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01",  # a TLS client hello
    ],
    ids=repr,
)
def test_wrong_protocol_header(header: bytes) -> None:
    driver = Driver()
    # As RabbitMQ: nothing is judged before all 8 octets are in.
    assert driver.feed(header[:7]) == []
    assert driver.conn.data_to_send() == b""
    assert driver.feed(header[7:]) == [BadProtocolHeader(header[:8])]
    assert driver.conn.data_to_send() == b"AMQP\x00\x00\x09\x01"
    assert driver.conn.closed
    assert driver.feed(PROTOCOL_HEADER + start_ok()) == []
    assert driver.conn.data_to_send() == b""


def test_the_0_9_header_some_clients_send_is_answered_with_0_9_1() -> None:
    driver = Driver()
    assert driver.feed(b"AMQP\x01\x01\x00\x09" + start_ok()) == [LOGIN]
    assert names(driver.sent()) == [(0, "Connection.Start"), (0, "Connection.Tune")]


@given(
    header=st.binary(min_size=8, max_size=24).filter(
        lambda data: data[:8] not in (PROTOCOL_HEADER, b"AMQP\x01\x01\x00\x09")
    ),
    chunk_size=st.integers(1, 8),
)
def test_wrong_protocol_header_is_reported_the_same_however_it_is_split(
    header: bytes, chunk_size: int
) -> None:
    whole = Driver()
    whole_events = whole.feed_chunks([header])
    chunked = Driver()
    chunked_events = chunked.feed_chunks(
        header[start : start + chunk_size] for start in range(0, len(header), chunk_size)
    )
    assert chunked_events == whole_events
    assert chunked.output == whole.output == PROTOCOL_HEADER


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"frame_max": 4095}, "frame_max=4095 < 4096 min size"),
        ({"frame_max": 1}, "frame_max=1 < 4096 min size"),
        ({"frame_max": 131_073}, "frame_max=131073 > 131072 max size"),
        ({"channel_max": 17}, "channel_max=17 > 16 max channels"),
    ],
)
def test_tune_ok_outside_the_servers_limits_is_not_allowed(
    tune: dict[str, int], message: str
) -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER + start_ok())
    with pytest.raises(NotAllowed, match=message) as caught:
        driver.feed(tune_ok(**tune))
    assert caught.value.reply_code == 530
    assert (caught.value.class_id, caught.value.method_id) == (10, 31)


@pytest.mark.parametrize(
    ("tune", "tuned"),
    [
        ({"frame_max": 4096}, Tuned(16, 4096, 0)),
        ({"frame_max": 131_072, "channel_max": 16}, Tuned(16, 131_072, 0)),
        ({"channel_max": 1, "heartbeat": 65_535}, Tuned(1, 131_072, 65_535)),
    ],
)
def test_tune_ok_at_the_limits_is_accepted(tune: dict[str, int], tuned: Tuned) -> None:
    driver = Driver()
    assert driver.feed(PROTOCOL_HEADER + start_ok() + tune_ok(**tune)) == [LOGIN, tuned]


@pytest.mark.parametrize(
    ("early", "ids"),
    [
        (frame(Connection.Open()), (10, 40)),  # before tune-ok
        (frame(Connection.TuneOk(0, 0, 0)) + frame(Connection.StartOk()), (10, 11)),
        (frame(Connection.CloseOk()), (10, 51)),
    ],
    ids=["open-before-tune-ok", "second-start-ok", "close-ok-never-asked-for"],
)
def test_channel_zero_method_out_of_order_is_channel_error(
    early: bytes, ids: tuple[int, int]
) -> None:
    # RabbitMQ answers 504 CHANNEL_ERROR for these.
    driver = Driver()
    driver.feed(PROTOCOL_HEADER + start_ok())
    with pytest.raises(ChannelError, match="unexpected method in connection state") as caught:
        driver.feed(early)
    assert caught.value.reply_code == 504
    assert (caught.value.class_id, caught.value.method_id) == ids


def test_channel_method_before_the_connection_is_open_is_command_invalid() -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER + start_ok() + tune_ok())
    with pytest.raises(CommandInvalid) as caught:
        driver.feed(channel_open(1))
    assert caught.value.reply_code == 503


def test_method_before_the_login_decision_is_channel_error() -> None:
    conn = ProtocolConnection(LIMITS, SERVER_PROPERTIES)
    assert [type(event) for event in conn.receive_data(PROTOCOL_HEADER + start_ok())] == [
        LoginRequested
    ]
    with pytest.raises(ChannelError):
        list(conn.receive_data(tune_ok()))


def test_a_refused_tune_ok_leaves_the_phase_where_it_was() -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER + start_ok())
    with pytest.raises(NotAllowed):
        driver.feed(tune_ok(frame_max=1))
    assert driver.conn.phase is Phase.AWAITING_TUNE_OK


# ---------------------------------------------------------------- channels


def test_channel_open_and_close_by_the_client() -> None:
    driver = opened(channels=())
    assert driver.feed(channel_open(1)) == [ChannelOpened(1)]
    [(channel, open_ok)] = driver.sent()
    assert (channel, open_ok.name) == (1, "Channel.OpenOk")
    assert driver.conn.is_channel_open(1)
    assert driver.conn.open_channel_count == 1

    assert driver.feed(frame(Channel.Close(200, "bye", 0, 0), 1)) == [ChannelClosed(1, True)]
    assert names(driver.sent()) == [(1, "Channel.CloseOk")]
    assert not driver.conn.is_channel_open(1)
    assert driver.conn.open_channel_count == 0

    # The number is free again.
    assert driver.feed(channel_open(1)) == [ChannelOpened(1)]


def test_channel_close_by_the_server() -> None:
    driver = opened()
    driver.conn.close_channel(1, 406, "PRECONDITION_FAILED - no", 60, 40)
    [(channel, close)] = driver.sent()
    assert channel == 1
    assert isinstance(close, Channel.Close)
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        406,
        "PRECONDITION_FAILED - no",
        60,
        40,
    )
    assert not driver.conn.is_channel_open(1)
    assert driver.conn.open_channel_count == 1  # the number stays taken until close-ok
    driver.conn.close_channel(1, 406, "again", 60, 40)  # a second close is not sent
    assert driver.sent() == []
    assert driver.feed(frame(Channel.CloseOk(), 1)) == [ChannelClosed(1, False)]
    assert driver.conn.open_channel_count == 0
    assert driver.sent() == []


def test_crossed_channel_close() -> None:
    driver = opened()
    driver.conn.close_channel(1, 406, "PRECONDITION_FAILED - no", 60, 40)
    driver.sent()
    assert driver.feed(frame(Channel.Close(200, "", 0, 0), 1)) == [ChannelClosed(1, False)]
    assert names(driver.sent()) == [(1, "Channel.CloseOk")]
    assert driver.conn.open_channel_count == 0


def test_unsolicited_channel_close_ok_is_passed_on() -> None:
    driver = opened()
    assert driver.feed(frame(Channel.CloseOk(), 1)) == [MethodReceived(1, spec.ChannelCloseOk())]
    assert driver.conn.is_channel_open(1)
    assert driver.sent() == []


def test_frames_after_server_channel_close_are_discarded_until_close_ok() -> None:
    driver = opened(channels=(1, 2))
    body_wire, _ = publish(1, b"x" * 10, body_frame_bytes=3)
    method, *rest = split_frames(body_wire)
    driver.feed(method)  # a publish in progress when the server closes
    driver.conn.close_channel(1, 406, "PRECONDITION_FAILED - no", 60, 40)
    driver.sent()
    discarded = (
        b"".join(rest)
        + publish(1, b"abc")[0]
        + frame(Basic.Ack(1, False), 1)
        + frame(Basic.Qos(0, 10, False), 1)
        + frame(ContentBody(b"stray"), 1)
    )
    assert driver.feed(discarded) == []
    assert driver.sent() == []
    # Other channels go on meanwhile.
    assert driver.feed(frame(Basic.Ack(7, True), 2)) == [("Ack", 2, 7, True)]
    assert driver.feed(frame(Channel.CloseOk(), 1)) == [ChannelClosed(1, False)]
    # After close-ok the channel is gone: methods on it are errors again.
    with pytest.raises(ChannelError):
        driver.feed(frame(Basic.Qos(0, 10, False), 1))


def test_channel_open_on_a_closing_channel_is_channel_error() -> None:
    driver = opened()
    driver.conn.close_channel(1, 406, "PRECONDITION_FAILED - no", 60, 40)
    with pytest.raises(ChannelError, match="second 'channel.open'") as caught:
        driver.feed(channel_open(1))
    assert caught.value.reply_code == 504


def test_method_on_unopened_channel_is_channel_error() -> None:
    driver = opened(channels=())
    with pytest.raises(ChannelError, match="expected 'channel.open'") as caught:
        driver.feed(frame(Basic.Qos(0, 10, False), 3))
    assert caught.value.reply_code == 504
    assert (caught.value.class_id, caught.value.method_id) == (60, 10)


def test_second_channel_open_is_channel_error() -> None:
    driver = opened()
    with pytest.raises(ChannelError, match="second 'channel.open'") as caught:
        driver.feed(channel_open(1))
    assert caught.value.reply_code == 504


@pytest.mark.parametrize(("channel_max", "allowed"), [(3, 3), (0, 16)])
def test_opening_more_channels_than_channel_max_is_not_allowed(
    channel_max: int, allowed: int
) -> None:
    # RabbitMQ counts open channels against channel_max; any id 1-65535 is valid.
    driver = opened(channels=(), channel_max=channel_max)
    ids = [65_535 - number for number in range(allowed)]
    assert driver.feed(b"".join(channel_open(channel) for channel in ids)) == [
        ChannelOpened(channel) for channel in ids
    ]
    with pytest.raises(NotAllowed) as caught:
        driver.feed(channel_open(1))
    assert caught.value.reply_code == 530
    assert caught.value.detail == (
        f"number of channels opened ({allowed}) has reached the negotiated channel_max ({allowed})"
    )


def test_a_closed_channel_no_longer_counts_against_channel_max() -> None:
    driver = opened(channels=(1,), channel_max=1)
    driver.feed(frame(Channel.Close(200, "", 0, 0), 1))
    assert driver.feed(channel_open(2)) == [ChannelOpened(2)]


def test_channel_methods_on_channel_zero_are_channel_error() -> None:
    driver = opened()
    with pytest.raises(ChannelError) as caught:
        driver.feed(frame(Basic.Qos(0, 1, False), 0))
    assert caught.value.reply_code == 504
    assert (caught.value.class_id, caught.value.method_id) == (60, 10)


def test_channel_methods_become_method_received() -> None:
    driver = opened()
    events = driver.feed(
        frame(Basic.Qos(0, 10, True), 1) + frame(Queue.Declare(queue="q", durable=True), 1)
    )
    assert events == [
        MethodReceived(1, spec.BasicQos(prefetch_size=0, prefetch_count=10, global_=True)),
        MethodReceived(1, spec.QueueDeclare(queue="q", durable=True)),
    ]


def test_update_secret_on_channel_zero_is_passed_on() -> None:
    driver = opened()
    events = driver.feed(frame(Connection.UpdateSecret("token", "refresh")))
    assert events == [MethodReceived(0, spec.ConnectionUpdateSecret(b"token", "refresh"))]


def test_content_bearing_method_from_the_client_is_command_invalid() -> None:
    driver = opened()
    with pytest.raises(CommandInvalid, match="cannot be sent by a client"):
        driver.feed(frame(Basic.Deliver("ctag", 1, False, "", "rk"), 1))


def test_heartbeats_on_channel_zero_are_ignored() -> None:
    driver = opened()
    assert driver.feed(Heartbeat().marshal() * 3) == []
    assert driver.sent() == []


# ---------------------------------------------------------------- content


def test_publish_single_body_frame() -> None:
    driver = opened()
    wire, event = publish(1, b"hello", exchange="amq.direct", routing_key="key")
    assert driver.feed(wire) == [event]
    assert driver.sent() == []


@pytest.mark.parametrize(
    ("mandatory", "immediate"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_publish_flags(mandatory: bool, immediate: bool) -> None:
    driver = opened()
    wire, event = publish(1, b"x", mandatory=mandatory, immediate=immediate)
    assert driver.feed(wire) == [event]


def test_publish_event_carries_the_route_as_received() -> None:
    driver = opened()
    wire, _ = publish(1, b"x", exchange="ex", routing_key="r\u00e9")
    events = list(driver.conn.receive_data(wire + wire))  # the second from the route cache
    assert [event.route for event in events if isinstance(event, Publish)] == [
        b"\x02ex\x03r\xc3\xa9"
    ] * 2


def test_publish_keeps_the_content_header_bytes() -> None:
    properties = Basic.Properties(
        content_type="text/plain", headers={"a": 1, "b": [True, "x"]}, delivery_mode=2
    )
    driver = opened()
    wire, event = publish(1, b"body", properties=properties)
    [got] = driver.feed(wire)
    assert got == event
    assert got[6] == ContentHeader(body_size=4, properties=properties).marshal()


def test_publish_multi_frame_body() -> None:
    driver = opened(frame_max=4096)
    body = bytes(range(256)) * 40  # 10,240 bytes: three frames at frame_max 4096
    wire, event = publish(1, body, body_frame_bytes=4096 - FRAME_OVERHEAD_BYTES)
    assert driver.feed(wire) == [event]


def test_publish_with_zero_length_body_completes_at_the_header() -> None:
    driver = opened()
    wire, event = publish(1, b"")
    assert len(split_frames(wire)) == 2  # method and header frames only
    assert driver.feed(wire) == [event]
    assert event[-1] == b""


def test_publishes_on_different_channels_interleave() -> None:
    driver = opened(channels=(1, 2))
    first, first_event = publish(1, b"one two three", body_frame_bytes=4)
    second, second_event = publish(2, b"second")
    method, *content = split_frames(first)
    wire = method + second + b"".join(content)
    assert driver.feed(wire) == [second_event, first_event]


def test_acks() -> None:
    driver = opened()
    events = driver.feed(frame(Basic.Ack(1, False), 1) + frame(Basic.Ack(2**63 - 1, True), 1))
    assert events == [("Ack", 1, 1, False), ("Ack", 1, 2**63 - 1, True)]


def test_ack_of_64_bit_tag() -> None:
    driver = opened()
    wire = b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50" + b"\xff" * 8 + b"\x01\xce"
    assert driver.feed(wire) == [("Ack", 1, 2**64 - 1, True)]


def test_truncated_ack_is_frame_error() -> None:
    driver = opened()
    truncated = b"\x01\x00\x01\x00\x00\x00\x08\x00\x3c\x00\x50\x00\x00\x00\x01\xce"
    with pytest.raises(FrameError, match=r"^cannot decode <<0,0,0,1>>$") as caught:
        driver.feed(truncated)
    assert caught.value.reply_code == 501
    assert (caught.value.class_id, caught.value.method_id) == (60, 80)


@pytest.mark.parametrize(
    "arguments",
    [b"", b"\x00", b"\x00\x00", b"\x00\x00\x05ab", b"\x00\x00\x00", b"\x00\x00\x00\x02rk"],
    ids=repr,
)
def test_truncated_publish_is_frame_error(arguments: bytes) -> None:
    driver = opened()
    payload = b"\x00\x3c\x00\x28" + arguments
    # The next frame in the buffer must not be read as the missing arguments.
    wire = encode_frame(FRAME_METHOD, 1, payload)
    with pytest.raises(FrameError, match="^cannot decode <<") as caught:
        driver.feed(wire + frame(Basic.Qos(0, 1, False), 1))
    assert (caught.value.class_id, caught.value.method_id) == (60, 40)


# Arguments cut short by two or three octets: decoding them must fail inside the frame,
# whatever bytes the next frame puts after this one's frame-end octet.
SHORT_METHOD_PAYLOADS = {
    "basic.ack": struct.pack(">IQ", spec.BasicAck.INDEX, 5)[:-2],
    "basic.qos": struct.pack(">II", spec.BasicQos.INDEX, 0),
    "queue.declare": struct.pack(">IH", spec.QueueDeclare.INDEX, 0) + b"\x01q",
}


@pytest.mark.parametrize("feeding", ["whole", "byte-by-byte"])
@pytest.mark.parametrize("payload", SHORT_METHOD_PAYLOADS.values(), ids=SHORT_METHOD_PAYLOADS)
def test_method_arguments_are_never_read_from_the_next_frame(payload: bytes, feeding: str) -> None:
    wire = encode_frame(FRAME_METHOD, 1, payload) + frame(Basic.Qos(0, 1, False), 1)
    driver = opened()
    chunks = [wire] if feeding == "whole" else [bytes((octet,)) for octet in wire]
    with pytest.raises(FrameError, match="^cannot decode"):
        driver.feed_chunks(chunks)


def test_header_without_publish_is_unexpected_frame() -> None:
    driver = opened()
    header = frame(ContentHeader(body_size=1, properties=Basic.Properties()), 1)
    with pytest.raises(UnexpectedFrame, match="expected method frame") as caught:
        driver.feed(header)
    assert caught.value.reply_code == 505


def test_body_without_publish_is_unexpected_frame() -> None:
    driver = opened()
    with pytest.raises(UnexpectedFrame, match="expected method frame"):
        driver.feed(frame(ContentBody(b"x"), 1))


@pytest.mark.parametrize("kind", ["header", "body"])
def test_content_on_a_channel_never_opened_is_unexpected_frame(kind: str) -> None:
    driver = opened(channels=())
    content = (
        frame(ContentHeader(body_size=1, properties=Basic.Properties()), 3)
        if kind == "header"
        else frame(ContentBody(b"x"), 3)
    )
    with pytest.raises(UnexpectedFrame, match="^expected method frame, got non method frame"):
        driver.feed(content)


def test_a_large_frame_dribbled_byte_by_byte_arrives_whole() -> None:
    """Pieces are kept until the frame can be complete, not re-joined at every read."""
    driver = opened()
    body = bytes(range(256)) * 500  # one 128,000-byte body frame
    wire, expected = publish(1, body)
    events = []
    for index in range(len(wire)):
        events += driver.feed(wire[index : index + 1])
    assert events == [expected]


def test_body_without_header_is_unexpected_frame() -> None:
    driver = opened()
    driver.feed(frame(Basic.Publish(0, "", "rk"), 1))
    with pytest.raises(UnexpectedFrame, match="expected content header"):
        driver.feed(frame(ContentBody(b"x"), 1))


def test_second_header_is_unexpected_frame() -> None:
    driver = opened()
    method, header, _ = split_frames(publish(1, b"abc")[0])
    driver.feed(method + header)
    with pytest.raises(UnexpectedFrame, match="expected content body"):
        driver.feed(frame(ContentHeader(body_size=3, properties=Basic.Properties()), 1))


@pytest.mark.parametrize(
    "frames_before", [1, 2, 3], ids=["after-method", "after-header", "mid-body"]
)
def test_method_in_the_middle_of_content_is_unexpected_frame(frames_before: int) -> None:
    driver = opened()
    frames = split_frames(publish(1, b"abcdef", body_frame_bytes=3)[0])
    driver.feed(b"".join(frames[:frames_before]))
    with pytest.raises(UnexpectedFrame) as caught:
        driver.feed(frame(Basic.Qos(0, 1, False), 1))
    assert caught.value.reply_code == 505
    assert (caught.value.class_id, caught.value.method_id) == (60, 10)


def test_publish_in_the_middle_of_content_is_unexpected_frame() -> None:
    driver = opened()
    driver.feed(frame(Basic.Publish(0, "", "rk"), 1))
    with pytest.raises(UnexpectedFrame):
        driver.feed(frame(Basic.Publish(0, "", "rk"), 1))


def test_body_longer_than_announced_is_unexpected_frame() -> None:
    driver = opened()
    driver.feed(
        frame(Basic.Publish(0, "", "rk"), 1)
        + frame(ContentHeader(body_size=3, properties=Basic.Properties()), 1)
        + frame(ContentBody(b"ab"), 1)
    )
    with pytest.raises(UnexpectedFrame, match="exceeds the 3 announced"):
        driver.feed(frame(ContentBody(b"cd"), 1))


def test_content_frame_on_channel_zero_is_unexpected_frame() -> None:
    driver = opened()
    with pytest.raises(UnexpectedFrame):
        driver.feed(frame(ContentBody(b"x"), 0))


def test_message_above_message_bytes_max_fails_the_channel() -> None:
    limits = Limits(channel_max=16, frame_max=131_072, heartbeat_s=60, message_bytes_max=100)
    driver = opened(limits, channels=(1, 2))
    method, header, *bodies = split_frames(publish(1, b"x" * 101, body_frame_bytes=50)[0])
    conn = driver.conn
    [failed] = conn.receive_data(method + header)
    assert isinstance(failed, ChannelFailed)
    assert failed.channel == 1
    assert isinstance(failed.error, PreconditionFailed)
    assert failed.error.reply_code == 406
    assert failed.error.detail == "message size 101 is larger than configured max size 100"
    assert (failed.error.class_id, failed.error.method_id) == (60, 40)
    # The server closes the channel, as it does for its own channel errors; the body
    # frames still on their way are then discarded, and other channels go on.
    conn.close_channel(1, 406, failed.error.reply_text, 60, 40)
    assert driver.feed(b"".join(bodies)) == []
    exactly, exactly_event = publish(2, b"y" * 100)
    assert driver.feed(exactly) == [exactly_event]


def test_deeply_nested_arguments_fail_as_an_amqp_error() -> None:
    # 10,000 nested arrays in queue.declare's arguments fit in one 128 KiB frame. Decoding
    # them may succeed or fail, but a failure must be an AMQP error the server can report,
    # not an exception it can only log as an internal error.
    nested = b""
    for _ in range(10_000):
        nested = b"A" + len(nested).to_bytes(4, "big") + nested
    table = b"\x01k" + nested
    payload = (
        struct.pack(">IH", spec.QueueDeclare.INDEX, 0)
        + b"\x01q\x00"
        + len(table).to_bytes(4, "big")
        + table
    )
    driver = opened()
    with contextlib.suppress(ConnectionException):
        driver.feed(encode_frame(FRAME_METHOD, 1, payload))


# ---------------------------------------------------------------- framing errors


def test_frame_above_frame_max_is_frame_error_as_soon_as_its_header_arrives() -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER)
    # Only the 7-byte frame header: the size alone condemns it.
    too_big = b"\x01\x00\x00" + (131_072 + 1).to_bytes(4, "big")
    with pytest.raises(FrameError) as caught:
        driver.feed(too_big)
    assert caught.value.detail == "type 1, all octets = <<>>: {frame_too_large,131073,131064}"
    assert caught.value.reply_code == 501


def test_negotiated_frame_max_is_enforced() -> None:
    # As RabbitMQ, a payload of frame_max itself passes (8 octets over the spec's limit,
    # which some clients rely on); one octet more is a frame error.
    driver = opened(frame_max=4096)
    wire, event = publish(1, b"z" * 5000, body_frame_bytes=4096)
    assert driver.feed(wire) == [event]
    with pytest.raises(FrameError, match=r"\{frame_too_large,4097,4088\}$"):
        driver.feed(publish(1, b"z" * 5000, body_frame_bytes=4097)[0])


def test_bad_frame_end_is_frame_error() -> None:
    driver = opened()
    bad = frame(Basic.Qos(0, 1, False), 1)[:-1] + b"\x00"
    with pytest.raises(FrameError) as caught:
        driver.feed(bad)
    assert caught.value.reply_code == 501
    assert caught.value.detail == (
        "type 1, all octets = <<0,60,0,10,0,0,0,0,0,1,0>>: {invalid_frame_end_marker,0}"
    )


def test_heartbeat_on_a_channel_is_unexpected_frame() -> None:
    driver = opened()
    with pytest.raises(UnexpectedFrame, match=r"^type 8, all octets = <<>>$") as caught:
        driver.feed(b"\x08\x00\x01\x00\x00\x00\x00\xce")
    assert caught.value.reply_code == 505


def test_heartbeat_with_a_payload_is_frame_error() -> None:
    driver = opened()
    with pytest.raises(FrameError, match=r"^type 8, all octets = <<1>>: unknown_frame$"):
        driver.feed(b"\x08\x00\x00\x00\x00\x00\x01\x01\xce")


@pytest.mark.parametrize("channel", [0, 1])
def test_unknown_frame_type_is_frame_error(channel: int) -> None:
    driver = opened()
    with pytest.raises(FrameError, match=r"^type 9, all octets = <<>>: unknown_frame$"):
        driver.feed(encode_frame(9, channel, b""))


def test_method_frame_too_short_for_its_ids_is_frame_error() -> None:
    driver = opened()
    with pytest.raises(FrameError, match=r"^type 1, all octets = <<0,60>>: unknown_frame$"):
        driver.feed(encode_frame(FRAME_METHOD, 1, b"\x00\x3c"))


def test_unknown_method_is_command_invalid() -> None:
    driver = opened()
    with pytest.raises(CommandInvalid, match="unknown method 60.99"):
        driver.feed(b"\x01\x00\x01\x00\x00\x00\x04\x00\x3c\x00\x63\xce")


# ---------------------------------------------------------------- connection close


def test_close_by_the_client() -> None:
    driver = opened()
    events = driver.feed(frame(Connection.Close(200, "bye", 0, 0)) + frame(Basic.Ack(1, False), 1))
    assert events == [CloseRequested(200, "bye")]
    assert names(driver.sent()) == [(0, "Connection.CloseOk")]
    assert driver.conn.closed
    assert driver.conn.open_channel_count == 0
    assert driver.feed(frame(Basic.Ack(2, False), 1)) == []
    assert driver.sent() == []


def test_after_close_with_only_close_and_close_ok_count() -> None:
    driver = opened(channels=(1, 2))
    driver.feed(frame(Basic.Publish(0, "", "rk"), 1))  # content in progress
    driver.conn.close(UnexpectedFrame("expected content header", 60, 40))
    [(channel, close)] = driver.sent()
    assert channel == 0
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        505,
        "UNEXPECTED_FRAME - expected content header",
        60,
        40,
    )
    assert driver.conn.phase is Phase.CLOSING
    ignored = (
        frame(ContentHeader(body_size=1, properties=Basic.Properties()), 1)
        + frame(ContentBody(b"x"), 1)
        + frame(Basic.Ack(1, False), 2)
        + publish(2, b"abc")[0]
        + frame(Basic.Qos(0, 1, False), 2)
        + frame(Channel.Open(), 3)
        + frame(Channel.Close(200, "", 0, 0), 2)
        + frame(Connection.Open(), 0)
        + frame(ContentBody(b"x"), 0)
        + Heartbeat().marshal()
    )
    assert driver.feed(ignored) == []
    assert driver.sent() == []
    driver.conn.close_with(320, "again")  # no second close
    assert driver.sent() == []
    # A crossed close is answered; close-ok ends the connection.
    assert driver.feed(frame(Connection.Close(200, "", 0, 0))) == []
    assert names(driver.sent()) == [(0, "Connection.CloseOk")]
    assert not driver.conn.closed
    assert driver.feed(frame(Connection.CloseOk()) + frame(Basic.Ack(1, False), 1)) == [
        CloseCompleted()
    ]
    assert driver.conn.closed
    assert driver.feed(frame(Connection.Close(200, "", 0, 0))) == []
    assert driver.sent() == []


def test_abandon_stops_reading() -> None:
    driver = opened()
    driver.conn.abandon()
    assert driver.conn.closed
    assert driver.feed(frame(Basic.Ack(1, False), 1)) == []


# ---------------------------------------------------------------- splitting never matters

SESSION_LIMITS = LIMITS
exchange_names = st.text("abcXYZ0189-_.:@#,/+ ", max_size=20)
routing_keys = st.text(max_size=20)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """A whole client session and the events it must produce, in order."""
    # 0 takes the server's 128 KiB; bodies around the frame size are drawn only for 4096,
    # so that feeding byte by byte stays cheap.
    frame_max = draw(st.sampled_from([0, 4096]))
    body_frame_bytes_max = (frame_max or SESSION_LIMITS.frame_max) - FRAME_OVERHEAD_BYTES
    channel_max = draw(st.sampled_from([0, 3, 16]))
    heartbeat = draw(st.integers(0, 600))
    wire = [PROTOCOL_HEADER, start_ok(), tune_ok(channel_max, frame_max, heartbeat), OPEN]
    expected: list[Any] = [
        LOGIN,
        Tuned(
            channel_max or SESSION_LIMITS.channel_max,
            frame_max or SESSION_LIMITS.frame_max,
            heartbeat,
        ),
        OpenRequested("/"),
    ]
    channels = draw(
        st.lists(
            st.integers(1, channel_max or SESSION_LIMITS.channel_max),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    for channel in channels:
        wire.append(channel_open(channel))
        expected.append(ChannelOpened(channel))

    def draw_publish(channel: int) -> tuple[bytes, tuple[Any, ...]]:
        if frame_max == 0 or draw(st.booleans()):
            body = draw(st.binary(max_size=200))
        else:  # around the frame size, so it needs splitting
            size = draw(st.integers(body_frame_bytes_max - 1, body_frame_bytes_max + 1))
            body = bytes([draw(st.integers(0, 255))]) * size
        step = draw(st.integers(1, min(body_frame_bytes_max, max(len(body), 1))))
        return publish(
            channel,
            body,
            exchange=draw(exchange_names),
            routing_key=draw(routing_keys),
            mandatory=draw(st.booleans()),
            immediate=draw(st.booleans()),
            body_frame_bytes=step,
            properties=Basic.Properties(
                content_type=draw(st.none() | st.just("text/plain")),
                headers=draw(
                    st.none()
                    | st.dictionaries(st.text(max_size=4), st.integers(-(2**63), 2**63 - 1))
                ),
            ),
        )

    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["publish", "interleaved", "ack", "qos", "heartbeat"]))
        channel = draw(st.sampled_from(channels))
        if kind == "publish":
            publish_wire, event = draw_publish(channel)
            # Heartbeats may come between a message's frames.
            frames = split_frames(publish_wire)
            for _ in range(draw(st.integers(0, 2))):
                frames.insert(draw(st.integers(1, len(frames))), Heartbeat().marshal())
            wire.append(b"".join(frames))
            expected.append(event)
        elif kind == "interleaved" and len(channels) > 1:
            other = draw(st.sampled_from([c for c in channels if c != channel]))
            first, first_event = draw_publish(channel)
            second, second_event = draw_publish(other)
            method, *content = split_frames(first)
            wire.append(method + second + b"".join(content))
            expected += [second_event, first_event]
        elif kind == "ack":
            tag, multiple = draw(st.integers(0, 2**63 - 1)), draw(st.booleans())
            wire.append(frame(Basic.Ack(tag, multiple), channel))
            expected.append(("Ack", channel, tag, multiple))
        elif kind == "qos":
            count = draw(st.integers(0, 0xFFFF))
            wire.append(frame(Basic.Qos(0, count, False), channel))
            expected.append(MethodReceived(channel, spec.BasicQos(0, count, False)))
        elif kind == "heartbeat":
            wire.append(Heartbeat().marshal())

    for channel in draw(st.lists(st.sampled_from(channels), unique=True)):
        wire.append(frame(Channel.Close(200, "", 0, 0), channel))
        expected.append(ChannelClosed(channel, True))
    wire.append(frame(Connection.Close(200, "bye", 0, 0)))
    expected.append(CloseRequested(200, "bye"))
    wire.append(draw(st.binary(max_size=16)))  # whatever follows close is never read
    return b"".join(wire), expected


def run(wire: bytes, split_points: Iterable[int]) -> tuple[list[Any], bytes]:
    driver = Driver(SESSION_LIMITS)
    points = [0, *sorted(set(split_points)), len(wire)]
    events = driver.feed_chunks(wire[start:end] for start, end in itertools.pairwise(points))
    return events, driver.output


@settings(max_examples=100, deadline=None)
@given(session=sessions(), data=st.data())
def test_chunk_size_never_changes_events_or_output(
    session: tuple[bytes, list[Any]], data: st.DataObject
) -> None:
    wire, expected = session
    chunk_size = data.draw(st.integers(1, len(wire)), label="chunk_size")
    whole_events, whole_output = run(wire, [])
    assert whole_events == expected
    chunked_events, chunked_output = run(wire, range(chunk_size, len(wire), chunk_size))
    assert chunked_events == whole_events
    assert chunked_output == whole_output


@settings(max_examples=50, deadline=None)
@given(session=sessions(), data=st.data())
def test_arbitrary_split_points_never_change_events_or_output(
    session: tuple[bytes, list[Any]], data: st.DataObject
) -> None:
    wire, expected = session
    points = data.draw(st.lists(st.integers(0, len(wire)), max_size=40), label="split_points")
    events, output = run(wire, points)
    assert events == expected
    assert output == run(wire, [])[1]


def test_byte_by_byte_session() -> None:
    body = bytes(range(256)) * 20
    wire = b"".join(
        [
            PROTOCOL_HEADER,
            start_ok(),
            tune_ok(0, 4096, 0),
            OPEN,
            channel_open(1),
            channel_open(2),
            publish(1, body, body_frame_bytes=4088)[0],
            publish(2, b"")[0],
            frame(Basic.Ack(9, True), 1),
            Heartbeat().marshal(),
            frame(Channel.Close(200, "", 0, 0), 2),
            frame(Connection.Close(200, "bye", 0, 0)),
        ]
    )
    whole_events, whole_output = run(wire, [])
    events, output = run(wire, range(1, len(wire)))
    assert events == whole_events
    assert output == whole_output
    assert [event[0] if isinstance(event, tuple) else type(event).__name__ for event in events] == [
        "LoginRequested",
        "Tuned",
        "OpenRequested",
        "ChannelOpened",
        "ChannelOpened",
        "Publish",
        "Publish",
        "Ack",
        "ChannelClosed",
        "CloseRequested",
    ]
    assert names(parse(output)) == [
        (0, "Connection.Start"),
        (0, "Connection.Tune"),
        (0, "Connection.OpenOk"),
        (1, "Channel.OpenOk"),
        (2, "Channel.OpenOk"),
        (2, "Channel.CloseOk"),
        (0, "Connection.CloseOk"),
    ]
