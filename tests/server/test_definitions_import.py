"""`amqpd --definitions FILE` with a real RabbitMQ export (tests/config/fixtures; how it was
made: tests/config/test_definitions.py): a migrated user logs in with the password it had
in RabbitMQ, the exchanges, queues and bindings are there and route, and what amqpd
cannot apply is named in the log. Everything waits on log lines or replies, never sleeps."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.config.test_definitions import FIXTURE, UNAPPLIED
from tests.server.test_process import run_amqpd
from tests.support.broker_process import BrokerProcess

SUMMARY = re.compile(
    r"definitions \S+: 5 users, 4 vhosts, 7 permissions, 2 topic permissions, 3 policies, "
    r"9 exchanges, 7 queues, 9 bindings applied; 11 not applied"
)


def connect(broker: BrokerProcess, user: str, password: str, vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            broker.host,
            broker.port,
            vhost,
            pika.PlainCredentials(user, password),
            connection_attempts=1,
        )
    )


def get_body(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> bytes:
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None, f"nothing in {queue}"
    return body


def test_a_rabbitmq_export_is_served_and_what_is_not_applied_is_logged(
    broker_process: BrokerProcess,
) -> None:
    broker_process.extra_args = ["--definitions", str(FIXTURE)]
    broker_process.start()
    broker_process.wait_for(SUMMARY)
    warnings = [line for line in broker_process.lines if " WARNING amqpd: definitions: " in line]
    for subject in UNAPPLIED:
        assert sum(f"definitions: {subject}: " in line for line in warnings) == 1, subject
    assert len(warnings) == len(UNAPPLIED)

    # defs-alice's SHA-256 hash came from RabbitMQ; her password is what it was there.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(broker_process, "defs-alice", "not-her-password", "defs-shop")
    connection = connect(broker_process, "defs-alice", "alice-secret", "defs-shop")
    channel = connection.channel()
    for queue in (
        "orders.new",
        "orders.dead",
        "shop.ttl",
        "shop.priority",
        "shop.unrouted",
        "shop.invoices",
    ):
        assert channel.queue_declare(queue, passive=True).method.message_count == 0
    for exchange in ("shop.direct", "shop.topic", "shop.fanout", "shop.headers", "shop.main"):
        channel.exchange_declare(exchange, passive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare("shop.quorum", passive=True)  # reported, not declared
    assert closed.value.reply_code == 404
    channel = connection.channel()
    channel.confirm_delivery()

    # A queue binding; a bound exchange (shop.main -> shop.topic -> shop.ttl, and on to
    # shop.fanout -> shop.priority); the alternate exchange; a headers binding.
    channel.basic_publish("shop.direct", "orders.new", b"new", mandatory=True)
    assert get_body(channel, "orders.new") == b"new"
    channel.basic_publish("shop.main", "orders.paid", b"paid", mandatory=True)
    assert get_body(channel, "shop.ttl") == b"paid"
    assert get_body(channel, "shop.priority") == b"paid"
    channel.basic_publish("shop.main", "nowhere", b"lost", mandatory=True)
    assert get_body(channel, "shop.unrouted") == b"lost"
    invoice = pika.BasicProperties(headers={"format": "pdf", "type": "invoice"})
    channel.basic_publish("shop.headers", "", b"pdf", invoice, mandatory=True)
    assert get_body(channel, "shop.invoices") == b"pdf"
    # defs-shop's policy shop-ttl (max-length 1000, dead-letter-exchange shop.dlx) applies.
    assert channel.queue_declare("orders.new", passive=True).method.message_count == 0
    connection.close()

    # defs-monitor has permissions in defs-shop only: another vhost refuses it at open.
    connect(broker_process, "defs-monitor", "monitor-secret", "defs-shop").close()
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"\(530\)"):
        connect(broker_process, "defs-monitor", "monitor-secret", "defs-ops")

    # A second start over the same data: everything is there already and equivalent, so
    # the same report, and a durable message kept.
    connection = connect(broker_process, "defs-alice", "alice-secret", "defs-shop")
    channel = connection.channel()
    channel.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    channel.basic_publish("shop.direct", "orders.new", b"kept", persistent, mandatory=True)
    connection.close()
    assert broker_process.restart() == 0
    broker_process.wait_for(SUMMARY)
    assert sum(bool(SUMMARY.search(line)) for line in broker_process.lines) == 1
    connection = connect(broker_process, "defs-alice", "alice-secret", "defs-shop")
    assert get_body(connection.channel(), "orders.new") == b"kept"
    connection.close()
    assert broker_process.stop() == 0


def test_sighup_reads_the_definitions_file_again(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    export = tmp_path / "export.json"
    export.write_text(FIXTURE.read_text())
    broker_process.extra_args = ["--definitions", str(export)]
    broker_process.start()
    broker_process.wait_for(SUMMARY)
    data = json.loads(export.read_text())
    data["policies"].append(
        {
            "name": "cap",
            "vhost": "defs-shop",
            "pattern": "^shop\\.priority$",
            "apply-to": "queues",
            "priority": 5,
            "definition": {"max-length": 1},
        }
    )
    export.write_text(json.dumps(data))
    broker_process.signal(signal.SIGHUP)
    broker_process.wait_for(r"config reloaded: .* 4 policies in force")
    connection = connect(broker_process, "defs-alice", "alice-secret", "defs-shop")
    channel = connection.channel()
    channel.confirm_delivery()
    for body in (b"1", b"2"):
        channel.basic_publish("shop.fanout", "", body)
    assert channel.queue_declare("shop.priority", passive=True).method.message_count == 1
    connection.close()

    export.write_text("{not json")
    broker_process.signal(signal.SIGHUP)
    broker_process.wait_for(r"config not reloaded, the running one stays")
    broker_process.wait_for(rf"{re.escape(str(export))}: not valid JSON")
    assert broker_process.stop() == 0


def test_a_bad_definitions_file_stops_start_up_naming_it(tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text('{"users": [{"name": "u", "tags": 3}]}')
    result = run_amqpd("--definitions", str(export), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 78
    assert f"{export}: users[0].tags: expected an array, got a number" in result.stderr
