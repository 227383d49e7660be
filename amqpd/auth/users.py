"""Who may log in, from where, into which vhosts, with which permissions.

Built from config values (and rebuilt on reload). A refusal's reason goes to the log,
while the client hears only RabbitMQ's generic text, so a probe cannot tell an unknown
user from a wrong password: both cost one hash of the default kind. Checking a password
may be slow on purpose (argon2) and runs off the event loop: `authenticate` is a plain
function for a worker thread.

Imports amqpd.config.model, amqpd.errors and auth.* only.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections import deque
from collections.abc import Iterable

import attrs

from amqpd.auth.passwords import hash_password, verify_password
from amqpd.config.model import Permission, ServerConfig, TopicPermission, User, hash_algorithm
from amqpd.errors import LoginRefused

log = logging.getLogger("amqpd.auth")

# What an unknown user's password is checked against, so that it costs what a known
# user's check costs: argon2 when any configured user has an argon2 hash, else SHA-256.
_UNKNOWN_USER_ARGON2 = hash_password("no such user")
_UNKNOWN_USER_SHA256 = hash_password("no such user", algorithm="sha256")
_FULL = (".*", ".*", ".*")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


# A certificate's subject as ssl's getpeercert() gives it: relative distinguished names,
# each a tuple of (attribute, value) pairs.
CertificateSubject = tuple[tuple[tuple[str, str], ...], ...]


def certificate_user_name(subject: CertificateSubject) -> str | None:
    """The user a verified client certificate logs in as (SASL EXTERNAL): the subject's
    common name, as RabbitMQ's default ssl_cert_login_from = common_name. Several CNs
    are joined with ',' as RabbitMQ does; None if there is none."""
    names = [value for rdn in subject for attribute, value in rdn if attribute == "commonName"]
    return ",".join(names) if names else None


def refused(mechanism: str) -> LoginRefused:
    return LoginRefused(
        f"Login was refused using authentication mechanism {mechanism}. "
        "For details see the broker logfile."
    )


@attrs.frozen
class Grant:
    """A user's permissions in one vhost: configure, write and read patterns and topic
    permissions by exchange (write, read)."""

    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]] = attrs.field(factory=dict)


class Authenticator:
    def __init__(
        self,
        users: Iterable[User],
        loopback_users: Iterable[str],
        permissions: Iterable[Permission] = (),
        topic_permissions: Iterable[TopicPermission] = (),
        *,
        login_cache_s: float = 0.0,
    ) -> None:
        self._users = {user.name: user for user in users}
        # Passwords that checked out lately, by user: (keyed digest, valid until). An
        # application that reconnects often pays the argon2 cost once per login_cache_s,
        # not at every connection. A failed check never comes from here, so a wrong
        # password still costs what an unknown user costs. A reload builds a new
        # Authenticator: a changed password is never answered from here.
        self._login_cache_s = login_cache_s
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._cache_key = os.urandom(32)
        self._loopback_users = frozenset(loopback_users)
        self._argon2_in_use = any(
            hash_algorithm(user.password_hash, user.hashing_algorithm) == "argon2"
            for user in self._users.values()
        )
        self._grants: dict[tuple[str, str], Grant] = {}
        for user in self._users.values():
            for vhost in user.vhosts:
                self._grants[(user.name, vhost)] = Grant(*_FULL)
        for permission in permissions:
            self._grants[(permission.user, permission.vhost)] = Grant(
                permission.configure, permission.write, permission.read
            )
        for topic in topic_permissions:
            grant = self._grants.get((topic.user, topic.vhost))
            if grant is not None:
                grant.topics[topic.exchange] = (topic.write, topic.read)

    @classmethod
    def from_config(cls, config: ServerConfig) -> Authenticator:
        return cls(
            config.users,
            config.loopback_users,
            config.permissions,
            config.topic_permissions,
            login_cache_s=config.authentication.login_cache_s,
        )

    def authenticate(
        self,
        mechanism: str,
        username: str,
        password: str,
        peer_host: str,
        now: float | None = None,
    ) -> User:
        """The user, or LoginRefused with RabbitMQ's text (the reason is logged). Slow:
        call it from a worker thread."""
        if now is None:
            now = time.monotonic()
        user = self._users.get(username)
        reason: str | None
        if user is not None and self._recently_verified(username, password, now):
            reason = self._origin_refusal(user, peer_host)
        elif not self._check(user, password) or user is None:
            reason = f"user '{username}' - invalid credentials"
        else:
            reason = self._origin_refusal(user, peer_host)
            if self._login_cache_s:
                self._verified[username] = (self._digest(password), now + self._login_cache_s)
        if reason is not None:
            log.warning(
                "login refused from %s: %s",
                peer_host,
                reason,
                extra={"user": username, "peer": peer_host, "mechanism": mechanism},
            )
            raise refused(mechanism)
        assert user is not None
        return user

    def _check(self, user: User | None, password: str) -> bool:
        # Every password check costs the dearest one configured (one argon2 check when
        # any user has an argon2 hash), so that the time taken tells nothing of whether
        # the user exists or how its password is hashed. With RabbitMQ's formats only,
        # as in the default config, a login costs one SHA-256, as on RabbitMQ.
        if user is None:
            dummy = _UNKNOWN_USER_ARGON2 if self._argon2_in_use else _UNKNOWN_USER_SHA256
            verify_password(password, dummy)
            return False
        if self._argon2_in_use and (
            hash_algorithm(user.password_hash, user.hashing_algorithm) != "argon2"
        ):
            verify_password(password, _UNKNOWN_USER_ARGON2)
        return verify_password(password, user.password_hash, user.hashing_algorithm)

    def _digest(self, password: str) -> bytes:
        return hmac.digest(self._cache_key, password.encode("utf-8"), "sha256")

    def _recently_verified(self, username: str, password: str, now: float) -> bool:
        cached = self._verified.get(username)
        if cached is None:
            return False
        digest, valid_until = cached
        if now >= valid_until:
            self._verified.pop(username, None)
            return False
        return hmac.compare_digest(digest, self._digest(password))

    def authenticate_external(self, username: str, peer_host: str) -> User:
        """A user named by a verified client certificate (SASL EXTERNAL): no password."""
        user = self._users.get(username)
        reason = (
            f"user '{username}' (from the client certificate) does not exist"
            if user is None
            else self._origin_refusal(user, peer_host)
        )
        if reason is not None:
            log.warning(
                "login refused from %s: %s",
                peer_host,
                reason,
                extra={"user": username, "peer": peer_host, "mechanism": "EXTERNAL"},
            )
            raise refused("EXTERNAL")
        assert user is not None
        return user

    def _origin_refusal(self, user: User, peer_host: str) -> str | None:
        if user.name in self._loopback_users and not is_loopback(peer_host):
            return f"user '{user.name}' can only connect via localhost"
        return None

    def user(self, name: str) -> User | None:
        return self._users.get(name)

    def grant(self, username: str, vhost: str) -> Grant | None:
        """What `username` may do in `vhost`; None: the vhost is closed to that user."""
        return self._grants.get((username, vhost))


class FailureThrottle:
    """Slows down repeated failed logins from one address: after `allowed` failures in
    `window_s`, each further attempt waits `delay_s`, doubling up to `delay_s_max`.
    Time is passed in."""

    def __init__(self, window_s: float, allowed: int, delay_s: float, delay_s_max: float) -> None:
        self._window_s = window_s
        self._allowed = allowed
        self._delay_s = delay_s
        self._delay_s_max = delay_s_max
        self._failures: dict[str, deque[float]] = {}

    def delay_s(self, host: str, now: float) -> float:
        """How long an attempt from `host` waits before it is answered."""
        failures = self._failures.get(host)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        if not failures:
            del self._failures[host]
            return 0.0
        excess = len(failures) - self._allowed
        if excess < 0:
            return 0.0
        return min(self._delay_s * 2.0 ** min(excess, 32), self._delay_s_max)

    def failed(self, host: str, now: float) -> None:
        failures = self._failures.setdefault(host, deque())
        failures.append(now)
        # One address cannot grow this without bound: only the window's count matters.
        while len(failures) > self._allowed + 64:
            failures.popleft()
        if len(self._failures) > 100_000:  # a scan from many addresses: start again
            self._failures = {host: failures}
