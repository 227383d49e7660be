"""Typed settings: what the broker is told at start, as frozen attrs values.

Every limit is named here with its unit and its default; the YAML loader (config/load.py)
and the command line fill these in, and node.py hands them out. Nothing reads a global.

Pure; imports attrs only.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Final

import attrs
from attrs import validators as v

DEFAULT_PORT: Final = 5672
DEFAULT_BIND: Final = "127.0.0.1"
DEFAULT_DATA_DIR: Final = Path("amqpd-data")
DEFAULT_MANAGEMENT_PORT: Final = 15672
# rabbit_password_hashing_sha256 of "guest", with a fixed salt: the embedded default user.
GUEST_PASSWORD_HASH: Final = "YW1xcNtq+YSZ3Gp9l3n9Hwu0AShQoKMVtCuQUm5bIAI4+TfE"


def _fail_if_no_peer_cert(tls: Tls, _: attrs.Attribute[bool], value: bool) -> None:
    if value and not tls.verify_peer:
        raise ValueError("'fail_if_no_peer_cert' needs 'verify_peer: true'")


def _verify_peer(tls: Tls, _: attrs.Attribute[bool], value: bool) -> None:
    if value and tls.ca_file is None:
        raise ValueError("'verify_peer' needs a 'ca_file' to verify client certificates against")


@attrs.frozen
class Tls:
    """TLS on a listener (amqps), as RabbitMQ's ssl_options: certfile, keyfile,
    cacertfile, verify (verify_peer) and fail_if_no_peer_cert. TLS 1.2 and later."""

    # The server's certificate (PEM; intermediate certificates after it) and its
    # private key (PEM, not encrypted: nobody is there to type a passphrase).
    cert_file: Path
    key_file: Path
    # CA certificates (PEM) that client certificates are verified against.
    ca_file: Path | None = None
    # Ask clients for a certificate and verify it against ca_file; a certificate that
    # does not verify fails the TLS handshake. Also offers SASL EXTERNAL: the user is the
    # certificate subject's CN, and no password is checked.
    verify_peer: bool = attrs.field(default=False, validator=_verify_peer)
    # Refuse, at the TLS handshake, clients that send no certificate (otherwise they
    # may still log in with a password).
    fail_if_no_peer_cert: bool = attrs.field(default=False, validator=_fail_if_no_peer_cert)


@attrs.frozen
class Listener:
    """One TCP listener for AMQP 0-9-1; with `tls`, an amqps listener."""

    bind: str = DEFAULT_BIND
    port: int = attrs.field(default=DEFAULT_PORT, validator=[v.ge(0), v.le(65535)])
    tls: Tls | None = None


@attrs.frozen
class Limits:
    """Protocol and resource limits; each is enforced where it names."""

    # Offered in connection.tune; a client may ask for less, never more (530 otherwise).
    channel_max: int = attrs.field(default=2047, validator=[v.ge(1), v.le(65535)])
    frame_max: int = attrs.field(default=131_072, validator=[v.ge(4096), v.le(1_048_576)])
    heartbeat_s: int = attrs.field(default=60, validator=[v.ge(0), v.le(65535)])
    # Largest message body accepted by basic.publish (406 above it), as RabbitMQ's
    # max_message_size (default 128 MiB).
    message_bytes_max: int = attrs.field(
        default=134_217_728, validator=[v.ge(1), v.le(536_870_912)]
    )
    # Concurrent client connections; the next one is refused at accept (0: no limit).
    connections_max: int = attrs.field(default=0, validator=v.ge(0))
    # From TCP accept to connection.open-ok; a client slower than this is dropped.
    handshake_timeout_s: float = attrs.field(default=10.0, validator=v.gt(0))
    # A client that fails the handshake before connection.open (bad login without the
    # authentication_failure_close capability, bad tune values) is closed silently after
    # this delay, as RabbitMQ does, so failed attempts cannot be repeated at full speed.
    handshake_error_delay_s: float = attrs.field(default=3.0, validator=v.ge(0))
    # How long a connection we close waits for the client's close-ok.
    close_timeout_s: float = attrs.field(default=5.0, validator=v.gt(0))
    # Bytes of deliveries queued for one connection before the broker stops handing it
    # more messages until its socket drains (back-pressure on slow consumers).
    outbound_bytes_max: int = attrs.field(default=4_194_304, validator=v.ge(65_536))
    # How long a graceful shutdown waits for clients to answer connection.close.
    shutdown_timeout_s: float = attrs.field(default=5.0, validator=v.gt(0))
    # Bytes of ready messages one queue keeps in memory; the rest wait in its log.
    queue_memory_bytes_max: int = attrs.field(default=16 * 1024 * 1024, validator=v.ge(0))
    # Bytes of ready messages all queues together keep in memory.
    memory_bytes_max: int = attrs.field(default=512 * 1024 * 1024, validator=v.ge(0))
    # Below this much free space where the data lives, publishers are blocked
    # (connection.blocked, reading paused) until space returns (RabbitMQ: disk_free_limit).
    disk_free_bytes_min: int = attrs.field(default=50_000_000, validator=v.ge(0))
    # How often free disk space is checked.
    disk_check_interval_s: float = attrs.field(default=1.0, validator=v.gt(0))
    # Above this share of the machine's memory (or of the cgroup's memory limit, when
    # one is set) resident in the broker, publishers are blocked (connection.blocked,
    # reading paused) and queues keep new messages on disk, not in memory, until it
    # falls back (RabbitMQ: vm_memory_high_watermark.relative, 0.4).
    memory_high_watermark_fraction: float = attrs.field(default=0.4, validator=[v.gt(0), v.le(1)])
    # The same watermark in bytes; when set it replaces the fraction (RabbitMQ:
    # vm_memory_high_watermark.absolute). null: use the fraction.
    memory_high_watermark_bytes: int | None = attrs.field(
        default=None, validator=v.optional(v.ge(1))
    )
    # How often the broker's resident memory is checked (a read of /proc/self/statm).
    memory_check_interval_s: float = attrs.field(default=0.5, validator=v.gt(0))
    # A consumer holding a delivery unacked this long is cancelled and its messages are
    # requeued (RabbitMQ's consumer_timeout); x-consumer-timeout on the queue or the
    # consumer overrides it. 0: no default timeout.
    consumer_timeout_ms: int = attrs.field(default=1_800_000, validator=v.ge(0))
    # The longest delay a delayed-message exchange holds a message for (x-delay, or
    # x-deliver-at-ms from now); a publish asking for more is refused with 406.
    delay_ms_max: int = attrs.field(default=365 * 86_400_000, validator=v.ge(1))


def _fsync_policy(_: object, attribute: attrs.Attribute[str | int], value: str | int) -> None:
    if value in ("always", "never") or (type(value) is int and value > 0):
        return
    raise ValueError(
        f"'{attribute.name}' must be always, never or a number of milliseconds: {value!r}"
    )


@attrs.frozen
class Management:
    """The management HTTP API, the web console and /metrics (RabbitMQ's management
    plugin): users log in with HTTP basic auth and their tags decide what they see."""

    bind: str = DEFAULT_BIND
    # 0: no management listener at all.
    port: int = attrs.field(default=DEFAULT_MANAGEMENT_PORT, validator=[v.ge(0), v.le(65535)])
    # How often queue, channel and node counters are sampled for message rates (RabbitMQ's
    # collect_statistics_interval).
    sample_interval_s: float = attrs.field(default=5.0, validator=v.gt(0))
    # How many bytes of a message body the HTTP get (and the console's peek) returns at most
    # when a request asks for more or for no limit.
    get_bytes_max: int = attrs.field(default=1_048_576, validator=v.ge(1))
    # A second listener (on `bind`) serving only Prometheus's paths (/metrics,
    # /metrics/per-object, /metrics/detailed), as RabbitMQ's on 15692; 0: none. The
    # management port serves them too.
    prometheus_port: int = attrs.field(default=0, validator=[v.ge(0), v.le(65535)])


@attrs.frozen
class Storage:
    """How the store writes: the fsync policy and the size of segment files."""

    # always: every publisher confirm and commit-ok waits for an fsync (one fsync serves
    # everything written in the same moment: group commit). A number of milliseconds:
    # fsync at that interval (confirms wait for it). never: leave it to the OS (confirms
    # once written; a power cut can lose recent messages, a crash of amqpd cannot).
    fsync: str | int = attrs.field(default="always", validator=_fsync_policy)  # type: ignore[arg-type]
    segment_bytes_max: int = attrs.field(
        default=64 * 1024 * 1024, validator=[v.ge(65_536), v.le(1 << 40)]
    )


# How a user's password_hash is read. argon2 hashes (amqpd's own, from `amqpd
# hash-password`) name their parameters; RabbitMQ's formats come from its definitions
# exports: base64(salt[4] + digest(salt + password)).
HASHING_ALGORITHMS: Final = (
    "argon2",
    "rabbit_password_hashing_sha256",
    "rabbit_password_hashing_sha512",
    "rabbit_password_hashing_md5",
)
RABBIT_DIGEST_BYTES: Final = {
    "rabbit_password_hashing_sha256": 32,
    "rabbit_password_hashing_sha512": 64,
    "rabbit_password_hashing_md5": 16,
}
RABBIT_SALT_BYTES: Final = 4
# Tags RabbitMQ gives meaning to; others are kept and ignored, as RabbitMQ does.
KNOWN_TAGS: Final = ("administrator", "monitoring", "management", "policymaker", "impersonator")


def hash_algorithm(password_hash: str, hashing_algorithm: str | None) -> str:
    """The algorithm a hash is read with: argon2 hashes say so; the rest default to
    RabbitMQ's default, SHA-256."""
    if hashing_algorithm is not None:
        return hashing_algorithm
    return "argon2" if password_hash.startswith("$argon2") else "rabbit_password_hashing_sha256"


def _password_hash(user: User, _: attrs.Attribute[str], value: str) -> None:
    if not value:
        return  # no password: this user logs in only with a client certificate (EXTERNAL)
    algorithm = hash_algorithm(value, user.hashing_algorithm)
    if algorithm == "argon2":
        if not value.startswith("$argon2") or value.count("$") < 4:
            raise ValueError(f"user '{user.name}': password_hash is not an argon2 hash")
        return
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"user '{user.name}': password_hash is not base64 ({algorithm})") from None
    if len(raw) != RABBIT_SALT_BYTES + RABBIT_DIGEST_BYTES[algorithm]:
        raise ValueError(
            f"user '{user.name}': password_hash has {len(raw)} bytes, "
            f"not the {RABBIT_SALT_BYTES + RABBIT_DIGEST_BYTES[algorithm]} of {algorithm}"
        )


def _optional_count(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise ValueError(f"'{attribute.name}' must be an integer >= 0 or null: {value!r}")


@attrs.frozen
class UserLimits:
    """RabbitMQ's per-user limits (max-connections, max-channels); null: no limit."""

    # Connections the user may hold open at once, over every vhost; the next one is
    # refused at connection.open with 530 NOT_ALLOWED.
    connections_max: int | None = attrs.field(default=None, validator=_optional_count)
    # Channels the user may hold open at once, over every connection; the next
    # channel.open closes the connection with 530 NOT_ALLOWED, as RabbitMQ does.
    channels_max: int | None = attrs.field(default=None, validator=_optional_count)


@attrs.frozen
class User:
    """A user with a password hash (never the password), its tags and limits.

    `vhosts` is a shorthand: full permissions (configure, write and read `.*`) on each
    vhost named; `permissions` entries grant anything narrower."""

    name: str
    password_hash: str = attrs.field(default="", repr=False, validator=_password_hash)
    hashing_algorithm: str | None = attrs.field(
        default=None, validator=v.optional(v.in_(HASHING_ALGORITHMS))
    )
    tags: tuple[str, ...] = ()
    vhosts: tuple[str, ...] = ()
    limits: UserLimits = UserLimits()


def _default_users() -> tuple[User, ...]:
    return (User("guest", GUEST_PASSWORD_HASH, vhosts=("/",), tags=("administrator",)),)


@attrs.frozen
class VhostLimits:
    """RabbitMQ's vhost limits (max-connections, max-queues); null: no limit."""

    # Client connections open on the vhost; the next connection.open gets 530.
    connections_max: int | None = attrs.field(default=None, validator=_optional_count)
    # Queues in the vhost; declaring one more is refused with 406 PRECONDITION_FAILED.
    queues_max: int | None = attrs.field(default=None, validator=_optional_count)


@attrs.frozen
class Vhost:
    name: str
    description: str = ""
    limits: VhostLimits = VhostLimits()


def _regex(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"'{attribute.name}' is not a valid regular expression: {error}") from None


@attrs.frozen
class Permission:
    """RabbitMQ's configure, write and read regular expressions of one user in one vhost.
    A pattern is searched in the resource's name; an empty pattern matches nothing."""

    user: str
    configure: str = attrs.field(validator=_regex)
    write: str = attrs.field(validator=_regex)
    read: str = attrs.field(validator=_regex)
    vhost: str = "/"


@attrs.frozen
class TopicPermission:
    """RabbitMQ's topic permission: which routing keys a user may publish with (write)
    and bind with (read) on one topic exchange. `{username}` and `{vhost}` in a pattern
    stand for the user's name and the vhost."""

    user: str
    exchange: str
    write: str = attrs.field(validator=_regex)
    read: str = attrs.field(validator=_regex)
    vhost: str = "/"


POLICY_APPLY_TO: Final = ("queues", "exchanges", "all")
# What a policy may set (RabbitMQ's policy keys), with the values each takes: integer keys
# with their least value, keys with a fixed set of values, and string keys.
POLICY_INTEGER_KEYS: Final = {
    "message-ttl": 0,
    "expires": 1,
    "max-length": 0,
    "max-length-bytes": 0,
    "delivery-limit": 0,
    "consumer-timeout": 1,
    "retry-backoff-ms": 1,
    "retry-backoff-max-ms": 1,
}
POLICY_CHOICE_KEYS: Final = {"overflow": ("drop-head", "reject-publish", "reject-publish-dlx")}
POLICY_STRING_KEYS: Final = (
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "alternate-exchange",
)


def _policy_definition(
    _: object, __: attrs.Attribute[dict[str, str | int]], value: dict[str, str | int]
) -> None:
    if not value:
        raise ValueError("'definition' sets nothing")
    for key, setting in value.items():
        if key in POLICY_INTEGER_KEYS:
            least = POLICY_INTEGER_KEYS[key]
            if type(setting) is not int or setting < least:
                raise ValueError(f"definition '{key}' must be an integer >= {least}: {setting!r}")
        elif key in POLICY_CHOICE_KEYS:
            if setting not in POLICY_CHOICE_KEYS[key]:
                choices = ", ".join(POLICY_CHOICE_KEYS[key])
                raise ValueError(f"definition '{key}' must be one of {choices}: {setting!r}")
        elif key in POLICY_STRING_KEYS:
            if type(setting) is not str:
                raise ValueError(f"definition '{key}' must be a string: {setting!r}")
        else:
            known = ", ".join([*POLICY_INTEGER_KEYS, *POLICY_CHOICE_KEYS, *POLICY_STRING_KEYS])
            raise ValueError(f"definition '{key}' is not a policy key (known: {known})")


@attrs.frozen
class Policy:
    """Settings for the queues and exchanges of a vhost whose names match `pattern`, as a
    RabbitMQ policy: only the matching policy of highest priority applies."""

    name: str
    pattern: str = attrs.field(validator=_regex)
    definition: dict[str, str | int] = attrs.field(validator=_policy_definition)
    vhost: str = "/"
    apply_to: str = attrs.field(default="all", validator=v.in_(POLICY_APPLY_TO))
    priority: int = 0


def _policies(
    config: ServerConfig, _: attrs.Attribute[tuple[Policy, ...]], value: tuple[Policy, ...]
) -> None:
    _check_policies(config, value, references=_references(config))


def _check_policies(config: ServerConfig, value: tuple[Policy, ...], *, references: bool) -> None:
    seen: set[tuple[str, str]] = set()
    for index, policy in enumerate(value):
        where = f"policies[{index}] ('{policy.name}')"
        if references and policy.vhost not in config.vhost_names:
            raise ValueError(f"{where}: vhost '{policy.vhost}' is not in 'vhosts'")
        if (policy.vhost, policy.name) in seen:
            raise ValueError(f"{where}: a second policy of that name in vhost '{policy.vhost}'")
        seen.add((policy.vhost, policy.name))


def _unique(key: str, kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{key}: {kind} '{name}' is listed twice")
        seen.add(name)


def _vhosts(config: ServerConfig, _: object, value: tuple[Vhost, ...]) -> None:
    _unique("vhosts", "vhost", [vhost.name for vhost in value])


def _references(config: ServerConfig) -> bool:
    """Whether names a tenancy entry refers to must be in this config already: not when a
    definitions export is still to join it (check_references runs after the merge)."""
    return config.definitions_file is None


def check_references(config: ServerConfig) -> None:
    """ValueError for a user, vhost or policy that names a user or vhost defined nowhere;
    for a config that a definitions export has joined."""
    _check_users(config, config.users, references=True)
    _check_permissions(config, config.permissions, references=True)
    _check_topic_permissions(config, config.topic_permissions, references=True)
    _check_policies(config, config.policies, references=True)


def _users(config: ServerConfig, _: object, value: tuple[User, ...]) -> None:
    _check_users(config, value, references=_references(config))


def _check_users(config: ServerConfig, value: tuple[User, ...], *, references: bool) -> None:
    _unique("users", "user", [user.name for user in value])
    for index, user in enumerate(value):
        for vhost in user.vhosts:
            if references and vhost not in config.vhost_names:
                raise ValueError(
                    f"users[{index}]: user '{user.name}': vhost '{vhost}' is not in 'vhosts'"
                )


def _permissions(config: ServerConfig, _: object, value: tuple[Permission, ...]) -> None:
    _check_permissions(config, value, references=_references(config))


def _check_permissions(
    config: ServerConfig, value: tuple[Permission, ...], *, references: bool
) -> None:
    users = {user.name: user for user in config.users}
    seen: set[tuple[str, str]] = set()
    for index, permission in enumerate(value):
        where = f"permissions[{index}]"
        user = users.get(permission.user)
        if references and user is None:
            raise ValueError(f"{where}: user '{permission.user}' is not in 'users'")
        if references and permission.vhost not in config.vhost_names:
            raise ValueError(f"{where}: vhost '{permission.vhost}' is not in 'vhosts'")
        key = (permission.user, permission.vhost)
        if key in seen or (user is not None and permission.vhost in user.vhosts):
            raise ValueError(
                f"{where}: user '{permission.user}' already has permissions in vhost "
                f"'{permission.vhost}'"
            )
        seen.add(key)


def _topic_permissions(config: ServerConfig, _: object, value: tuple[TopicPermission, ...]) -> None:
    _check_topic_permissions(config, value, references=_references(config))


def _check_topic_permissions(
    config: ServerConfig, value: tuple[TopicPermission, ...], *, references: bool
) -> None:
    users = {user.name for user in config.users}
    seen: set[tuple[str, str, str]] = set()
    for index, permission in enumerate(value):
        where = f"topic_permissions[{index}]"
        if references and permission.user not in users:
            raise ValueError(f"{where}: user '{permission.user}' is not in 'users'")
        if references and permission.vhost not in config.vhost_names:
            raise ValueError(f"{where}: vhost '{permission.vhost}' is not in 'vhosts'")
        key = (permission.user, permission.vhost, permission.exchange)
        if key in seen:
            raise ValueError(
                f"{where}: a second topic permission for user '{permission.user}' on "
                f"exchange '{permission.exchange}' in vhost '{permission.vhost}'"
            )
        seen.add(key)


@attrs.frozen
class Authentication:
    """How logins are checked and how failed ones are slowed down."""

    # Failed logins from one address within this window count towards the slow-down.
    failure_window_s: float = attrs.field(default=60.0, validator=v.gt(0))
    # After this many failures from one address in the window, each further attempt
    # from it waits before it is answered: failure_delay_s, doubling up to the most.
    failures_before_delay: int = attrs.field(default=3, validator=v.ge(0))
    failure_delay_s: float = attrs.field(default=0.5, validator=v.ge(0))
    failure_delay_s_max: float = attrs.field(default=8.0, validator=v.ge(0))
    # Password checks running at once (argon2 costs memory and CPU; they run off the
    # event loop, at most this many together).
    password_checks_max: int = attrs.field(default=4, validator=v.ge(1))
    # A password that checked out is remembered (as a keyed digest, in memory) this many
    # seconds, so that clients reconnecting often pay the argon2 cost once per period.
    # Failures are never remembered this way; a reload forgets everything. 0: off.
    login_cache_s: float = attrs.field(default=300.0, validator=v.ge(0))


LOG_FORMATS: Final = ("plain", "json")

# Keys of the tenancy: the part of the config a `tenants_file` holds and SIGHUP reloads.
TENANCY_KEYS: Final = (
    "vhosts",
    "users",
    "permissions",
    "topic_permissions",
    "loopback_users",
    "policies",
)


@attrs.frozen
class ServerConfig:
    listeners: tuple[Listener, ...] = (Listener(),)
    data_dir: Path = DEFAULT_DATA_DIR
    limits: Limits = Limits()
    storage: Storage = Storage()
    authentication: Authentication = Authentication()
    management: Management = Management()
    # A second YAML file with the tenancy keys (vhosts, users, permissions,
    # topic_permissions, loopback_users, policies), relative to this file's folder. Those
    # keys then stay out of this file.
    tenants_file: Path | None = None
    # A RabbitMQ definitions export (JSON) to load at start and on reload: its users,
    # vhosts, permissions and policies join the tenancy; its exchanges, queues and
    # bindings are declared if missing. `--definitions` overrides it.
    definitions_file: Path | None = None
    # Where the audit log (JSON lines: logins, refusals, reloads, declare/delete/bind) is
    # appended; relative paths are under data_dir. null: no audit log.
    audit_log: Path | None = None
    vhosts: tuple[Vhost, ...] = attrs.field(default=(Vhost("/"),), validator=_vhosts)
    users: tuple[User, ...] = attrs.field(factory=_default_users, validator=_users)
    permissions: tuple[Permission, ...] = attrs.field(default=(), validator=_permissions)
    topic_permissions: tuple[TopicPermission, ...] = attrs.field(
        default=(), validator=_topic_permissions
    )
    # Re-read on SIGHUP and applied to the queues and exchanges already there.
    policies: tuple[Policy, ...] = attrs.field(default=(), validator=_policies)
    # Users who may log in only from a loopback address, as RabbitMQ's loopback_users.
    loopback_users: tuple[str, ...] = ("guest",)
    log_level: str = attrs.field(
        default="info", validator=v.in_(("debug", "info", "warning", "error"))
    )
    # plain: one line of text per record; json: one JSON object per line (time, level,
    # logger, message, and the record's fields: connection, user, vhost, ...).
    log_format: str = attrs.field(default="plain", validator=v.in_(LOG_FORMATS))
    # An fsync, a write of the store's buffers or the handling of one read from a client
    # that takes longer than this is logged as a warning, with what and how long. 0: off.
    slow_operation_ms: int = attrs.field(default=1000, validator=v.ge(0))

    @property
    def vhost_names(self) -> tuple[str, ...]:
        return tuple(vhost.name for vhost in self.vhosts)
