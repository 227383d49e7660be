"""One AMQP 0-9-1 connection as a sans-IO state machine: bytes in, events out, bytes back.

Owns the protocol header check, framing and frame_max, the channel-0 handshake as a table
of legal transitions, channel numbers (open, closing, channel_max), content assembly per
channel (method, header, body frames) and the encoders for what the broker sends back.

`receive_data` is a generator: it parses one frame at a time and yields events, so a
caller that closes a channel or the connection while handling an event changes how the
very next frame is treated (RabbitMQ discards everything but close/close-ok after it
closes a channel). Every complete frame in the buffer is parsed before the generator ends;
nothing waits on a socket. Output accumulates until `data_to_send` takes it in one piece.

Sans-IO; imports amqpd.codec, amqpd.errors and protocol.* only; never anyio, broker or
store.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import attrs

from amqpd.codec.fields import FieldTable
from amqpd.codec.properties import BASIC_CLASS_ID
from amqpd.errors import (
    ChannelError,
    CommandInvalid,
    ConnectionException,
    FrameError,
    LoginRefused,
    NotAllowed,
    PreconditionFailed,
    UnexpectedFrame,
    erlang_binary,
)
from amqpd.protocol import spec
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
from amqpd.protocol.fast_codec import (
    ACK_INDEX,
    ACK_PAYLOAD_BYTES,
    PUBLISH_INDEX,
    decode_ack,
    decode_route,
    split_publish,
)
from amqpd.protocol.frames import (
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEADER_BYTES,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    FRAME_OVERHEAD_BYTES,
    HEADER_STRUCT,
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    append_content,
    method_frame,
)
from amqpd.protocol.methods import decode_method
from amqpd.protocol.sasl import MECHANISMS, decode_response

_U32: Final = struct.Struct(">I")
# A header frame's 7-byte frame header and its content header's class, weight, body size.
_HEADER_FRAME_START: Final = struct.Struct(">BHIHHQ")
_CONTENT_HEADER_PREFIX_BYTES: Final = 12
ROUTE_CACHE_ENTRIES_MAX: Final = 1024  # decoded (exchange, routing key) pairs per connection
_U64: Final = struct.Struct(">Q")
_BODY_SIZE_OFFSET: Final = 4  # in a content header payload: class_id u16, weight u16
_CONTENT_HEADER_MIN_BYTES: Final = 14  # class, weight, body size, one flag word


class Phase(enum.Enum):
    AWAITING_PROTOCOL_HEADER = "awaiting protocol header"
    AWAITING_START_OK = "starting"
    AWAITING_LOGIN_DECISION = "authenticating"
    AWAITING_TUNE_OK = "tuning"
    AWAITING_OPEN = "opening"
    AWAITING_OPEN_DECISION = "opening"
    OPEN = "running"
    CLOSING = "closing"
    CLOSED = "closed"


# Every legal channel-0 method per phase, and the phase it leads to. Anything else on
# channel 0 is a connection error.
CHANNEL_ZERO_TRANSITIONS: Final[dict[tuple[Phase, type[spec.Method]], Phase]] = {
    (Phase.AWAITING_START_OK, spec.ConnectionStartOk): Phase.AWAITING_LOGIN_DECISION,
    (Phase.AWAITING_TUNE_OK, spec.ConnectionTuneOk): Phase.AWAITING_OPEN,
    (Phase.AWAITING_OPEN, spec.ConnectionOpen): Phase.AWAITING_OPEN_DECISION,
    (Phase.AWAITING_TUNE_OK, spec.ConnectionClose): Phase.CLOSED,
    (Phase.AWAITING_OPEN, spec.ConnectionClose): Phase.CLOSED,
    (Phase.OPEN, spec.ConnectionClose): Phase.CLOSED,
    (Phase.CLOSING, spec.ConnectionClose): Phase.CLOSING,  # crossed closes
    (Phase.CLOSING, spec.ConnectionCloseOk): Phase.CLOSED,
}

# 0-9-1, and the header some 0-9 clients send, which RabbitMQ also answers with 0-9-1.
ACCEPTED_PROTOCOL_HEADERS: Final = (PROTOCOL_HEADER, b"AMQP\x01\x01\x00\x09")

# Before connection.tune-ok completes, RabbitMQ does not trust the peer with a reason:
# errors in these phases close the socket without a close frame (after a delay).
SILENT_ERROR_PHASES: Final = frozenset(
    {Phase.AWAITING_START_OK, Phase.AWAITING_LOGIN_DECISION, Phase.AWAITING_TUNE_OK}
)

# The methods a client sends on channel 0 once the connection runs, besides close.
_PASSED_ON_CHANNEL_ZERO: Final = (spec.ConnectionUpdateSecret,)


@attrs.frozen
class Limits:
    """What this side offers in connection.tune, and the largest message it accepts."""

    channel_max: int = 2047
    frame_max: int = 131_072
    heartbeat_s: int = 60
    message_bytes_max: int = 134_217_728


class _Channel:
    """A channel number in use: open, or closing after we sent channel.close."""

    __slots__ = ("body_parts", "body_received", "body_size", "closing", "publish")

    def __init__(self) -> None:
        self.closing = False
        self.publish: Publish | None = None  # a publish waiting for its header or body
        self.body_size = -1  # -1: the header has not arrived yet
        self.body_received = 0
        self.body_parts: list[bytes] = []

    def reset_content(self) -> None:
        self.publish = None
        self.body_size = -1
        self.body_received = 0
        self.body_parts = []


class ProtocolConnection:
    """The server side of one connection, without I/O."""

    def __init__(
        self,
        limits: Limits,
        server_properties: FieldTable,
        mechanisms: Sequence[str] = MECHANISMS,
    ) -> None:
        self.limits = limits
        # The SASL mechanisms offered in connection.start; the transport decides them
        # (EXTERNAL only where the TLS layer verifies client certificates).
        self.mechanisms = tuple(mechanisms)
        self.phase = Phase.AWAITING_PROTOCOL_HEADER
        self._server_properties = server_properties
        self._pending: list[bytes] = []  # an incomplete frame, in the pieces received
        self._pending_bytes = 0
        self._needed_bytes = 0
        self._channels: dict[int, _Channel] = {}
        self._out: list[bytes] = []
        # Before tune-ok the peer is held to our own frame_max.
        self.frame_max = limits.frame_max
        self.channel_max = limits.channel_max
        self.heartbeat_s = 0
        self.client_properties: FieldTable = {}
        self.capabilities: FieldTable = {}
        self._body_frame_bytes_max = limits.frame_max - FRAME_OVERHEAD_BYTES
        self._routes: dict[bytes, tuple[str, str, bytes]] = {}
        # Asked before a channel opens: a reason to refuse it (530, the connection
        # closes), as RabbitMQ's per-user channel limit does; None lets it open.
        self.may_open_channel: Callable[[], str | None] | None = None

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> Iterator[Event]:
        """Parse every complete frame now buffered, yielding events one by one."""
        if self.phase is Phase.CLOSED:
            return
        if self._pending:
            # Pieces of an incomplete frame are joined once the frame can be complete,
            # not at every read: a peer dribbling bytes costs linear time, not quadratic.
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes < self._needed_bytes:
                return
            buffer = b"".join(self._pending)
            self._pending.clear()
        else:
            buffer = data
        position = 0
        if self.phase is Phase.AWAITING_PROTOCOL_HEADER:
            event = self._check_protocol_header(buffer)
            if event is not None:
                yield event
                return
            if self.phase is Phase.AWAITING_PROTOCOL_HEADER:
                self._keep(buffer, len(PROTOCOL_HEADER))  # fewer than 8 bytes so far
                return
            position = len(PROTOCOL_HEADER)
        keep_rest = True  # False once framing is lost: nothing after it can be trusted
        channels = self._channels
        unpack_index = _U32.unpack_from
        unpack_header = HEADER_STRUCT.unpack_from
        unpack_content = _HEADER_FRAME_START.unpack_from
        message_bytes_max = self.limits.message_bytes_max
        try:
            while len(buffer) - position >= FRAME_HEADER_BYTES:
                frame_type, channel_id, size = unpack_header(buffer, position)
                # RabbitMQ accepts payloads up to frame_max itself (8 bytes more than the
                # spec allows, which some clients rely on) and names frame_max - 8.
                if size > self.frame_max:
                    keep_rest = False
                    raise FrameError(
                        f"type {frame_type}, all octets = <<>>: "
                        f"{{frame_too_large,{size},{self.frame_max - FRAME_OVERHEAD_BYTES}}}"
                    )
                start = position + FRAME_HEADER_BYTES
                end = start + size
                if end >= len(buffer):
                    break  # incomplete: wait for the rest and the frame-end octet
                if buffer[end] != FRAME_END:
                    keep_rest = False
                    raise FrameError(
                        f"type {frame_type}, all octets = {erlang_binary(buffer[start:end])}: "
                        f"{{invalid_frame_end_marker,{buffer[end]}}}"
                    )
                position = end + 1
                # The frames every message crosses are handled inline; the rest (and
                # every error case) go through _frame. A channel in _channels implies
                # the connection is open (closing clears them).
                channel = channels.get(channel_id) if channel_id else None
                if channel is not None and not channel.closing:
                    publish = channel.publish
                    if frame_type == FRAME_BODY:
                        if (
                            publish is not None
                            and end - start == channel.body_size
                            and not channel.body_parts
                        ):
                            publish.body = buffer[start:end]
                            channel.publish = None
                            channel.body_size = -1
                            yield publish
                            continue
                    elif frame_type == FRAME_METHOD and publish is None and end - start >= 4:
                        index = unpack_index(buffer, start)[0]
                        if index == PUBLISH_INDEX:
                            publish = self._publish(channel_id, buffer, start, end)
                            # Look ahead: when the content header and a single body frame
                            # are here too and regular, take all three in one step. Any
                            # irregularity leaves them to the general path, which reports
                            # errors exactly as frame by frame.
                            header_at = position + FRAME_HEADER_BYTES
                            if len(buffer) >= header_at + _CONTENT_HEADER_PREFIX_BYTES:
                                kind, number, size, class_id, _, body_size = unpack_content(
                                    buffer, position
                                )
                                header_end = header_at + size
                                if (
                                    kind == FRAME_HEADER
                                    and number == channel_id
                                    and class_id == BASIC_CLASS_ID
                                    and _CONTENT_HEADER_MIN_BYTES <= size <= self.frame_max
                                    and header_end < len(buffer)
                                    and buffer[header_end] == FRAME_END
                                    and body_size <= message_bytes_max
                                ):
                                    if body_size == 0:
                                        publish.header = buffer[header_at:header_end]
                                        position = header_end + 1
                                        yield publish
                                        continue
                                    body_at = header_end + 1 + FRAME_HEADER_BYTES
                                    if len(buffer) >= body_at:
                                        kind, number, size = unpack_header(buffer, header_end + 1)
                                        body_end = body_at + size
                                        if (
                                            kind == FRAME_BODY
                                            and number == channel_id
                                            and size == body_size
                                            and body_end < len(buffer)
                                            and buffer[body_end] == FRAME_END
                                        ):
                                            publish.header = buffer[header_at:header_end]
                                            publish.body = buffer[body_at:body_end]
                                            position = body_end + 1
                                            yield publish
                                            continue
                            channel.publish = publish
                            continue
                        if index == ACK_INDEX and end - start == ACK_PAYLOAD_BYTES:
                            tag, multiple = decode_ack(buffer, start + 4)
                            yield Ack(channel_id, tag, multiple)
                            continue
                event = self._frame(frame_type, channel_id, buffer, start, end)
                if event is not None:
                    yield event
                    if self.closed:
                        keep_rest = False
                        return
        finally:
            if keep_rest and position < len(buffer):
                rest = buffer[position:]
                needed = FRAME_HEADER_BYTES
                if len(rest) >= FRAME_HEADER_BYTES:
                    needed += HEADER_STRUCT.unpack_from(rest)[2] + 1  # payload + frame-end
                self._keep(rest, needed)

    def _keep(self, rest: bytes, needed_bytes: int) -> None:
        """Hold an incomplete frame until `needed_bytes` have arrived in all."""
        self._pending = [rest]
        self._pending_bytes = len(rest)
        self._needed_bytes = needed_bytes

    def _frame(
        self, frame_type: int, channel_id: int, buffer: bytes, start: int, end: int
    ) -> Event | None:
        """Handle one complete frame; return the event it completes, if any."""
        if channel_id == 0:
            return self._channel_zero_frame(frame_type, buffer, start, end)
        channel = self._channels.get(channel_id)
        if frame_type == FRAME_METHOD:
            if end - start < 4:
                raise _unknown_frame(frame_type, buffer[start:end])
            (index,) = _U32.unpack_from(buffer, start)
            if channel is None or self.phase is not Phase.OPEN:
                return self._unopened_channel_method(channel_id, index, buffer, start, end)
            if channel.closing:
                return self._closing_channel_method(channel_id, index)
            if channel.publish is not None:
                raise UnexpectedFrame(
                    "expected content header for class 60, got non content header frame instead"
                    if channel.body_size < 0
                    else "expected content body, got non content body frame instead",
                    *divmod(index, 0x10000),
                )
            if index == PUBLISH_INDEX:
                channel.publish = self._publish(channel_id, buffer, start, end)
                return None
            if index == ACK_INDEX:
                if end - start != ACK_PAYLOAD_BYTES:
                    raise FrameError(
                        f"cannot decode {erlang_binary(buffer[start + 4 : end])}", 60, 80
                    )
                tag, multiple = decode_ack(buffer, start + 4)
                return Ack(channel_id, tag, multiple)
            return self._channel_method(channel_id, buffer, start, end)
        if frame_type in (FRAME_HEADER, FRAME_BODY):
            if channel is None:
                if self.phase in (Phase.CLOSING, Phase.CLOSED):
                    return None  # after connection.close only close/close-ok count
                if self.phase is not Phase.OPEN:
                    octets = erlang_binary(buffer[start:end])
                    raise UnexpectedFrame(f"type {frame_type}, all octets = {octets}")
                raise UnexpectedFrame("expected method frame, got non method frame instead")
            if channel.closing:
                return None  # content for a channel we are closing: discarded
            if frame_type == FRAME_HEADER:
                return self._content_header(channel_id, channel, buffer, start, end)
            return self._content_body(channel, buffer, start, end)
        if frame_type == FRAME_HEARTBEAT:
            raise UnexpectedFrame(f"type 8, all octets = {erlang_binary(buffer[start:end])}")
        raise _unknown_frame(frame_type, buffer[start:end])

    def _publish(self, channel_id: int, buffer: bytes, start: int, end: int) -> Publish:
        """The publish a method frame starts; its header and body follow."""
        try:
            route, mandatory, immediate = split_publish(buffer, start + 4, end)
        except IndexError as error:
            raise FrameError(
                f"cannot decode {erlang_binary(buffer[start + 4 : end])}", 60, 40
            ) from error
        # Publishers repeat the same exchange and routing key: decode each pair once.
        cache = self._routes
        decoded = cache.get(route)
        if decoded is None:
            if len(cache) >= ROUTE_CACHE_ENTRIES_MAX:
                cache.clear()
            decoded = cache[route] = (*decode_route(route), route)
        exchange, routing_key, route = decoded
        return Publish(channel_id, exchange, routing_key, mandatory, immediate, route)

    def _check_protocol_header(self, buffer: bytes) -> Event | None:
        if len(buffer) < len(PROTOCOL_HEADER):
            return None  # as RabbitMQ: judge all 8 bytes, however they arrive
        received = buffer[: len(PROTOCOL_HEADER)]
        if received not in ACCEPTED_PROTOCOL_HEADERS:
            return self._reject_protocol_header(received)
        self.phase = Phase.AWAITING_START_OK
        self._send_method(
            0,
            spec.ConnectionStart(
                version_major=0,
                version_minor=9,
                server_properties=self._server_properties,
                mechanisms=" ".join(self.mechanisms).encode(),
                locales=b"en_US",
            ),
        )
        return None

    def _reject_protocol_header(self, received: bytes) -> Event:
        self._out.append(PROTOCOL_HEADER)
        self.phase = Phase.CLOSED
        return BadProtocolHeader(received)

    def _channel_zero_frame(
        self, frame_type: int, buffer: bytes, start: int, end: int
    ) -> Event | None:
        if frame_type == FRAME_HEARTBEAT:
            if end != start:
                raise _unknown_frame(frame_type, buffer[start:end])
            return None
        if frame_type != FRAME_METHOD:
            if self.phase is Phase.CLOSING:
                return None
            if frame_type in (FRAME_HEADER, FRAME_BODY):
                raise UnexpectedFrame("expected method frame, got non method frame instead")
            raise _unknown_frame(frame_type, buffer[start:end])
        if end - start < 4:
            raise _unknown_frame(frame_type, buffer[start:end])
        method = decode_method(buffer, start, end)
        next_phase = CHANNEL_ZERO_TRANSITIONS.get((self.phase, type(method)))
        event: Event | None = None
        if next_phase is None:
            if self.phase is Phase.CLOSING:
                return None  # after our close only close and close-ok count
            if self.phase is Phase.OPEN and isinstance(method, _PASSED_ON_CHANNEL_ZERO):
                return MethodReceived(0, method)
            raise ChannelError(
                f"unexpected method in connection state {self.phase.value}",
                method.CLASS_ID,
                method.METHOD_ID,
            )
        # The phase moves only once the method is accepted: an error while handling it
        # is reported from the phase it arrived in.
        if isinstance(method, spec.ConnectionStartOk):
            event = self._start_ok(method)
        elif isinstance(method, spec.ConnectionTuneOk):
            event = self._tune_ok(method)
        elif isinstance(method, spec.ConnectionOpen):
            event = OpenRequested(method.virtual_host)
        elif isinstance(method, spec.ConnectionClose):
            self._send_method(0, spec.ConnectionCloseOk())
            self._channels.clear()
            if next_phase is Phase.CLOSED:
                event = CloseRequested(method.reply_code, method.reply_text)
        else:  # connection.close-ok answering ours
            self._channels.clear()
            event = CloseCompleted()
        self.phase = next_phase
        return event

    def _start_ok(self, method: spec.ConnectionStartOk) -> Event:
        self.client_properties = method.client_properties
        capabilities = method.client_properties.get("capabilities")
        self.capabilities = capabilities if isinstance(capabilities, dict) else {}
        if method.mechanism not in self.mechanisms:
            raise LoginRefused(f"unsupported authentication mechanism '{method.mechanism}'")
        credentials = decode_response(method.mechanism, method.response)
        return LoginRequested(
            mechanism=method.mechanism,
            username=credentials.username,
            password=credentials.password,
            client_properties=method.client_properties,
            locale=method.locale,
        )

    def _tune_ok(self, method: spec.ConnectionTuneOk) -> Event:
        limits = self.limits
        frame_max = method.frame_max
        if frame_max == 0:
            frame_max = limits.frame_max  # 0 means "no limit" from the peer: ours applies
        if frame_max < FRAME_MIN_SIZE:
            raise NotAllowed(f"frame_max={method.frame_max} < {FRAME_MIN_SIZE} min size", 10, 31)
        if frame_max > limits.frame_max:
            raise NotAllowed(f"frame_max={method.frame_max} > {limits.frame_max} max size", 10, 31)
        channel_max = method.channel_max or limits.channel_max
        if channel_max > limits.channel_max:
            raise NotAllowed(
                f"channel_max={method.channel_max} > {limits.channel_max} max channels", 10, 31
            )
        self.frame_max = frame_max
        self._body_frame_bytes_max = frame_max - FRAME_OVERHEAD_BYTES
        self.channel_max = channel_max
        self.heartbeat_s = method.heartbeat
        return Tuned(channel_max=channel_max, frame_max=frame_max, heartbeat_s=method.heartbeat)

    def _unopened_channel_method(
        self, channel_id: int, index: int, buffer: bytes, start: int, end: int
    ) -> Event | None:
        if self.phase is Phase.CLOSING:
            return None
        if self.phase is not Phase.OPEN:
            raise CommandInvalid(
                f"unexpected method on channel {channel_id} in connection state {self.phase.value}",
                *divmod(index, 0x10000),
            )
        if index != spec.ChannelOpen.INDEX:
            raise ChannelError("expected 'channel.open'", *divmod(index, 0x10000))
        if len(self._channels) >= self.channel_max:
            # RabbitMQ counts open channels against channel_max (any number 1-65535 is
            # a valid channel id); so does amqpd, with RabbitMQ's text.
            raise NotAllowed(
                f"number of channels opened ({len(self._channels)}) has reached the "
                f"negotiated channel_max ({self.channel_max})"
            )
        decode_method(buffer, start, end)  # validates the (empty) arguments
        if self.may_open_channel is not None:
            refusal = self.may_open_channel()
            if refusal is not None:
                raise NotAllowed(refusal, *divmod(index, 0x10000))
        self._channels[channel_id] = _Channel()
        self._send_method(channel_id, spec.ChannelOpenOk())
        return ChannelOpened(channel_id)

    def _closing_channel_method(self, channel_id: int, index: int) -> Event | None:
        if index == spec.ChannelCloseOk.INDEX:
            del self._channels[channel_id]
            return ChannelClosed(channel_id, by_peer=False)
        if index == spec.ChannelOpen.INDEX:
            raise ChannelError("second 'channel.open' seen", 20, 10)
        if index == spec.ChannelClose.INDEX:
            # Both sides closed at once: answer, and the channel is done.
            self._send_method(channel_id, spec.ChannelCloseOk())
            del self._channels[channel_id]
            return ChannelClosed(channel_id, by_peer=False)
        return None  # everything else on a channel we are closing is discarded

    def _channel_method(self, channel_id: int, buffer: bytes, start: int, end: int) -> Event | None:
        method = decode_method(buffer, start, end)
        if isinstance(method, spec.ChannelOpen):
            raise ChannelError("second 'channel.open' seen", 20, 10)
        if isinstance(method, spec.ChannelClose):
            self._send_method(channel_id, spec.ChannelCloseOk())
            del self._channels[channel_id]
            return ChannelClosed(channel_id, by_peer=True)
        if method.HAS_CONTENT:
            raise CommandInvalid(f"{method.NAME} cannot be sent by a client", *_ids(method))
        return MethodReceived(channel_id, method)

    def _content_header(
        self, channel_id: int, channel: _Channel, buffer: bytes, start: int, end: int
    ) -> Event | None:
        publish = channel.publish
        if publish is None or channel.body_size >= 0:
            raise UnexpectedFrame(
                "expected method frame, got non method frame instead"
                if publish is None
                else "expected content body, got non content body frame instead"
            )
        if end - start < _CONTENT_HEADER_MIN_BYTES:
            raise FrameError(f"cannot decode {erlang_binary(buffer[start:end])}", 60, 40)
        class_id = buffer[start] << 8 | buffer[start + 1]
        if class_id != BASIC_CLASS_ID:
            raise UnexpectedFrame(
                f"expected content header for class 60, got one for class {class_id} instead",
                60,
                40,
            )
        (body_size,) = _U64.unpack_from(buffer, start + _BODY_SIZE_OFFSET)
        if body_size > self.limits.message_bytes_max:
            channel.reset_content()
            return ChannelFailed(
                channel_id,
                PreconditionFailed(
                    f"message size {body_size} is larger than configured max size "
                    f"{self.limits.message_bytes_max}",
                    60,
                    40,
                ),
            )
        publish.header = buffer[start:end]
        if body_size == 0:
            channel.publish = None
            return publish
        channel.body_size = body_size
        return None

    def _content_body(self, channel: _Channel, buffer: bytes, start: int, end: int) -> Event | None:
        publish = channel.publish
        if publish is None or channel.body_size < 0:
            raise UnexpectedFrame(
                "expected method frame, got non method frame instead"
                if publish is None
                else "expected content header for class 60, got non content header frame instead"
            )
        received = channel.body_received + end - start
        if received > channel.body_size:
            raise UnexpectedFrame(
                f"content body of {received} bytes exceeds the {channel.body_size} announced "
                "in its header",
                60,
                40,
            )
        if received == channel.body_size and not channel.body_parts:
            publish.body = buffer[start:end]
            channel.publish = None
            channel.body_size = -1
            channel.body_received = 0
            return publish
        channel.body_parts.append(buffer[start:end])
        channel.body_received = received
        if received < channel.body_size:
            return None
        publish.body = b"".join(channel.body_parts)
        channel.reset_content()
        return publish

    # ----------------------------------------------------------------- output

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one piece for one write."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out)

    @property
    def out(self) -> list[bytes]:
        """The outbound list, for the fast encoders that append frames in place."""
        return self._out

    @property
    def body_frame_bytes_max(self) -> int:
        return self._body_frame_bytes_max

    def _send_method(self, channel_id: int, method: spec.Method) -> None:
        self._out.append(method_frame(channel_id, method))

    def send_method(self, channel_id: int, method: spec.Method) -> None:
        """Queue a method without content (replies, cancel notifications, flow)."""
        self._out.append(method_frame(channel_id, method))

    def send_content(
        self, channel_id: int, method: spec.Method, header: bytes, body: bytes
    ) -> None:
        """Queue a method with content (basic.return, and the slow paths of deliveries)."""
        self._out.append(method_frame(channel_id, method))
        append_content(self._out, channel_id, header, body, self._body_frame_bytes_max)

    def send_heartbeat(self) -> None:
        self._out.append(HEARTBEAT_FRAME)

    def accept_login(self) -> None:
        assert self.phase is Phase.AWAITING_LOGIN_DECISION, self.phase
        self.phase = Phase.AWAITING_TUNE_OK
        limits = self.limits
        self._send_method(
            0,
            spec.ConnectionTune(
                channel_max=limits.channel_max,
                frame_max=limits.frame_max,
                heartbeat=limits.heartbeat_s,
            ),
        )

    def accept_open(self) -> None:
        assert self.phase is Phase.AWAITING_OPEN_DECISION, self.phase
        self.phase = Phase.OPEN
        self._send_method(0, spec.ConnectionOpenOk())

    def close(self, error: ConnectionException) -> None:
        """Send connection.close for `error`; afterwards only close/close-ok are read."""
        self.close_with(error.reply_code, error.reply_text, error.class_id, error.method_id)

    def close_with(self, reply_code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        self.phase = Phase.CLOSING
        self._channels.clear()
        self._send_method(
            0,
            spec.ConnectionClose(
                reply_code=reply_code,
                reply_text=text,
                class_id=class_id,
                method_id=method_id,
            ),
        )

    def abandon(self) -> None:
        """Stop without a close handshake (what RabbitMQ does after some login failures)."""
        self.phase = Phase.CLOSED
        self._channels.clear()

    def close_channel(
        self, channel_id: int, reply_code: int, text: str, class_id: int, method_id: int
    ) -> None:
        """Send channel.close; until close-ok the channel's other frames are discarded."""
        channel = self._channels.get(channel_id)
        if channel is None or channel.closing:
            return
        channel.closing = True
        channel.reset_content()
        self._send_method(
            channel_id,
            spec.ChannelClose(
                reply_code=reply_code, reply_text=text, class_id=class_id, method_id=method_id
            ),
        )

    @property
    def closed(self) -> bool:
        """Nothing more will be read or answered: the socket can go once output is sent."""
        return self.phase is Phase.CLOSED

    def is_channel_open(self, channel_id: int) -> bool:
        channel = self._channels.get(channel_id)
        return channel is not None and not channel.closing

    @property
    def open_channel_count(self) -> int:
        return len(self._channels)

    def has_capability(self, name: str) -> bool:
        return self.capabilities.get(name) is True


def _unknown_frame(frame_type: int, payload: bytes) -> FrameError:
    return FrameError(f"type {frame_type}, all octets = {erlang_binary(payload)}: unknown_frame")


def _ids(method: spec.Method) -> tuple[int, int]:
    return method.CLASS_ID, method.METHOD_ID
