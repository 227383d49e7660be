"""Users, permissions and limits from the config, as a running broker applies them:
reload (grant, revoke, delete a user or a vhost, a bad file refused), RabbitMQ's limits
with its codes and texts, login failures, and the operator commands."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
import yaml

from amqpd.auth.passwords import hash_password
from tests.support.audit import wait_for_entry
from tests.support.broker_process import BrokerProcess

PASSWORD = "app-secret"
HASH = hash_password(PASSWORD, algorithm="sha256")


def tenancy(**changes: object) -> dict[str, object]:
    """A config with users `app` (its rights in vhost `t` given by `permissions`) and
    `guest`; keyword arguments replace top-level keys."""
    config: dict[str, object] = {
        "listeners": [{"bind": "127.0.0.1", "port": 0}],
        "audit_log": "audit.log",
        "vhosts": ["/", "t"],
        "users": [
            {"name": "guest", "password_hash": HASH, "vhosts": ["/", "t"]},
            {"name": "app", "password_hash": HASH},
        ],
        "permissions": [{"user": "app", "vhost": "t", "configure": "", "write": "", "read": ".*"}],
        "authentication": {"failures_before_delay": 2, "failure_delay_s": 0.2},
    }
    config.update(changes)
    return config


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "amqpd.yaml"
    path.write_text(yaml.safe_dump(tenancy()))
    return path


@pytest.fixture
def broker(config_file: Path, tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path / "data", ["--config", str(config_file)]).start()
    try:
        yield process
    finally:
        process.stop()


def connect(
    process: BrokerProcess, user: str = "app", vhost: str = "t", password: str = PASSWORD
) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.URLParameters(f"amqp://{user}:{password}@{process.host}:{process.port}/{vhost}")
    )


def reload(process: BrokerProcess, config_file: Path, config: dict[str, object]) -> None:
    config_file.write_text(yaml.safe_dump(config))
    since = process.line_count
    process.signal(signal.SIGHUP)
    process.wait_for(r"config reloaded: 2 vhost", since=since)


def wait_closed(connection: pika.BlockingConnection, timeout_s: float = 10.0) -> BaseException:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            connection.process_data_events(time_limit=0.1)
        except pika.exceptions.ConnectionClosedByBroker as closed:
            return closed
    raise AssertionError("the broker did not close the connection")


def refused(call: object) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        assert callable(call)
        call()
    return raised.value.reply_code, raised.value.reply_text


def test_a_grant_and_a_revoke_apply_to_the_next_method_of_an_open_connection(
    broker: BrokerProcess, config_file: Path
) -> None:
    guest = connect(broker, "guest")
    guest.channel().queue_declare("work")
    connection = connect(broker)
    channel = connection.channel()
    assert refused(lambda: channel.queue_declare("mine")) == (
        403,
        "ACCESS_REFUSED - access to queue 'mine' in vhost 't' refused for user 'app'",
    )
    grant = tenancy(
        permissions=[
            {"user": "app", "vhost": "t", "configure": "^mine$", "write": ".*", "read": ".*"}
        ]
    )
    reload(broker, config_file, grant)
    channel = connection.channel()  # same connection: no reconnect needed
    channel.queue_declare("mine")
    channel.basic_publish("", "work", b"x")
    assert channel.queue_declare("work", passive=True).method.message_count == 1

    revoke = tenancy(
        permissions=[
            {"user": "app", "vhost": "t", "configure": "^mine$", "write": ".*", "read": ""}
        ]
    )
    reload(broker, config_file, revoke)
    assert refused(lambda: channel.basic_get("work"))[0] == 403
    connection.close()
    guest.close()


def test_a_deleted_user_or_vhost_has_its_connections_closed_with_320(
    broker: BrokerProcess, config_file: Path
) -> None:
    app = connect(broker)
    guest_in_t = connect(broker, "guest")
    guest_in_root = connect(broker, "guest", "%2f")
    without_app = tenancy(
        users=[{"name": "guest", "password_hash": HASH, "vhosts": ["/", "t"]}], permissions=[]
    )
    reload(broker, config_file, without_app)
    closed = wait_closed(app)
    assert (closed.args[0], closed.args[1]) == (320, "CONNECTION_FORCED - user 'app' is deleted")
    assert guest_in_t.is_open

    without_t = tenancy(
        vhosts=["/", "u"],
        users=[{"name": "guest", "password_hash": HASH, "vhosts": ["/"]}],
        permissions=[],
    )
    config_file.write_text(yaml.safe_dump(without_t))
    broker.signal(signal.SIGHUP)
    broker.wait_for(r"vhost 't' is no longer configured")
    closed = wait_closed(guest_in_t)
    assert (closed.args[0], closed.args[1]) == (320, "CONNECTION_FORCED - vhost 't' is deleted")
    guest_in_root.channel().queue_declare("still-here")  # others are untouched
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(broker)  # the deleted user cannot log in again
    guest_in_root.close()


def test_a_bad_config_is_refused_and_the_running_tenancy_stays(
    broker: BrokerProcess, config_file: Path
) -> None:
    bad = tenancy(
        permissions=[{"user": "nobody", "vhost": "t", "configure": "", "write": "", "read": ""}]
    )
    config_file.write_text(yaml.safe_dump(bad))
    broker.signal(signal.SIGHUP)
    broker.wait_for(r"config not reloaded, the running one stays")
    broker.wait_for(r"permissions\[0\]: user 'nobody' is not in 'users'")
    connect(broker).close()  # app still has its permissions in t


def test_amqpd_reload_validates_then_signals_the_running_broker(
    broker: BrokerProcess, config_file: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "amqpd",
        "reload",
        "--config",
        str(config_file),
        "--data-dir",
        str(broker.data_dir),
    ]
    config_file.write_text(yaml.safe_dump(tenancy(vhosts=["/", "t", "late"])))
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    broker.wait_for(r"config reloaded: 3 vhost")
    connect(broker, "guest", "%2f").close()

    config_file.write_text("vhosts: [7]\n")
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 78
    assert "not reloaded" in done.stderr and "vhosts" in done.stderr


def test_limits_are_refused_with_rabbitmqs_codes(tmp_path: Path) -> None:
    config = tmp_path / "amqpd.yaml"
    config.write_text(
        yaml.safe_dump(
            tenancy(
                vhosts=["/", {"name": "t", "limits": {"connections_max": 2, "queues_max": 1}}],
                users=[
                    {"name": "guest", "password_hash": HASH, "vhosts": ["/", "t"]},
                    {
                        "name": "app",
                        "password_hash": HASH,
                        "vhosts": ["/", "t"],
                        "limits": {"connections_max": 1, "channels_max": 2},
                    },
                ],
                permissions=[],
            )
        )
    )
    process = BrokerProcess(tmp_path / "data", ["--config", str(config)]).start()
    try:
        app = connect(process)
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as user_limit:
            connect(process, vhost="%2f")
        assert "connection refused for user 'app': user connection limit (1) is reached" in str(
            user_limit.value
        )
        guest = connect(process, "guest")
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as vhost_limit:
            connect(process, "guest")
        assert (
            "access to vhost 't' refused for user 'guest': connection limit (2) is reached"
            in str(vhost_limit.value)
        )
        channel = guest.channel()
        channel.queue_declare("one")
        assert refused(lambda: channel.queue_declare("two")) == (
            406,
            "PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost 't' (1) "
            "is reached",
        )
        app.channel()
        app.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as channel_limit:
            app.channel()
        assert channel_limit.value.reply_code == 530
        assert channel_limit.value.reply_text == (
            "NOT_ALLOWED - number of channels opened for user 'app' has reached the "
            "maximum allowed user limit of (2)"
        )
        guest.close()
    finally:
        assert process.stop() == 0


def test_failed_logins_get_403_with_a_reason_and_are_slowed_down(broker: BrokerProcess) -> None:
    for _attempt in range(3):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as failed:
            connect(broker, password="wrong")
        assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(
            failed.value
        )
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(broker, "no-such-user")
    broker.wait_for(r"login waits 0\.\d s \(earlier failures\)")
    connect(broker).close()  # the right password still works from the same address
    entries = wait_for_entry(
        broker.data_dir / "audit.log", {"event": "connection_opened", "user": "app"}
    )
    events = [(entry["event"], entry.get("user")) for entry in entries]
    assert events.count(("login_failed", "app")) == 3
    assert ("login_failed", "no-such-user") in events
    assert ("login", "app") in events
    opened = [entry for entry in entries if entry["event"] == "connection_opened"]
    assert opened[-1]["user"] == "app" and opened[-1]["vhost"] == "t"


def test_hash_password_makes_a_hash_that_logs_in(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "amqpd", "hash-password"],
        input="s3cret pass\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0
    argon2_hash = made.stdout.strip()
    assert argon2_hash.startswith("$argon2id$")
    config = tmp_path / "amqpd.yaml"
    config.write_text(
        yaml.safe_dump(
            tenancy(
                users=[{"name": "app", "password_hash": argon2_hash, "vhosts": ["t"]}],
                permissions=[],
                loopback_users=[],
            )
        )
    )
    checked = subprocess.run(
        [sys.executable, "-m", "amqpd", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "app  tags=-  login=password  vhosts: t (.* .* .*)" in checked.stdout
    process = BrokerProcess(tmp_path / "data", ["--config", str(config)]).start()
    try:
        connect(process, password="s3cret pass").close()
    finally:
        assert process.stop() == 0


def test_check_config_names_the_file_and_key_of_an_error(tmp_path: Path) -> None:
    config = tmp_path / "amqpd.yaml"
    tenants = tmp_path / "tenants.yaml"
    config.write_text("tenants_file: tenants.yaml\n")
    tenants.write_text(
        yaml.safe_dump({"vhosts": ["/"], "users": [{"name": "x", "password_hash": "abc"}]})
    )
    checked = subprocess.run(
        [sys.executable, "-m", "amqpd", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 78
    assert f"{tenants}: users[0]" in checked.stderr
    assert "password_hash is not base64" in checked.stderr
