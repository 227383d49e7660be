"""The permission matrix: every operation of RabbitMQ's access-control table, tried by a
user holding each combination of configure, write and read, plus topic permissions, the
user_id check and vhost access, with what each attempt gets back ("ok" or the reply code
and text).

The same users exist on both brokers: on amqpd through its YAML config (`amqpd_config`),
on RabbitMQ through rabbitmqctl (`create_on_rabbitmq`). `expected()` is the table
worked out from RabbitMQ's documentation; tests/integration/test_permission_matrix.py
holds amqpd to it, and `main()` here holds amqpd to what RabbitMQ actually does.

    python -m interop.permissions [--amqpd-url URL]
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

VHOST = "permission-matrix"
PASSWORD = "matrix-secret"
ADMIN = "pm-admin"
ALL = ".*"
NOTHING = ""


@attrs.frozen
class MatrixUser:
    name: str
    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()
    # Topic permissions: exchange -> (write, read)
    topics: dict[str, tuple[str, str]] = attrs.field(factory=dict)
    has_vhost: bool = True


def _combination_users() -> list[MatrixUser]:
    users = []
    for configure, write, read in itertools.product((False, True), repeat=3):
        name = f"pm-c{int(configure)}w{int(write)}r{int(read)}"
        users.append(
            MatrixUser(
                name,
                ALL if configure else NOTHING,
                ALL if write else NOTHING,
                ALL if read else NOTHING,
            )
        )
    return users


COMBINATIONS = _combination_users()
TOPIC_USER = MatrixUser(
    "pm-topic", ALL, ALL, ALL, topics={"amq.topic": (r"^{username}\.", r"^public\.")}
)
IMPERSONATOR = MatrixUser("pm-impersonator", ALL, ALL, ALL, tags=("impersonator",))
OUTSIDER = MatrixUser("pm-outsider", ALL, ALL, ALL, has_vhost=False)
USERS = [
    MatrixUser(ADMIN, ALL, ALL, ALL, tags=("administrator",)),
    *COMBINATIONS,
    TOPIC_USER,
    IMPERSONATOR,
    OUTSIDER,
]


# ------------------------------------------------------------------ operations


@attrs.frozen
class Operation:
    """`prepare(admin channel, base name)` makes what the attempt needs; `attempt(user
    channel, base name)` is the operation; `needs` lists (permission, kind, resource
    suffix) in the order RabbitMQ checks them."""

    name: str
    needs: tuple[tuple[str, str, str], ...]
    attempt: Callable[[Any, str], None]
    prepare: Callable[[Any, str], None] = lambda admin, base: None


def _exchange(admin: Any, base: str) -> None:
    admin.exchange_declare(f"{base}.x", "direct")


def _queue(admin: Any, base: str) -> None:
    admin.queue_declare(f"{base}.q")


def _queue_and_exchange(admin: Any, base: str) -> None:
    _queue(admin, base)
    _exchange(admin, base)


def _bound_queue(admin: Any, base: str) -> None:
    _queue_and_exchange(admin, base)
    admin.queue_bind(f"{base}.q", f"{base}.x", "k")


def _two_exchanges(admin: Any, base: str) -> None:
    admin.exchange_declare(f"{base}.src", "direct")
    admin.exchange_declare(f"{base}.dst", "fanout")


def _bound_exchanges(admin: Any, base: str) -> None:
    _two_exchanges(admin, base)
    admin.exchange_bind(f"{base}.dst", f"{base}.src", "k")


def _publish(channel: Any, exchange: str, routing_key: str, **properties: Any) -> None:
    """A publish, then a method that needs no permission: a refused publish closes the
    channel, and the next synchronous call hears why."""
    import pika

    channel.basic_publish(exchange, routing_key, b"m", pika.BasicProperties(**properties))
    channel.exchange_declare("amq.direct", passive=True)


def _consume(channel: Any, base: str) -> None:
    tag = channel.basic_consume(f"{base}.q", lambda *args: None)
    channel.basic_cancel(tag)


OPERATIONS = [
    Operation(
        "exchange.declare",
        (("configure", "exchange", "x"),),
        lambda ch, base: ch.exchange_declare(f"{base}.x", "direct"),
    ),
    Operation(
        "exchange.declare passive",
        (),
        lambda ch, base: ch.exchange_declare(f"{base}.x", "direct", passive=True),
        _exchange,
    ),
    Operation(
        "exchange.declare existing",
        (("configure", "exchange", "x"),),
        lambda ch, base: ch.exchange_declare(f"{base}.x", "direct"),
        _exchange,
    ),
    Operation(
        "exchange.declare alternate-exchange",
        (("configure", "exchange", "x"), ("read", "exchange", "x"), ("write", "exchange", "ae")),
        lambda ch, base: ch.exchange_declare(
            f"{base}.x", "direct", arguments={"alternate-exchange": f"{base}.ae"}
        ),
    ),
    Operation(
        "exchange.delete",
        (("configure", "exchange", "x"),),
        lambda ch, base: ch.exchange_delete(f"{base}.x"),
        _exchange,
    ),
    Operation(
        "queue.declare",
        (("configure", "queue", "q"),),
        lambda ch, base: ch.queue_declare(f"{base}.q"),
    ),
    Operation(
        "queue.declare passive",
        (),
        lambda ch, base: ch.queue_declare(f"{base}.q", passive=True),
        _queue,
    ),
    Operation(
        "queue.declare dead-letter-exchange",
        (("configure", "queue", "q"), ("read", "queue", "q"), ("write", "exchange", "dlx")),
        lambda ch, base: ch.queue_declare(
            f"{base}.q", arguments={"x-dead-letter-exchange": f"{base}.dlx"}
        ),
    ),
    Operation(
        "queue.delete",
        (("configure", "queue", "q"),),
        lambda ch, base: ch.queue_delete(f"{base}.q"),
        _queue,
    ),
    Operation(
        "queue.bind",
        (("write", "queue", "q"), ("read", "exchange", "x")),
        lambda ch, base: ch.queue_bind(f"{base}.q", f"{base}.x", "k"),
        _queue_and_exchange,
    ),
    Operation(
        "queue.unbind",
        (("write", "queue", "q"), ("read", "exchange", "x")),
        lambda ch, base: ch.queue_unbind(f"{base}.q", f"{base}.x", "k"),
        _bound_queue,
    ),
    Operation(
        "exchange.bind",
        (("write", "exchange", "dst"), ("read", "exchange", "src")),
        lambda ch, base: ch.exchange_bind(f"{base}.dst", f"{base}.src", "k"),
        _two_exchanges,
    ),
    Operation(
        "exchange.unbind",
        (("write", "exchange", "dst"), ("read", "exchange", "src")),
        lambda ch, base: ch.exchange_unbind(f"{base}.dst", f"{base}.src", "k"),
        _bound_exchanges,
    ),
    Operation(
        "basic.publish",
        (("write", "exchange", "x"),),
        lambda ch, base: _publish(ch, f"{base}.x", "k"),
        _exchange,
    ),
    Operation(
        "basic.publish default exchange",
        (("write", "exchange", "amq.default"),),
        lambda ch, base: _publish(ch, "", f"{base}.q"),
        _queue,
    ),
    Operation("basic.consume", (("read", "queue", "q"),), _consume, _queue),
    Operation(
        "basic.get",
        (("read", "queue", "q"),),
        lambda ch, base: ch.basic_get(f"{base}.q"),
        _queue,
    ),
    Operation(
        "queue.purge",
        (("read", "queue", "q"),),
        lambda ch, base: ch.queue_purge(f"{base}.q"),
        _queue,
    ),
]


def _topic_queue(admin: Any, base: str) -> None:
    _queue(admin, base)


def _topic_destination(admin: Any, base: str) -> None:
    admin.exchange_declare(f"{base}.dst", "fanout")


# (name, user, prepare, attempt): cases beyond the combinations.
SPECIAL_CASES: list[tuple[str, MatrixUser, Callable[[Any, str], None], Callable[[Any, str], None]]]
SPECIAL_CASES = [
    (
        "topic: publish with the user's own prefix",
        TOPIC_USER,
        lambda admin, base: None,
        lambda ch, base: _publish(ch, "amq.topic", "pm-topic.orders"),
    ),
    (
        "topic: publish with another prefix",
        TOPIC_USER,
        lambda admin, base: None,
        lambda ch, base: _publish(ch, "amq.topic", "other.orders"),
    ),
    (
        "topic: a direct exchange ignores topic permissions",
        TOPIC_USER,
        lambda admin, base: None,
        lambda ch, base: _publish(ch, "amq.direct", "other.orders"),
    ),
    (
        "topic: bind with a readable key",
        TOPIC_USER,
        _topic_queue,
        lambda ch, base: ch.queue_bind(f"{base}.q", "amq.topic", "public.#"),
    ),
    (
        "topic: bind with an unreadable key",
        TOPIC_USER,
        _topic_queue,
        lambda ch, base: ch.queue_bind(f"{base}.q", "amq.topic", "private.#"),
    ),
    (
        "topic: exchange-to-exchange bind with an unreadable key",
        TOPIC_USER,
        _topic_destination,
        lambda ch, base: ch.exchange_bind(f"{base}.dst", "amq.topic", "private.#"),
    ),
    (
        "user_id: the user's own name",
        COMBINATIONS[-1],
        lambda admin, base: None,
        lambda ch, base: _publish(ch, "amq.direct", "k", user_id=COMBINATIONS[-1].name),
    ),
    (
        "user_id: another name",
        COMBINATIONS[-1],
        lambda admin, base: None,
        lambda ch, base: _publish(ch, "amq.direct", "k", user_id="someone-else"),
    ),
    (
        "user_id: another name, by an impersonator",
        IMPERSONATOR,
        lambda admin, base: None,
        lambda ch, base: _publish(ch, "amq.direct", "k", user_id="someone-else"),
    ),
]


# -------------------------------------------------------------------- outcomes


def expected() -> dict[str, str]:
    """The matrix as RabbitMQ's access-control table says it must come out."""
    outcomes: dict[str, str] = {}
    for user in COMBINATIONS:
        allowed = {"configure": user.configure, "write": user.write, "read": user.read}
        for operation in OPERATIONS:
            base = _base(user, operation.name)
            outcome = "ok"
            for permission, kind, suffix in operation.needs:
                if allowed[permission] == NOTHING:
                    name = suffix if suffix == "amq.default" else f"{base}.{suffix}"
                    outcome = (
                        f"403 ACCESS_REFUSED - access to {kind} '{name}' in vhost '{VHOST}' "
                        f"refused for user '{user.name}'"
                    )
                    break
            outcomes[f"{user.name} {operation.name}"] = outcome

    def topic_refused(key: str) -> str:
        return (
            f"403 ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost "
            f"'{VHOST}' refused for user 'pm-topic'"
        )

    outcomes.update(
        {
            "topic: publish with the user's own prefix": "ok",
            "topic: publish with another prefix": topic_refused("other.orders"),
            "topic: a direct exchange ignores topic permissions": "ok",
            "topic: bind with a readable key": "ok",
            "topic: bind with an unreadable key": topic_refused("private.#"),
            "topic: exchange-to-exchange bind with an unreadable key": topic_refused("private.#"),
            "user_id: the user's own name": "ok",
            "user_id: another name": (
                "406 PRECONDITION_FAILED - user_id property set to 'someone-else' but "
                f"authenticated user was '{COMBINATIONS[-1].name}'"
            ),
            "user_id: another name, by an impersonator": "ok",
            "vhost: a user without permissions in it": (
                f"530 NOT_ALLOWED - access to vhost '{VHOST}' refused for user 'pm-outsider'"
            ),
        }
    )
    return outcomes


def _base(user: MatrixUser, operation: str) -> str:
    return f"pm.{user.name}.{operation.replace(' ', '-')}"


def url_for(broker_url: str, user: str) -> str:
    """`broker_url` (any user, any vhost) with `user` and the matrix vhost."""
    parts = urllib.parse.urlsplit(broker_url)
    netloc = f"{user}:{PASSWORD}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, "/" + urllib.parse.quote(VHOST, safe=""), "", "")
    )


def _outcome(error: BaseException) -> str:
    args = getattr(error, "args", ())
    # pika: ChannelClosedByBroker(code, text); ConnectionClosedByBroker(code, text);
    # ProbableAccessDeniedError wraps the latter's text.
    if len(args) == 2 and isinstance(args[0], int):
        return f"{args[0]} {args[1]}"
    if args and isinstance(args[0], BaseException):
        return _outcome(args[0])
    text = str(error)
    wrapped = re.search(r'\((\d+)\) "(.*)"', text)  # ProbableAccessDeniedError's text
    if wrapped:
        return f"{wrapped.group(1)} {wrapped.group(2)}"
    return f"raised {type(error).__name__}: {text}"


def record(broker_url: str) -> dict[str, str]:
    """Run the whole matrix against the broker at `broker_url` (the users exist)."""
    import pika

    def connect(user: str) -> Any:
        return pika.BlockingConnection(pika.URLParameters(url_for(broker_url, user)))

    outcomes: dict[str, str] = {}
    admin_connection = connect(ADMIN)
    admin = admin_connection.channel()
    connections = {}
    try:
        for user in COMBINATIONS:
            connection = connections[user.name] = connect(user.name)
            for operation in OPERATIONS:
                base = _base(user, operation.name)
                operation.prepare(admin, base)
                outcomes[f"{user.name} {operation.name}"] = _attempt(
                    connection, operation.attempt, base
                )
        for name, user, prepare, attempt in SPECIAL_CASES:
            connection = connections.get(user.name)
            if connection is None:
                connection = connections[user.name] = connect(user.name)
            base = f"pm.special.{len(outcomes)}"
            prepare(admin, base)
            outcomes[name] = _attempt(connection, attempt, base)
        try:
            connect(OUTSIDER.name).close()
            outcomes["vhost: a user without permissions in it"] = "ok"
        except Exception as error:  # the refusal is the outcome
            outcomes["vhost: a user without permissions in it"] = _outcome(error)
    finally:
        for connection in connections.values():
            if connection.is_open:
                connection.close()
        admin_connection.close()
    return outcomes


def _attempt(connection: Any, attempt: Callable[[Any, str], None], base: str) -> str:
    channel = connection.channel()
    try:
        attempt(channel, base)
    except Exception as error:  # the refusal is the outcome
        return _outcome(error)
    channel.close()
    return "ok"


# ------------------------------------------------------------------ the brokers


def amqpd_config(password_hash: str) -> dict[str, Any]:
    """The tenancy part of an amqpd config with the matrix's users (guest stays)."""
    from amqpd.config.model import GUEST_PASSWORD_HASH

    users: list[dict[str, Any]] = [
        {"name": "guest", "password_hash": GUEST_PASSWORD_HASH, "vhosts": ["/"]}
    ]
    permissions = []
    topic_permissions = []
    for user in USERS:
        users.append({"name": user.name, "password_hash": password_hash, "tags": list(user.tags)})
        if user.has_vhost:
            permissions.append(
                {
                    "user": user.name,
                    "vhost": VHOST,
                    "configure": user.configure,
                    "write": user.write,
                    "read": user.read,
                }
            )
        else:
            permissions.append(
                {"user": user.name, "vhost": "/", "configure": ALL, "write": ALL, "read": ALL}
            )
        for exchange, (write, read) in user.topics.items():
            topic_permissions.append(
                {
                    "user": user.name,
                    "vhost": VHOST,
                    "exchange": exchange,
                    "write": write,
                    "read": read,
                }
            )
    return {
        "vhosts": ["/", VHOST],
        "users": users,
        "permissions": permissions,
        "topic_permissions": topic_permissions,
    }


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def create_on_rabbitmq() -> None:
    delete_on_rabbitmq()
    _rabbitmqctl("add_vhost", VHOST)
    for user in USERS:
        _rabbitmqctl("add_user", user.name, PASSWORD)
        _rabbitmqctl("set_user_tags", user.name, *user.tags)
        vhost = VHOST if user.has_vhost else "/"
        _rabbitmqctl(
            "set_permissions", "-p", vhost, user.name, user.configure, user.write, user.read
        )
        for exchange, (write, read) in user.topics.items():
            _rabbitmqctl("set_topic_permissions", "-p", VHOST, user.name, exchange, write, read)


def delete_on_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], capture_output=True, check=False)
    for user in USERS:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user.name], capture_output=True, check=False
        )


@contextmanager
def amqpd_with_matrix_users(url: str | None = None) -> Iterator[str]:
    """An amqpd whose config holds the matrix's users (started here unless `url`)."""
    if url:
        yield url
        return
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from amqpd.auth.passwords import hash_password
    from tests.support.broker_process import BrokerProcess

    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "amqpd.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listeners": [{"bind": "127.0.0.1", "port": 0}],
                    **amqpd_config(hash_password(PASSWORD, algorithm="sha256")),
                }
            )
        )
        process = BrokerProcess(Path(folder) / "data", ["--config", str(config)]).start()
        try:
            yield process.url
        finally:
            process.stop()


def main(argv: list[str] | None = None) -> int:
    from interop.rabbitmq import rabbitmq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqpd-url", help="an amqpd already running with the matrix users")
    args = parser.parse_args(argv)
    with amqpd_with_matrix_users(args.amqpd_url) as amqpd_url, rabbitmq() as rabbitmq_url:
        ours = record(amqpd_url)
        create_on_rabbitmq()
        try:
            theirs = record(rabbitmq_url)
        finally:
            delete_on_rabbitmq()
    different = [case for case in theirs if ours.get(case) != theirs[case]]
    print(
        f"| cases | same | different |\n|---|---|---|\n| {len(theirs)} | "
        f"{len(theirs) - len(different)} | {len(different)} |"
    )
    for case in different:
        print(f"\n{case}:\n  rabbitmq: {theirs[case]}\n  amqpd:    {ours.get(case)}")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
