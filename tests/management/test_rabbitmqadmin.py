"""RabbitMQ's own `rabbitmqadmin` (3.10, unmodified, from Debian's rabbitmq-server
package) against amqpd's management API: what scripts built on it do, and the answers
they get. Installs the package with apt-get when the command is missing, as the interop
tests install rabbitmq-server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from interop.system import ensure_debian_package, free_port
from tests.support.broker_process import BrokerProcess


@pytest.fixture(scope="module")
def rabbitmqadmin() -> str:
    ensure_debian_package("rabbitmq-server", "rabbitmqadmin")
    command = shutil.which("rabbitmqadmin")
    assert command is not None
    return command


class Admin:
    def __init__(self, command: str, port: int) -> None:
        # Run by the system's python3, as its #! line does, not the test's virtualenv.
        python = shutil.which("python3") or sys.executable
        self.base = [
            python,
            command,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--username",
            "guest",
            "--password",
            "guest",
        ]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=30, check=False
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"rabbitmqadmin {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def tsv(self, *args: str) -> list[list[str]]:
        """`-f tsv -q list ...`: the rows, without the heading."""
        return [line.split("\t") for line in self.ok("-f", "tsv", "-q", *args).splitlines()]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, int]]:
    port = free_port()
    process = BrokerProcess(
        tmp_path_factory.mktemp("rabbitmqadmin"), ["--management-port", str(port)]
    ).start()
    try:
        yield process, port
    finally:
        assert process.stop() == 0


@pytest.fixture
def admin(rabbitmqadmin: str, broker: tuple[BrokerProcess, int]) -> Admin:
    return Admin(rabbitmqadmin, broker[1])


def test_show_overview(admin: Admin) -> None:
    output = admin.ok("show", "overview")
    assert "rabbitmq_version" in output and "object_totals.queues" in output
    (row,) = admin.tsv("show", "overview", "cluster_name", "object_totals.exchanges")
    assert row[0].startswith("amqpd@")
    assert int(row[1]) >= 6  # the default exchange and the five amq.* ones


def test_declare_publish_get_purge_delete(admin: Admin) -> None:
    assert admin.ok("declare", "exchange", "name=ra-x", "type=topic") == "exchange declared\n"
    assert admin.ok("declare", "queue", "name=ra-q", "durable=true") == "queue declared\n"
    declared = admin.ok("declare", "binding", "source=ra-x", "destination=ra-q", "routing_key=ra.#")
    assert declared == "binding declared\n"
    assert ["ra-x", "topic"] in admin.tsv("list", "exchanges")
    assert ["ra-x", "ra-q", "ra.#"] in admin.tsv("list", "bindings")

    for number in range(3):
        published = admin.ok(
            "publish", "exchange=ra-x", "routing_key=ra.one", f"payload=hello {number}"
        )
        assert published == "Message published\n"
    assert ["ra-q", "3"] in admin.tsv("list", "queues")
    assert admin.tsv("list", "queues", "name", "messages_ready", "durable") == [
        ["ra-q", "3", "True"]
    ]

    fetched = admin.ok("get", "queue=ra-q", "count=2")  # requeued: still 3
    assert "hello 0" in fetched and "hello 1" in fetched
    assert ["ra-q", "3"] in admin.tsv("list", "queues")
    taken = json.loads(admin.ok("-f", "raw_json", "get", "queue=ra-q", "ackmode=ack_requeue_false"))
    assert [(message["payload"], message["redelivered"]) for message in taken] == [
        ("hello 0", True)
    ]
    assert taken[0]["routing_key"] == "ra.one" and taken[0]["exchange"] == "ra-x"
    assert taken[0]["message_count"] == 2
    assert ["ra-q", "2"] in admin.tsv("list", "queues")

    assert admin.ok("purge", "queue", "name=ra-q") == "queue purged\n"
    assert ["ra-q", "0"] in admin.tsv("list", "queues")
    assert admin.ok("delete", "queue", "name=ra-q") == "queue deleted\n"
    assert admin.ok("delete", "exchange", "name=ra-x") == "exchange deleted\n"
    assert "ra-q" not in admin.ok("list", "queues")
    assert "ra-x" not in admin.ok("list", "exchanges")


def test_connections_channels_consumers_and_close(
    admin: Admin, broker: tuple[BrokerProcess, int]
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker[0].url))
    try:
        channel = connection.channel()
        channel.queue_declare("ra-consumed")
        tag = channel.basic_consume("ra-consumed", lambda *_: None)
        connection.process_data_events(0)

        ((name, user, channels),) = admin.tsv("list", "connections")
        assert (user, channels) == ("guest", "1")
        assert admin.tsv("list", "channels") == [[f"{name} (1)", "guest"]]
        consumers = json.loads(admin.ok("-f", "raw_json", "list", "consumers"))
        assert [(item["consumer_tag"], item["queue"]["name"]) for item in consumers] == [
            (tag, "ra-consumed")
        ]
        assert admin.tsv("list", "queues", "name", "consumers") == [["ra-consumed", "1"]]

        assert admin.ok("close", "connection", f"name={name}") == "connection closed\n"
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as raised:
            connection.sleep(5)
        assert raised.value.reply_code == 320
        assert admin.ok("list", "connections") == "No items\n"
    finally:
        if connection.is_open:
            connection.close()
    admin.ok("delete", "queue", "name=ra-consumed")


def test_users_vhosts_permissions_show_and_refuse_changes(admin: Admin) -> None:
    users = json.loads(admin.ok("-f", "raw_json", "list", "users"))
    assert [(user["name"], user["tags"]) for user in users] == [("guest", ["administrator"])]
    assert admin.tsv("list", "vhosts", "name") == [["/"]]
    assert admin.tsv("list", "permissions", "vhost", "user", "configure", "write", "read") == [
        ["/", "guest", ".*", ".*", ".*"]
    ]
    refusals = {
        "users": ("declare", "user", "name=bob", "password=secret", "tags="),
        "vhosts": ("declare", "vhost", "name=elsewhere"),
        "permissions": (
            "declare",
            "permission",
            "vhost=/",
            "user=guest",
            "configure=.*",
            "write=.*",
            "read=.*",
        ),
    }
    for kind, command in refusals.items():
        result = admin.run(*command)
        assert result.returncode != 0
        assert "405" in result.stderr
        # rabbitmqadmin shows the body as a bytes repr, with the apostrophe escaped.
        assert f"{kind} are defined in amqpd" in result.stderr
        assert "amqpd reload" in result.stderr
    deleted = admin.run("delete", "user", "name=guest")
    assert deleted.returncode != 0 and "users are defined in amqpd" in deleted.stderr
    assert admin.tsv("list", "users", "name") == [["guest"]]
    assert admin.tsv("list", "vhosts", "name") == [["/"]]


def test_export(admin: Admin, tmp_path: Path) -> None:
    admin.ok("declare", "queue", "name=ra-exported", "durable=true")
    target = tmp_path / "defs.json"
    assert admin.ok("export", str(target)).startswith("Exported definitions for 127.0.0.1")
    definitions = json.loads(target.read_text())
    assert definitions["rabbitmq_version"]
    assert "ra-exported" in [queue["name"] for queue in definitions["queues"]]
    assert [user["name"] for user in definitions["users"]] == ["guest"]
    admin.ok("delete", "queue", "name=ra-exported")
