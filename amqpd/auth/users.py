"""Who may log in, from where, and into which vhosts.

Built from config values; the refusal reason goes to the log, while the client hears
only RabbitMQ's generic text, so a probe cannot tell an unknown user from a wrong
password (both cost one hash).

Imports amqpd.config.model, amqpd.errors and auth.passwords only.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from amqpd.auth.passwords import hash_password, verify_password
from amqpd.config.model import User
from amqpd.errors import LoginRefused

log = logging.getLogger("amqpd.auth")

_UNKNOWN_USER_HASH = hash_password("no such user")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


class Authenticator:
    def __init__(self, users: Iterable[User], loopback_users: Iterable[str]) -> None:
        self._users = {user.name: user for user in users}
        self._loopback_users = frozenset(loopback_users)

    def authenticate(self, mechanism: str, username: str, password: str, peer_host: str) -> User:
        """The user, or LoginRefused with RabbitMQ's text (the reason is logged)."""
        user = self._users.get(username)
        password_ok = verify_password(password, user.password_hash if user else _UNKNOWN_USER_HASH)
        reason = None
        if user is None or not password_ok:
            reason = f"user '{username}' - invalid credentials"
        elif username in self._loopback_users and not is_loopback(peer_host):
            reason = f"user '{username}' can only connect via localhost"
        if reason is not None:
            log.warning("login refused from %s: %s", peer_host, reason)
            raise LoginRefused(
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
        assert user is not None
        return user

    def user(self, name: str) -> User | None:
        return self._users.get(name)

    @staticmethod
    def may_use_vhost(user: User, vhost: str) -> bool:
        return vhost in user.vhosts
