"""The broker's log: plain lines by default, JSON lines with --log-format json; each
connection's login, open and close once; refusals; slow operations; nothing per
message."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pamqp import commands

from amqpd.server.channel import ChannelHandler
from amqpd.store import Store
from tests.support.broker_process import BrokerProcess
from tests.support.in_process import running_node
from tests.support.raw_client import RawClient

PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")


@pytest.fixture
def json_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path / "data", ["--log-format", "json"]).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def records(process: BrokerProcess, since: int = 0) -> list[dict[str, Any]]:
    """Every line from `since` on, parsed: each must be one JSON object."""
    lines = process.log.splitlines()[since:]
    parsed = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def only(found: list[dict[str, Any]], pattern: str) -> dict[str, Any]:
    matching = [record for record in found if re.search(pattern, record["message"])]
    assert len(matching) == 1, (pattern, found)
    return matching[0]


def test_json_logs_carry_the_connection_user_and_vhost(json_broker: BrokerProcess) -> None:
    process = json_broker
    since = process.line_count
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            process.host, process.port, client_properties={"connection_name": "orders-app"}
        )
    )
    connection.channel().queue_declare("", exclusive=True)
    connection.close()
    process.wait_for("closed by client", since=since)
    found = records(process, since)
    for record in found:
        assert {"time", "level", "logger", "message"} <= record.keys()
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["time"])
    login = only(found, r"user 'guest' authenticated \(PLAIN\)")
    assert login["level"] == "INFO"
    assert login["logger"] == "amqpd.connection"
    assert login["user"] == "guest"
    assert login["mechanism"] == "PLAIN"
    assert "(orders-app)" in login["connection"]
    opened = only(found, r"opened vhost '/'")
    assert (opened["user"], opened["vhost"]) == ("guest", "/")
    assert opened["connection"] == login["connection"]
    closed = only(found, "closed by client")
    assert (closed["user"], closed["vhost"], closed["connection"]) == (
        "guest",
        "/",
        login["connection"],
    )
    assert len(found) == 3  # and nothing else: not the declare, not the channel


def test_a_refused_login_and_an_abrupt_close_are_logged_once(json_broker: BrokerProcess) -> None:
    process = json_broker
    since = process.line_count
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(
            pika.ConnectionParameters(
                process.host,
                process.port,
                credentials=pika.PlainCredentials("guest", "wrong"),
                connection_attempts=1,
            )
        )
    process.wait_for("login refused", since=since)
    with RawClient(process.host, process.port) as client:
        client.handshake()
        client.open_channel(1)
        client.sock.shutdown(socket.SHUT_RDWR)  # no connection.close
    process.wait_for("closed the socket abruptly", since=since)
    found = records(process, since)
    refused = only(found, "login refused from 127.0.0.1: user 'guest' - invalid credentials")
    assert refused["level"] == "WARNING"
    assert (refused["user"], refused["peer"], refused["mechanism"]) == (
        "guest",
        "127.0.0.1",
        "PLAIN",
    )
    assert not [record for record in found if "handshake failed" in record["message"]]
    abrupt = only(found, "closed the socket abruptly")
    assert (abrupt["level"], abrupt["user"], abrupt["vhost"]) == ("WARNING", "guest", "/")


def test_plain_logs_by_default_and_nothing_per_message(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path / "data").start()
    try:
        connection = pika.BlockingConnection(pika.URLParameters(process.url))
        channel = connection.channel()
        channel.queue_declare("quiet", auto_delete=True)
        channel.confirm_delivery()
        process.wait_for("opened vhost")
        since = process.line_count
        for number in range(500):
            channel.basic_publish("", "quiet", b"%d" % number)
        for got, (method, _, _) in enumerate(
            channel.consume("quiet", inactivity_timeout=5), start=1
        ):
            assert method is not None, "the messages did not come back"
            channel.basic_ack(method.delivery_tag)
            if got == 500:
                break
        channel.cancel()
        assert process.line_count == since, process.log  # 500 messages: not one line
        connection.close()
        process.wait_for("closed by client")
    finally:
        assert process.stop() == 0
    assert process.lines, "nothing logged"
    for line in process.lines:
        assert PLAIN_LINE.match(line), line


def test_a_slow_read_and_a_slow_fsync_are_logged_as_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    handle = ChannelHandler.handle

    def slow_declare(self: ChannelHandler, method: Any, now_ms: int) -> None:
        if method.NAME == "queue.declare" and method.queue == "slow":
            time.sleep(0.06)  # the handling of this read stalls the event loop
        handle(self, method, now_ms)

    sync_files = Store.sync_files

    def slow_sync(self: Store, batch: Any) -> None:
        time.sleep(0.06)
        sync_files(self, batch)

    monkeypatch.setattr(ChannelHandler, "handle", slow_declare)
    caplog.set_level(logging.WARNING)
    with running_node(tmp_path, slow_operation_ms=30) as node:
        host, port = node.addresses[0]
        with RawClient(host, port) as client:
            client.handshake()
            client.open_channel(1)
            client.send(1, commands.Queue.Declare(queue="fast"))
            client.expect(commands.Queue.DeclareOk)
            assert not [r for r in caplog.records if "slow operation" in r.getMessage()]
            client.send(1, commands.Queue.Declare(queue="slow", durable=True))
            client.expect(commands.Queue.DeclareOk)
            monkeypatch.setattr(Store, "sync_files", slow_sync)
            client.send(1, commands.Confirm.Select())
            client.expect(commands.Confirm.SelectOk)
            client.publish(
                1, b"m", routing_key="slow", properties=commands.Basic.Properties(delivery_mode=2)
            )
            client.expect(commands.Basic.Ack)
            client.send(
                0,
                commands.Connection.Close(
                    reply_code=200, reply_text="bye", class_id=0, method_id=0
                ),
            )
            client.expect(commands.Connection.CloseOk)
    slow = [r for r in caplog.records if "slow operation" in r.getMessage()]
    reads = [r for r in slow if getattr(r, "operation", None) == "read"]
    assert len(reads) == 1, slow
    assert reads[0].levelno == logging.WARNING
    assert getattr(reads[0], "duration_ms", 0) >= 30
    assert getattr(reads[0], "user", None) == "guest"
    assert re.search(r"handling a read of \d+ bytes took \d+ ms", reads[0].getMessage())
    fsyncs = [r for r in slow if getattr(r, "operation", None) == "fsync"]
    assert fsyncs, slow
    assert re.search(r"fsync of \d+ file\(s\) took \d+ ms", fsyncs[0].getMessage())
