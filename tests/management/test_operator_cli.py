"""The operator commands (`amqpd list`, `purge`, `delete`, `export-definitions`, `alarms`,
`overview`) run as operators run them: subprocesses speaking HTTP to a real broker's
management port, with pika clients making the objects they show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pika
import pika.exceptions
import pytest

from interop.system import free_port
from tests.support.broker_process import BrokerProcess


def amqpd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AMQPD_")}
    return subprocess.run(
        [sys.executable, "-m", "amqpd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**environment, **(env or {})},
    )


class Broker:
    def __init__(self, process: BrokerProcess, management_port: int) -> None:
        self.process = process
        self.management_url = f"http://127.0.0.1:{management_port}"

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return amqpd(*args, "--management-url", self.management_url, env=env)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.process.url))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    port = free_port()
    process = BrokerProcess(
        tmp_path_factory.mktemp("operator-cli"), ["--management-port", str(port)]
    ).start()
    try:
        yield Broker(process, port)
    finally:
        assert process.stop() == 0


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def row_of(rows: Sequence[Sequence[str]], name: str) -> list[str]:
    matches = [list(row) for row in rows if name in row]
    assert len(matches) == 1, rows
    return matches[0]


def publish(broker: Broker, queue: str, count: int, durable: bool = False) -> None:
    connection = broker.connect()
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=durable)
        for number in range(count):
            channel.basic_publish("", queue, f"message {number}".encode())
        channel.queue_declare(queue, passive=True)  # a round trip: the publishes are in
    finally:
        connection.close()


def test_list_queues_shows_message_counts_in_each_format(broker: Broker) -> None:
    publish(broker, "cli-counted", 3)
    rows = table(broker.ok("list", "queues"))
    assert rows[0][:6] == ["vhost", "name", "messages", "ready", "unacked", "consumers"]
    assert row_of(rows, "cli-counted")[:6] == ["/", "cli-counted", "3", "3", "0", "0"]

    tsv = broker.ok("list", "queues", "--format", "tsv", "--columns", "name,messages")
    lines = [line.split("\t") for line in tsv.splitlines()]
    assert lines[0] == ["name", "messages"]
    assert ["cli-counted", "3"] in lines

    items = json.loads(broker.ok("list", "queues", "--format", "json", "--vhost", "/"))
    (item,) = [item for item in items if item["name"] == "cli-counted"]
    assert item["messages"] == 3 and item["messages_ready"] == 3 and item["vhost"] == "/"


def test_list_every_kind_with_a_consumer_connected(broker: Broker) -> None:
    connection = broker.connect()
    try:
        channel = connection.channel()
        channel.exchange_declare("cli-x", "direct")
        channel.queue_declare("cli-consumed")
        channel.queue_bind("cli-consumed", "cli-x", "cli-key")
        tag = channel.basic_consume("cli-consumed", lambda *_: None)
        connection.process_data_events(0)

        exchanges = table(broker.ok("list", "exchanges"))
        assert row_of(exchanges, "cli-x")[:3] == ["/", "cli-x", "direct"]
        assert row_of(exchanges, "amq.topic")[:3] == ["/", "amq.topic", "topic"]
        bindings = table(broker.ok("list", "bindings"))
        assert row_of(bindings, "cli-key") == ["/", "cli-x", "cli-consumed", "queue", "cli-key"]

        connections = broker.ok("list", "connections")
        assert "Pika Python Client Library" in connections
        assert "guest" in connections and "running" in connections
        channels = broker.ok("list", "channels")
        assert "(1)" in channels
        consumers = table(broker.ok("list", "consumers"))
        assert consumers[0][:3] == ["vhost", "queue", "consumer_tag"]
        assert row_of(consumers, tag)[:3] == ["/", "cli-consumed", tag]
        queues = table(broker.ok("list", "queues"))
        assert row_of(queues, "cli-consumed")[5] == "1"  # one consumer

        assert table(broker.ok("list", "vhosts"))[1][0] == "/"
        assert table(broker.ok("list", "users"))[1] == ["guest", "administrator"]
    finally:
        connection.close()


def test_purge_empties_the_queue_and_delete_removes_it(broker: Broker) -> None:
    publish(broker, "cli-purged", 5)
    assert broker.ok("purge", "queue", "cli-purged") == "purged queue 'cli-purged' in vhost '/'\n"
    assert row_of(table(broker.ok("list", "queues")), "cli-purged")[2] == "0"

    assert broker.ok("delete", "queue", "cli-purged").startswith("deleted queue 'cli-purged'")
    assert "cli-purged" not in broker.ok("list", "queues")
    again = broker.run("delete", "queue", "cli-purged")
    assert again.returncode == 1
    assert "queue 'cli-purged' in vhost '/' not found (404" in again.stderr
    missing = broker.run("purge", "queue", "cli-never", "--vhost", "/")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_delete_connection_closes_it(broker: Broker) -> None:
    connection = broker.connect()
    try:
        rows = json.loads(broker.ok("list", "connections", "--format", "json"))
        names = [row["name"] for row in rows]
        assert len(names) == 1
        closed = broker.ok("delete", "connection", names[0], "--reason", "maintenance")
        assert closed == f"closed connection '{names[0]}'\n"
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as raised:
            connection.sleep(5)
        assert raised.value.reply_code == 320
        assert "maintenance" in raised.value.reply_text
    finally:
        if connection.is_open:
            connection.close()
    assert json.loads(broker.ok("list", "connections", "--format", "json")) == []


def test_exported_definitions_load_into_a_new_broker(broker: Broker, tmp_path: Path) -> None:
    connection = broker.connect()
    try:
        channel = connection.channel()
        channel.exchange_declare("cli-exported-x", "topic", durable=True)
        channel.queue_declare("cli-exported", durable=True, arguments={"x-max-length": 10})
        channel.queue_bind("cli-exported", "cli-exported-x", "a.#")
    finally:
        connection.close()
    printed = json.loads(broker.ok("export-definitions"))
    (queue,) = [queue for queue in printed["queues"] if queue["name"] == "cli-exported"]
    assert queue["arguments"] == {"x-max-length": 10} and queue["durable"] is True
    export = tmp_path / "defs.json"
    result = broker.run("export-definitions", str(export))
    assert result.returncode == 0 and result.stdout == ""
    assert f"exported definitions to {export}" in result.stderr
    assert json.loads(export.read_text()) == printed

    port = free_port()
    other = BrokerProcess(
        tmp_path / "data", ["--definitions", str(export), "--management-port", str(port)]
    ).start()
    try:
        loaded = Broker(other, port)
        queues = table(loaded.ok("list", "queues"))
        assert row_of(queues, "cli-exported")[:3] == ["/", "cli-exported", "0"]
        assert row_of(table(loaded.ok("list", "bindings")), "a.#")[1:3] == [
            "cli-exported-x",
            "cli-exported",
        ]
    finally:
        assert other.stop() == 0


def test_overview_and_no_alarms(broker: Broker) -> None:
    overview = broker.ok("overview")
    assert overview.startswith("amqpd ")
    assert "alarms: none" in overview
    result = broker.run("alarms")
    assert (result.returncode, result.stdout) == (0, "no alarms in effect\n")


def test_alarms_exit_1_while_one_is_in_effect_with_the_url_from_the_config(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "amqpd.yaml"
    # More free disk space than any machine has: the disk alarm is on from the start.
    config.write_text(
        f"limits:\n  disk_free_bytes_min: {10**18}\nmanagement:\n  port: {port}\n",
        encoding="utf-8",
    )
    # BrokerProcess turns the management port off unless told one: the same as the file's.
    process = BrokerProcess(
        tmp_path / "data", ["--config", str(config), "--port", "0", "--management-port", str(port)]
    ).start()
    try:
        process.wait_for("disk")
        result = amqpd("alarms", "--config", str(config))
        assert result.returncode == 1, result.stderr
        assert "alarms in effect" in result.stdout
        assert "disk on " in result.stdout
    finally:
        assert process.stop() == 0


def test_a_refused_login_exits_77_and_says_so(broker: Broker) -> None:
    result = broker.run("list", "queues", "--password", "wrong")
    assert result.returncode == 77
    assert "login refused (401) for user 'guest'" in result.stderr
    from_env = broker.run("list", "queues", env={"AMQPD_PASSWORD": "wrong"})
    assert from_env.returncode == 77
    assert broker.run("list", "queues", env={"AMQPD_PASSWORD": "guest"}).returncode == 0


def test_no_broker_exits_69_and_says_where_it_looked() -> None:
    port = free_port()
    result = amqpd("list", "queues", "--management-port", str(port))
    assert result.returncode == 69
    assert f"is amqpd running with its management port on 127.0.0.1:{port}?" in result.stderr


def test_unknown_vhost_and_bad_usage(broker: Broker) -> None:
    result = broker.run("list", "queues", "--vhost", "nowhere")
    assert result.returncode == 1
    assert "vhost 'nowhere' not found" in result.stderr
    assert broker.run("list", "nothing").returncode == 2
    assert broker.run("list", "users", "--vhost", "/").returncode == 2
