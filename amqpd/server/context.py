"""What every connection of one node shares: the broker, the authenticator, the limits.

Built once by node.py and passed to each ClientSession; nothing here is global.

Imports amqpd.auth, amqpd.broker, amqpd.config.model and amqpd.protocol.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import attrs

from amqpd import __version__
from amqpd.auth.users import Authenticator
from amqpd.broker.broker import Broker
from amqpd.codec.fields import FieldTable
from amqpd.config.model import Limits
from amqpd.protocol.connection import Limits as ProtocolLimits
from amqpd.server.alarms import Alarms

if TYPE_CHECKING:
    from amqpd.server.client import ClientSession

CAPABILITIES: FieldTable = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
}


def server_properties() -> FieldTable:
    return {
        "product": "amqpd",
        "version": __version__,
        "platform": f"Python {platform.python_version()}",
        "copyright": "amqpd contributors",
        "information": "AMQP 0-9-1 broker; licensed under the Apache License 2.0",
        "cluster_name": f"amqpd@{socket.gethostname()}",
        "capabilities": dict(CAPABILITIES),
    }


def _nothing_to_write() -> None:
    """Without a store there is nothing to write before sending."""


@attrs.define
class ServerContext:
    broker: Broker
    authenticator: Authenticator
    limits: Limits
    server_properties: FieldTable = attrs.field(factory=server_properties)
    sessions: set[ClientSession] = attrs.field(factory=set)
    alarms: Alarms = attrs.field(factory=Alarms)
    # Called before a connection sends: the store writes what it holds (delivered marks).
    before_send: Callable[[], None] = _nothing_to_write
    _sessions_ended: anyio.Event | None = None

    def session_ended(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._sessions_ended is not None:
            self._sessions_ended.set()

    async def all_sessions_ended(self) -> None:
        """Wait until no session is left (used by graceful shutdown)."""
        if self.sessions:
            self._sessions_ended = anyio.Event()
            await self._sessions_ended.wait()

    @property
    def protocol_limits(self) -> ProtocolLimits:
        limits = self.limits
        return ProtocolLimits(
            channel_max=limits.channel_max,
            frame_max=limits.frame_max,
            heartbeat_s=limits.heartbeat_s,
            message_bytes_max=limits.message_bytes_max,
        )
