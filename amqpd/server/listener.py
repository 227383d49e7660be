"""TCP listeners: accept clients, enforce the connection limit, run one session each.

Imports anyio and server.*.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from amqpd.server.client import ClientSession
from amqpd.server.context import ServerContext

log = logging.getLogger("amqpd.listener")


async def open_listeners(
    addresses: Sequence[tuple[str, int]],
) -> list[anyio.abc.SocketListener]:
    """Bind every address (port 0 picks a free port) before anything is served."""
    listeners: list[anyio.abc.SocketListener] = []
    try:
        for host, port in addresses:
            multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
            for listener in multi.listeners:
                assert isinstance(listener, anyio.abc.SocketListener)
                listeners.append(listener)
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        raise
    return listeners


def bound_address(listener: anyio.abc.SocketListener) -> tuple[str, int]:
    address = listener.extra(SocketAttribute.local_address)
    assert isinstance(address, tuple)
    return str(address[0]), int(address[1])


async def serve(
    listeners: Sequence[anyio.abc.SocketListener],
    context: ServerContext,
    session_tasks: anyio.abc.TaskGroup,
) -> None:
    """Accept on every listener until cancelled; sessions run in `session_tasks`, so
    that cancelling the accept loops leaves the connections to a graceful close."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
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
        session = ClientSession(
            context, stream, (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))
        )
        context.sessions.add(session)
        try:
            await session.run()
        finally:
            context.session_ended(session)

    async with anyio.create_task_group() as accepting:
        for listener in listeners:
            accepting.start_soon(listener.serve, handle, session_tasks)
