"""The socket under a TLS stream lets the read loop and the write pump both send (the
TLS layer answers a key update while reading): sends take turns, in order."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from amqpd.server.listener import SerialSends

CHUNK = b"x" * 4_000_000  # more than the socket buffers hold: the first send blocks


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_send_while_another_is_blocked_waits_its_turn() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    received = bytearray()
    accepted: list[anyio.abc.SocketStream] = []
    ready = anyio.Event()

    async def accept(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            accepted.append(stream)
            ready.set()
            await anyio.sleep_forever()

    async with listener, await anyio.connect_tcp("127.0.0.1", port) as client:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(listener.serve, accept)
                await ready.wait()
                sends = SerialSends(accepted[0])
                tasks.start_soon(sends.send, CHUNK)
                await anyio.wait_all_tasks_blocked()  # the first send is stuck on the socket
                tasks.start_soon(sends.send, b"after")  # the socket alone would refuse this
                await anyio.wait_all_tasks_blocked()
                while len(received) < len(CHUNK) + len(b"after"):
                    received += await client.receive()
                tasks.cancel_scope.cancel()
    assert received == CHUNK + b"after"
