"""What every connection of one node shares: the broker, the authenticator, the limits,
the audit log.

Built once by node.py and passed to each ClientSession; nothing here is global. A reload
replaces the authenticator and the vhost settings (`apply_tenancy`): connections opened
afterwards, and the next method on those already open, see the new ones.

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
from amqpd.auth.users import Authenticator, FailureThrottle
from amqpd.broker.access import Access
from amqpd.broker.broker import Broker
from amqpd.codec.fields import FieldTable
from amqpd.config.model import Authentication, Limits, User, Vhost
from amqpd.protocol.connection import Limits as ProtocolLimits
from amqpd.server.alarms import Alarms
from amqpd.server.audit import AuditLog

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
    authentication: Authentication = attrs.field(factory=Authentication)
    # Vhost name -> its settings (limits) from the config.
    vhost_settings: dict[str, Vhost] = attrs.field(factory=dict)
    audit: AuditLog = attrs.field(factory=lambda: AuditLog(None))
    server_properties: FieldTable = attrs.field(factory=server_properties)
    sessions: set[ClientSession] = attrs.field(factory=set)
    alarms: Alarms = attrs.field(factory=Alarms)
    # Called before a connection sends: the store writes what it holds (delivered marks).
    before_send: Callable[[], None] = _nothing_to_write
    # Handling one read from a client that takes longer than this is logged (inf: never).
    slow_operation_s: float = float("inf")
    _sessions_ended: anyio.Event | None = None
    login_throttle: FailureThrottle = attrs.field(init=False)
    # Password checks run in worker threads, at most this many at once.
    password_checks: anyio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        settings = self.authentication
        self.login_throttle = FailureThrottle(
            settings.failure_window_s,
            settings.failures_before_delay,
            settings.failure_delay_s,
            settings.failure_delay_s_max,
        )
        self.password_checks = anyio.CapacityLimiter(settings.password_checks_max)

    def apply_tenancy(self, authenticator: Authenticator, vhosts: dict[str, Vhost]) -> None:
        """A reloaded tenancy: open connections get their new rights; those of a user or
        vhost that is gone are closed with 320."""
        self.authenticator = authenticator
        self.vhost_settings = vhosts
        for session in list(self.sessions):
            connection = session.broker_connection
            if connection is None or connection.closed:
                continue
            username, vhost = connection.username, connection.vhost.name
            if authenticator.user(username) is None:
                session.force_close(f"user '{username}' is deleted")
            elif vhost not in vhosts:
                session.force_close(f"vhost '{vhost}' is deleted")
            else:
                # Permissions withdrawn: nothing is allowed, method by method (RabbitMQ
                # keeps such connections open too).
                connection.access = self.access(username, vhost) or Access(
                    username, vhost, "", "", ""
                )

    def access(self, username: str, vhost: str) -> Access | None:
        """What `username` may do in `vhost` now; None: nothing (the vhost is closed)."""
        user = self.authenticator.user(username)
        grant = self.authenticator.grant(username, vhost)
        if user is None or grant is None or vhost not in self.vhost_settings:
            return None
        return Access(
            username,
            vhost,
            grant.configure,
            grant.write,
            grant.read,
            topics=grant.topics,
            tags=user.tags,
        )

    def connection_limit_refusal(self, user: User, vhost: str) -> str | None:
        """Why one more connection of `user` to `vhost` is refused (RabbitMQ's text)."""
        vhost_max = self.vhost_settings[vhost].limits.connections_max
        user_max = user.limits.connections_max
        if vhost_max is None and user_max is None:
            return None
        in_vhost = by_user = 0
        for session in self.sessions:
            connection = session.broker_connection
            if connection is None or connection.closed:
                continue
            in_vhost += connection.vhost.name == vhost
            by_user += connection.username == user.name
        if vhost_max is not None and in_vhost >= vhost_max:
            return (
                f"access to vhost '{vhost}' refused for user '{user.name}': "
                f"connection limit ({vhost_max}) is reached"
            )
        if user_max is not None and by_user >= user_max:
            return (
                f"connection refused for user '{user.name}': "
                f"user connection limit ({user_max}) is reached"
            )
        return None

    def channel_limit_refusal(self, username: str) -> str | None:
        """Why one more channel of `username` is refused (RabbitMQ's text)."""
        user = self.authenticator.user(username)
        limit = user.limits.channels_max if user is not None else None
        if limit is None:
            return None
        channels = sum(
            len(session.handlers) for session in self.sessions if session.username == username
        )
        if channels < limit:
            return None
        return (
            f"number of channels opened for user '{username}' has reached the maximum "
            f"allowed user limit of ({limit})"
        )

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
