"""TCP and TLS listeners: accept clients, enforce the connection limit, do the TLS
handshake, run one session each.

An amqps listener wraps each accepted socket in TLS before the session starts; the
handshake counts against the handshake timeout, and one that fails or stalls is logged
and closes that connection only. The session learns the verified client certificate and
which SASL mechanisms to offer (EXTERNAL where client certificates are verified).

Imports anyio, amqpd.protocol, amqpd.config (the TLS helpers) and server.*.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from amqpd.config.tls import verifies_peers
from amqpd.protocol.sasl import MECHANISMS, MECHANISMS_WITH_EXTERNAL
from amqpd.server.client import ClientSession, PeerCertificate
from amqpd.server.context import ServerContext

log = logging.getLogger("amqpd.listener")

# What a failed TLS handshake raises: the peer spoke something else, hung up, or sent a
# certificate that does not verify.
_HANDSHAKE_FAILURES = (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, OSError)


@attrs.frozen(eq=False)
class Endpoint:
    """Where to listen, and with which TLS context (None: plain TCP)."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None


@attrs.frozen(eq=False)
class AmqpListener:
    """A bound socket listener and the TLS context its connections are wrapped in."""

    socket: anyio.abc.SocketListener
    tls: ssl.SSLContext | None = None

    @property
    def mechanisms(self) -> tuple[str, ...]:
        if self.tls is not None and verifies_peers(self.tls):
            return MECHANISMS_WITH_EXTERNAL
        return MECHANISMS


async def open_listeners(endpoints: Sequence[Endpoint]) -> list[AmqpListener]:
    """Bind every address (port 0 picks a free port) before anything is served."""
    listeners: list[AmqpListener] = []
    try:
        for endpoint in endpoints:
            multi = await anyio.create_tcp_listener(
                local_host=endpoint.host, local_port=endpoint.port
            )
            for listener in multi.listeners:
                assert isinstance(listener, anyio.abc.SocketListener)
                listeners.append(AmqpListener(listener, endpoint.tls))
    except BaseException:
        for opened in listeners:
            await opened.socket.aclose()
        raise
    return listeners


def bound_address(listener: AmqpListener) -> tuple[str, int]:
    address = listener.socket.extra(SocketAttribute.local_address)
    assert isinstance(address, tuple)
    return str(address[0]), int(address[1])


async def serve(
    listeners: Sequence[AmqpListener],
    context: ServerContext,
    session_tasks: anyio.abc.TaskGroup,
) -> None:
    """Accept on every listener until cancelled; sessions run in `session_tasks`, so
    that cancelling the accept loops leaves the connections to a graceful close."""

    async def handle(listener: AmqpListener, stream: anyio.abc.SocketStream) -> None:
        accepted_at = time.monotonic()  # the clock sessions use
        peer = stream.extra(SocketAttribute.remote_address)
        local = stream.extra(SocketAttribute.local_address)
        assert isinstance(peer, tuple) and isinstance(local, tuple)
        limit = context.limits.connections_max
        if limit and len(context.sessions) >= limit:
            log.warning(
                "connection from %s:%s refused: connection limit (%d) reached",
                peer[0],
                peer[1],
                limit,
            )
            await stream.aclose()
            return
        raw = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session_stream: anyio.abc.ByteStream = stream
        certificate: PeerCertificate | None = None
        if listener.tls is not None:
            name = f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"
            tls_stream = await _tls_handshake(
                stream, listener.tls, context.limits.handshake_timeout_s, name
            )
            if tls_stream is None:
                return
            session_stream = tls_stream
            # Empty or None unless the client sent a certificate that verified.
            certificate = tls_stream.extra(TLSAttribute.peer_certificate) or None
        session = ClientSession(
            context,
            session_stream,
            (str(peer[0]), int(peer[1])),
            (str(local[0]), int(local[1])),
            mechanisms=listener.mechanisms,
            peer_certificate=certificate,
            accepted_at=accepted_at,
            tls=listener.tls is not None,
        )
        context.sessions.add(session)
        try:
            await session.run()
        finally:
            context.session_ended(session)

    async def accept(listener: AmqpListener) -> None:
        async def handle_one(stream: anyio.abc.SocketStream) -> None:
            await handle(listener, stream)

        await listener.socket.serve(handle_one, session_tasks)

    async with anyio.create_task_group() as accepting:
        for listener in listeners:
            accepting.start_soon(accept, listener)


async def _tls_handshake(
    stream: anyio.abc.SocketStream, context: ssl.SSLContext, timeout_s: float, name: str
) -> TLSStream | None:
    """The stream in TLS, or None (logged, socket closed) if the handshake failed or
    took longer than `timeout_s`."""
    reason = f"not finished within {timeout_s:.0f} s"
    with anyio.move_on_after(timeout_s):
        try:
            # Not standard_compatible: closing does not wait for the client's
            # close_notify (AMQP's own close handshake has already ended the session),
            # and a client that hangs up without one is not an error.
            return await TLSStream.wrap(
                SerialSends(stream),
                server_side=True,
                ssl_context=context,
                standard_compatible=False,
            )
        except _HANDSHAKE_FAILURES as error:
            reason = _describe(error)
    log.warning("connection %s: TLS handshake failed: %s; closed", name, reason)
    await anyio.aclose_forcefully(stream)
    return None


class SerialSends(anyio.abc.ByteStream):
    """The socket under a TLS stream, with sends that take turns.

    The TLS layer sends from the reading task too (a TLS 1.3 key update the client asks
    for is answered while reading), while the write pump may be in the middle of a send;
    the socket allows one sender at a time. Each sender takes its bytes from the TLS
    layer before it waits, and the lock is first come first served, so records go out
    in the order they were made."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self._stream = stream
        self._sending = anyio.Lock()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        async with self._sending:
            await self._stream.send(item)

    async def send_eof(self) -> None:
        async with self._sending:
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the client certificate does not verify ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        if error.reason == "WRONG_VERSION_NUMBER":
            return "WRONG_VERSION_NUMBER (a client that does not speak TLS?)"
        return str(error.reason or error)
    if isinstance(error, anyio.EndOfStream | anyio.BrokenResourceError):
        return "the client closed the connection"
    return str(error) or type(error).__name__
