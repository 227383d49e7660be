"""The composition root: config -> data dir -> auth -> broker -> listeners; graceful stop.

The only module that wires the layers together. `Node.run` binds every listener before
it reports ready, serves until `request_shutdown`, then sends every client 320
CONNECTION_FORCED and waits (bounded) for them to leave.

Imports everything below it; nothing imports it but cli.py and tests.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import anyio
import anyio.abc

from amqpd.auth.users import Authenticator
from amqpd.broker.broker import Broker
from amqpd.config.model import ServerConfig
from amqpd.server.context import ServerContext
from amqpd.server.listener import bound_address, open_listeners, serve

log = logging.getLogger("amqpd")

LOCK_FILE_NAME = "amqpd.lock"


class DataDirInUse(Exception):
    """Another broker holds the data directory."""


class Node:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.context = ServerContext(
            broker=Broker(config.vhosts),
            authenticator=Authenticator(config.users, config.loopback_users),
            limits=config.limits,
        )
        self.addresses: list[tuple[str, int]] = []
        self._stop = anyio.Event()
        self._lock_file: IO[str] | None = None
        self._listeners: list[anyio.abc.SocketListener] = []

    @property
    def shutdown_requested(self) -> bool:
        return self._stop.is_set()

    def request_shutdown(self) -> None:
        self._stop.set()

    def abort_connections(self) -> None:
        """Drop every connection now, without waiting for close-ok."""
        for session in list(self.context.sessions):
            session.abort()

    async def start(self) -> None:
        """Lock the data directory and bind every listener: failing here, nothing runs."""
        self._lock_data_dir(self.config.data_dir)
        try:
            self._listeners = await open_listeners(
                [(listener.bind, listener.port) for listener in self.config.listeners]
            )
        except BaseException:
            self._unlock_data_dir()
            raise
        self.addresses = [bound_address(listener) for listener in self._listeners]

    async def serve(self, on_ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
        """Serve until request_shutdown(), then close every connection gracefully."""
        listeners = self._listeners
        try:
            async with anyio.create_task_group() as session_tasks:
                async with anyio.create_task_group() as accepting:
                    accepting.start_soon(serve, listeners, self.context, session_tasks)
                    log.info(
                        "amqpd ready: accepting AMQP 0-9-1 connections on %s (data in %s)",
                        ", ".join(f"{host}:{port}" for host, port in self.addresses),
                        self.config.data_dir,
                    )
                    if on_ready is not None:
                        on_ready(self.addresses)
                    await self._stop.wait()
                    accepting.cancel_scope.cancel()
                for listener in listeners:
                    await listener.aclose()
                log.info("shutting down: closing %d connection(s)", len(self.context.sessions))
                await self._close_sessions()
                session_tasks.cancel_scope.cancel()
        finally:
            self._unlock_data_dir()
        log.info("amqpd stopped")

    async def run(self, on_ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
        await self.start()
        await self.serve(on_ready)

    async def _close_sessions(self) -> None:
        context = self.context
        for session in list(context.sessions):
            session.shutdown()
        with anyio.move_on_after(self.config.limits.shutdown_timeout_s):
            await context.all_sessions_ended()
        self.abort_connections()

    def _lock_data_dir(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(data_dir / LOCK_FILE_NAME, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise DataDirInUse(f"data directory {data_dir} is in use by another broker") from None
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file

    def _unlock_data_dir(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
