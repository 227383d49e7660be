"""One client connection: the read loop, the write pump, timers and the close handshake.

Moves bytes and calls into protocol/ and broker/; the decisions are theirs. Each read is
parsed completely and handled synchronously (no await per message); everything it and
other connections queue for this client goes out in one write per wake-up of the pump.
Deliveries stop flowing to a client whose queued output passes `outbound_bytes_max`
until the pump has drained it. A client silent for two heartbeat intervals, or slower
than the handshake timeout, is dropped.

On an amqps listener the stream is already in TLS, and the session knows the client
certificate the TLS layer verified: SASL EXTERNAL logs in as the user it names.

Logs: a connection's login, vhost open and close (by the client, abrupt, or forced) are
logged once each, with the connection, user and vhost as the record's fields; nothing
is logged per message. The handling of one read that takes longer than
`slow_operation_s` is logged as a warning (one clock reading per read). Times are
time.monotonic(), the clock anyio's event loops run on.

Imports anyio, amqpd.auth, amqpd.protocol, amqpd.broker, amqpd.errors and server.*.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc

from amqpd.auth.users import certificate_user_name, refused
from amqpd.broker.connection import Connection
from amqpd.errors import (
    ACCESS_REFUSED,
    CONNECTION_FORCED,
    AMQPException,
    ChannelException,
    ConnectionException,
    FeatureNotImplemented,
    InternalError,
    LoginRefused,
    NotAllowed,
    reply_text,
)
from amqpd.protocol import spec
from amqpd.protocol.connection import SILENT_ERROR_PHASES, Phase, ProtocolConnection
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
from amqpd.protocol.sasl import EXTERNAL, MECHANISMS
from amqpd.server.channel import ChannelHandler

if TYPE_CHECKING:
    from amqpd.server.context import ServerContext

log = logging.getLogger("amqpd.connection")

RECEIVE_BYTES_MAX: Final = 262_144  # large reads: fewer wake-ups, more frames per parse
TIMER_TICK_S: Final = 0.5
SHUTDOWN_REASON: Final = "broker forced connection closure with reason 'shutdown'"

_CONNECTION_RESET: Final = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ConnectionError,
    OSError,
)


# A verified client certificate as ssl's getpeercert() gives it.
PeerCertificate = Mapping[str, object]


class ClientSession:
    def __init__(
        self,
        context: ServerContext,
        stream: anyio.abc.ByteStream,
        peer: tuple[str, int],
        local: tuple[str, int],
        *,
        mechanisms: Sequence[str] = MECHANISMS,
        peer_certificate: PeerCertificate | None = None,
        accepted_at: float | None = None,
        tls: bool = False,
    ) -> None:
        self.context = context
        self._timers = context.broker.services.timers
        self.stream = stream
        self.peer_host, self.peer_port = peer
        self.local = local
        self.tls = tls
        self.connected_at_ms = time.time_ns() // 1_000_000
        self.auth_mechanism = ""
        self.received_bytes = 0
        self.sent_bytes = 0
        self.name = f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"
        self.proto = ProtocolConnection(
            context.protocol_limits, context.server_properties, mechanisms
        )
        # The client certificate the TLS layer verified; None on plain TCP, or when the
        # client sent none.
        self.peer_certificate = peer_certificate
        self.broker_connection: Connection | None = None
        self.handlers: dict[int, ChannelHandler] = {}
        self.username = ""
        now = time.monotonic()
        # From TCP accept: a TLS handshake before this session counts against the
        # handshake timeout too.
        self._accepted_at = now if accepted_at is None else accepted_at
        self._last_received = now
        self._last_sent = now
        self._closing_since: float | None = None
        self._stop_reading = False
        self._published = False  # publishers are the ones a resource alarm blocks
        self._reading_paused = False  # blocked by an alarm: silence is not a dead peer
        self._linger_s = 0.0  # wait before closing the socket (silent handshake errors)
        self._slow_s = context.slow_operation_s
        self._wake = anyio.Event()
        self._write_scheduled = False
        self._queued_bytes = 0
        self._output_blocked = False
        self._confirming: list[ChannelHandler] = []
        self._finishing = False
        self._finished = anyio.Event()
        self._cancel_scope: anyio.CancelScope | None = None
        self._read_scope: anyio.CancelScope | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self.proto.may_open_channel = self._may_open_channel

    def __repr__(self) -> str:
        return f"<ClientSession {self.label}>"

    @property
    def label(self) -> str:
        """How logs name this connection: address, and the client's connection_name."""
        client_name = self.proto.client_properties.get("connection_name")
        return f"{self.name} ({client_name})" if isinstance(client_name, str) else self.name

    @property
    def blocked(self) -> bool:
        """Not read from: a resource alarm blocks this publisher."""
        return self._reading_paused

    def fields(self, **more: object) -> dict[str, object]:
        """The structured fields of this connection's log records (JSON logs): the
        connection, and the user and vhost once known."""
        found: dict[str, object] = {"connection": self.label}
        if self.username:
            found["user"] = self.username
        if self.broker_connection is not None:
            found["vhost"] = self.broker_connection.vhost.name
        found.update(more)
        return found

    # ------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        try:
            with anyio.CancelScope() as scope:
                self._cancel_scope = scope
                async with anyio.create_task_group() as tasks:
                    self._tasks = tasks
                    tasks.start_soon(self._write_loop)
                    tasks.start_soon(self._timer_loop)
                    await self._read_loop()
                    await self._finish_output()
                    if self._linger_s:
                        await anyio.sleep(self._linger_s)
                    tasks.cancel_scope.cancel()
        finally:
            self._release_broker_state()
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()
            log.debug("connection %s: socket closed", self.label)

    def abort(self) -> None:
        """Drop the connection now, without a close handshake."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def force_close(self, reason: str) -> None:
        """320 CONNECTION_FORCED with `reason` (a user or vhost removed by a reload)."""
        log.warning("connection %s: closing, %s", self.label, reason, extra=self.fields())
        self._close_connection(CONNECTION_FORCED, reply_text(CONNECTION_FORCED, reason))
        self._schedule_write()

    def shutdown(self) -> None:
        """The broker is stopping: 320 CONNECTION_FORCED, then wait for close-ok."""
        if self.proto.phase in (Phase.AWAITING_PROTOCOL_HEADER, Phase.CLOSED):
            self.abort()
            return
        self._close_connection(CONNECTION_FORCED, reply_text(CONNECTION_FORCED, SHUTDOWN_REASON))

    async def _read_loop(self) -> None:
        with anyio.CancelScope() as self._read_scope:
            await self._read()

    def _stop_reading_now(self) -> None:
        """Stop the read loop from outside it (a decision made by another task)."""
        self._stop_reading = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def _read(self) -> None:
        receive = self.stream.receive
        alarms = self.context.alarms
        while not self._stop_reading:
            if alarms.blocking and self._published:
                await self._wait_while_blocked()
                continue
            try:
                data = await receive(RECEIVE_BYTES_MAX)
            except _CONNECTION_RESET:
                if self.broker_connection is not None and self._closing_since is None:
                    log.warning(
                        "connection %s: client closed the socket abruptly",
                        self.label,
                        extra=self.fields(),
                    )
                return
            self._last_received = started = time.monotonic()
            self.received_bytes += len(data)
            self._on_data(data)
            if time.monotonic() - started > self._slow_s:
                self._slow_read(started, len(data))

    async def _wait_while_blocked(self) -> None:
        """Stop reading a publisher during a resource alarm (TCP pushes back on it)."""
        alarms = self.context.alarms
        notify = self.proto.has_capability("connection.blocked") and self.proto.phase is Phase.OPEN
        if notify:
            self.proto.send_method(0, spec.ConnectionBlocked(reason=alarms.reason))
            self._schedule_write()
        # The alarm itself is logged (a warning) once; each connection only at debug.
        log.debug("connection %s: blocked (%s)", self.label, alarms.reason, extra=self.fields())
        self._reading_paused = True
        try:
            await alarms.wait_cleared()
        finally:
            self._reading_paused = False
            self._last_received = time.monotonic()
        if notify and self.proto.phase is Phase.OPEN:
            self.proto.send_method(0, spec.ConnectionUnblocked())
            self._schedule_write()
        log.debug("connection %s: unblocked", self.label, extra=self.fields())

    async def _finish_output(self) -> None:
        self._finishing = True
        self._schedule_write()
        with anyio.move_on_after(self.context.limits.close_timeout_s):
            await self._finished.wait()

    async def _write_loop(self) -> None:
        proto = self.proto
        send = self.stream.send
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                self._write_scheduled = False
                self._flush_confirms()  # confirms released by the disk, not by a read
                self.context.before_send()
                data = proto.data_to_send()
                self._queued_bytes = 0
                if self._output_blocked:
                    self._output_blocked = False
                    for handler in list(self.handlers.values()):
                        handler.channel.set_writable(True)
                if data:
                    await send(data)
                    self.sent_bytes += len(data)
                    self._last_sent = time.monotonic()
                if self._finishing and not proto.has_data_to_send:
                    self._finished.set()
                    return
        except _CONNECTION_RESET:
            self._finished.set()
            self.abort()

    async def _timer_loop(self) -> None:
        limits = self.context.limits
        while True:
            await anyio.sleep(TIMER_TICK_S)
            now = time.monotonic()
            if self._closing_since is not None:
                if now - self._closing_since > limits.close_timeout_s:
                    log.warning("connection %s: no close-ok from client; dropped", self.label)
                    self.abort()
                continue
            if self.broker_connection is None:
                if now - self._accepted_at > limits.handshake_timeout_s:
                    log.warning(
                        "connection %s: handshake not finished within %.0f s; dropped",
                        self.label,
                        limits.handshake_timeout_s,
                    )
                    self.abort()
                continue
            heartbeat_s = self.proto.heartbeat_s
            if not heartbeat_s or self._reading_paused:
                continue
            if now - self._last_received > 2 * heartbeat_s:
                log.warning(
                    "connection %s: missed heartbeats from client, timeout: %d s; dropped",
                    self.label,
                    heartbeat_s,
                )
                self.abort()
                return
            if now - self._last_sent >= heartbeat_s / 2:
                self.proto.send_heartbeat()
                self._schedule_write()

    # ---------------------------------------------------------- output flow

    def _schedule_write(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self._wake.set()

    def queued_output(self, size: int) -> None:
        """A handler queued `size` bytes for this client; wake the pump, bound the backlog."""
        self._queued_bytes += size
        if not self._write_scheduled:
            self._write_scheduled = True
            self._wake.set()
        if self._queued_bytes > self.context.limits.outbound_bytes_max and not self._output_blocked:
            self._output_blocked = True
            for handler in self.handlers.values():
                handler.channel.set_writable(False)

    def confirms_pending(self, handler: ChannelHandler) -> None:
        """A channel has confirms to send; they go out with the next write (batched)."""
        self._confirming.append(handler)
        self._schedule_write()

    def _flush_confirms(self) -> None:
        confirming = self._confirming
        if confirming:
            for handler in confirming:
                handler.flush_confirms()
            confirming.clear()

    # ---------------------------------------------------------------- input

    def _on_data(self, data: bytes) -> None:
        handlers = self.handlers
        now_ms = time.time_ns() // 1_000_000  # one wall clock reading per read
        self._timers.recent_ms = now_ms
        try:
            for event in self.proto.receive_data(data):
                kind = type(event)
                try:
                    if kind is Publish:
                        assert isinstance(event, Publish)
                        self._published = True
                        handlers[event.channel].channel.publish(
                            event.exchange,
                            event.routing_key,
                            event.mandatory,
                            event.immediate,
                            event.header,
                            event.body,
                            event.route,
                            now_ms,
                        )
                    elif kind is Ack:
                        assert isinstance(event, Ack)
                        handlers[event.channel].channel.ack(event.delivery_tag, event.multiple)
                    else:
                        self._handle(event, now_ms)
                except ChannelException as error:
                    _fill_method_ids(error, event)
                    self._fail_channel(_channel_of(event), error)
                except ConnectionException as error:
                    _fill_method_ids(error, event)
                    self._fail_connection(error)
                except Exception:
                    self._internal_error(event)
        except ConnectionException as error:
            self._fail_connection(error)
        except Exception:
            self._internal_error(None)
        self._flush_confirms()
        self._schedule_write()

    def _handle(self, event: Event, now_ms: int) -> None:
        if isinstance(event, MethodReceived):
            if event.channel == 0:
                raise FeatureNotImplemented(
                    f"{event.method.NAME} is not supported",
                    event.method.CLASS_ID,
                    event.method.METHOD_ID,
                )
            self.handlers[event.channel].handle(event.method, now_ms)
        elif isinstance(event, ChannelOpened):
            connection = self.broker_connection
            assert connection is not None
            handler = ChannelHandler(event.channel, self)
            self.handlers[event.channel] = handler
            connection.channels[event.channel] = handler.channel
            if self._output_blocked:
                handler.channel.set_writable(False)
        elif isinstance(event, ChannelClosed):
            self._release_channel(event.channel)
        elif isinstance(event, ChannelFailed):
            self._fail_channel(event.channel, event.error)
        elif isinstance(event, LoginRequested):
            self._login(event)
        elif isinstance(event, Tuned):
            log.debug("connection %s: tuned %s", self.label, event)
        elif isinstance(event, OpenRequested):
            self._open(event.virtual_host)
        elif isinstance(event, CloseRequested):
            log.info(
                "connection %s: closed by client (user '%s')",
                self.label,
                self.username,
                extra=self.fields(),
            )
            self._release_broker_state()
            self._stop_reading = True
        elif isinstance(event, CloseCompleted):
            self._stop_reading = True
        elif isinstance(event, BadProtocolHeader):
            log.warning(
                "connection %s: bad protocol header %r; sent ours and closed",
                self.label,
                event.received,
            )
            self._stop_reading = True

    def _login(self, event: LoginRequested) -> None:
        # The password check is slow on purpose: it runs in a worker thread while this
        # connection waits (the client sends nothing until it hears back).
        assert self._tasks is not None
        self._tasks.start_soon(self._check_login, event)

    async def _check_login(self, event: LoginRequested) -> None:
        context = self.context
        throttle = context.login_throttle
        delay_s = throttle.delay_s(self.peer_host, time.monotonic())
        if delay_s:
            log.info("connection %s: login waits %.1f s (earlier failures)", self.label, delay_s)
            await anyio.sleep(delay_s)
        authenticator = context.authenticator
        username = event.username
        try:
            if event.mechanism == EXTERNAL:
                # No password to check: the TLS layer verified the certificate.
                username = self._certificate_user_name()
                user = authenticator.authenticate_external(username, self.peer_host)
            else:
                user = await anyio.to_thread.run_sync(
                    authenticator.authenticate,
                    event.mechanism,
                    username,
                    event.password,
                    self.peer_host,
                    limiter=context.password_checks,
                )
        except LoginRefused as error:
            throttle.failed(self.peer_host, time.monotonic())
            context.audit.record(
                "login_failed", user=username, peer=self.peer_host, mechanism=event.mechanism
            )
            self.login_refused(error)
            return
        self.logged_in(user.name, event.mechanism)

    def _certificate_user_name(self) -> str:
        """The user the verified client certificate names; LoginRefused without one."""
        subject = (self.peer_certificate or {}).get("subject")
        name = certificate_user_name(subject) if isinstance(subject, tuple) else None
        if name is None:
            log.warning(
                "login refused from %s: EXTERNAL %s",
                self.peer_host,
                "without a verified client certificate"
                if subject is None
                else "with a client certificate whose subject has no CN",
                extra=self.fields(mechanism=EXTERNAL, peer=self.peer_host),
            )
            raise refused(EXTERNAL)
        return name

    def login_refused(self, error: LoginRefused) -> None:
        if self.proto.has_capability("authentication_failure_close"):
            # The client asked to hear why: 403 on connection.close, then close-ok.
            self._close_connection(error.reply_code, error.reply_text)
        else:
            self._fail_handshake(error, logged=True)
            self._stop_reading_now()
        self._schedule_write()

    def logged_in(self, username: str, mechanism: str) -> None:
        if self.proto.phase is not Phase.AWAITING_LOGIN_DECISION:
            return  # closed meanwhile
        self.username = username
        self.auth_mechanism = mechanism
        log.info(
            "connection %s: user '%s' authenticated (%s)",
            self.label,
            username,
            mechanism,
            extra=self.fields(mechanism=mechanism),
        )
        self.context.audit.record("login", user=username, peer=self.peer_host, mechanism=mechanism)
        self.proto.accept_login()
        self._schedule_write()

    def _may_open_channel(self) -> str | None:
        return self.context.channel_limit_refusal(self.username)

    def _open(self, vhost_name: str) -> None:
        context = self.context
        vhost = context.broker.vhost(vhost_name)
        if vhost is None:
            raise NotAllowed(f"vhost {vhost_name} not found", 10, 40)
        user = context.authenticator.user(self.username)
        access = context.access(self.username, vhost_name)
        if user is None or access is None:
            log.warning(
                "connection %s: access to vhost '%s' refused for user '%s'",
                self.label,
                vhost_name,
                self.username,
                extra=self.fields(vhost=vhost_name),
            )
            context.audit.record(
                "access_refused",
                user=self.username,
                vhost=vhost_name,
                peer=self.peer_host,
                reason="no permissions in the vhost",
            )
            raise NotAllowed(
                f"access to vhost '{vhost_name}' refused for user '{self.username}'", 10, 40
            )
        refusal = context.connection_limit_refusal(user, vhost_name)
        if refusal is not None:
            context.audit.record(
                "access_refused",
                user=self.username,
                vhost=vhost_name,
                peer=self.peer_host,
                reason=refusal,
            )
            raise NotAllowed(refusal, 10, 40)
        self.broker_connection = Connection(
            self.label,
            self.username,
            vhost,
            consumer_cancel_notify=self.proto.has_capability("consumer_cancel_notify"),
            access=access,
        )
        self.proto.accept_open()
        log.info(
            "connection %s: user '%s' opened vhost '%s'",
            self.label,
            self.username,
            vhost_name,
            extra=self.fields(),
        )
        context.audit.record(
            "connection_opened", user=self.username, vhost=vhost_name, peer=self.peer_host
        )

    def _slow_read(self, started: float, size: int) -> None:
        elapsed_ms = (time.monotonic() - started) * 1000
        log.warning(
            "connection %s: slow operation: handling a read of %d bytes took %.0f ms",
            self.label,
            size,
            elapsed_ms,
            extra=self.fields(operation="read", duration_ms=round(elapsed_ms), bytes=size),
        )

    # ---------------------------------------------------------------- errors

    def _fail_channel(self, channel: int, error: ChannelException) -> None:
        log.warning(
            "connection %s, channel %d: %s (user '%s')",
            self.label,
            channel,
            error.reply_text,
            self.username,
            extra=self.fields(channel=channel, reply_code=error.reply_code),
        )
        if error.reply_code == ACCESS_REFUSED:
            connection = self.broker_connection
            self.context.audit.record(
                "access_refused",
                user=self.username,
                vhost=connection.vhost.name if connection is not None else None,
                peer=self.peer_host,
                reason=error.reply_text,
            )
        self._release_channel(channel)
        self.proto.close_channel(
            channel, error.reply_code, error.reply_text, error.class_id, error.method_id
        )

    def channel_failed(self, handler: ChannelHandler, error: ChannelException) -> None:
        """The broker closed a channel on its own (outside any method of the client's)."""
        if self.handlers.get(handler.number) is handler:
            self._fail_channel(handler.number, error)
            self._schedule_write()

    def storage_failed_for(self, handler: ChannelHandler) -> None:
        """A reply held for the disk can never be sent: the writes it needed failed."""
        self._fail_connection(InternalError("could not write to disk, see the broker log"))
        self._schedule_write()

    def _internal_error(self, event: Event | None) -> None:
        """A bug: log it with its traceback and close this connection only, with 541."""
        log.exception("connection %s: internal error; closing the connection", self.label)
        error = InternalError("internal error, see the broker log")
        if event is not None:
            _fill_method_ids(error, event)
        self._fail_connection(error)

    def _fail_handshake(self, error: ConnectionException, logged: bool = False) -> None:
        """Before tune-ok, RabbitMQ closes without a reason, after a delay; so do we.
        `logged`: the reason is in the log already (a refused login)."""
        if not logged:
            log.warning(
                "connection %s: handshake failed in state %s: %s; closing",
                self.label,
                self.proto.phase.value,
                error.reply_text,
                extra=self.fields(),
            )
        self.proto.abandon()
        self._stop_reading = True
        self._linger_s = self.context.limits.handshake_error_delay_s

    def _fail_connection(self, error: ConnectionException) -> None:
        if self.proto.phase in SILENT_ERROR_PHASES:
            self._fail_handshake(error)
            return
        log.warning(
            "connection %s: closing with %s (user '%s')",
            self.label,
            error.reply_text,
            self.username,
            extra=self.fields(reply_code=error.reply_code),
        )
        self._close_connection(error.reply_code, error.reply_text, error.class_id, error.method_id)

    def _close_connection(
        self, reply_code: int, text: str, class_id: int = 0, method_id: int = 0
    ) -> None:
        if self._closing_since is not None or self.proto.closed:
            return
        self.proto.close_with(reply_code, text, class_id, method_id)
        self._closing_since = time.monotonic()
        self._release_broker_state()
        self._schedule_write()

    def _release_channel(self, number: int) -> None:
        handler = self.handlers.pop(number, None)
        if handler is not None:
            handler.close()
            if self.broker_connection is not None:
                self.broker_connection.channels.pop(number, None)

    def _release_broker_state(self) -> None:
        """Close every channel (requeueing unacked messages) and drop exclusive queues."""
        self.handlers.clear()
        self._confirming.clear()
        connection = self.broker_connection
        if connection is not None and not connection.closed:
            connection.close()


def _channel_of(event: Event) -> int:
    channel = getattr(event, "channel", 0)
    assert isinstance(channel, int)
    return channel


def _fill_method_ids(error: AMQPException, event: Event) -> None:
    """Name the failing method in the close frame when the raise site did not."""
    if error.class_id:
        return
    if isinstance(event, MethodReceived):
        error.class_id, error.method_id = event.method.CLASS_ID, event.method.METHOD_ID
    elif isinstance(event, Publish):
        error.class_id, error.method_id = 60, 40
    elif isinstance(event, Ack):
        error.class_id, error.method_id = 60, 80
