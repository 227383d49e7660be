"""The two-tenant example in conf/ (sharing.example.yaml with tenants.example.yaml), run
as an operator would run it: tenant A shares one queue (to read) and one exchange (to
publish to) with tenant B's user, and B can do exactly that in A's vhost, nothing more."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.support.audit import wait_for_entry
from tests.support.broker_process import BrokerProcess

CONF = Path(__file__).resolve().parents[2] / "conf"


def url(process: BrokerProcess, user: str, password: str, vhost: str) -> str:
    return f"amqp://{user}:{password}@{process.host}:{process.port}/{vhost}"


@pytest.fixture
def example(tmp_path: Path) -> Iterator[BrokerProcess]:
    for name in ("sharing.example.yaml", "tenants.example.yaml"):
        shutil.copy(CONF / name, tmp_path / name)
    args = ["--config", str(tmp_path / "sharing.example.yaml"), "--port", "0"]
    process = BrokerProcess(tmp_path / "data", args).start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def refusal(
    attempt: Callable[[BlockingChannel], object], channel: BlockingChannel
) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        attempt(channel)
    return raised.value.reply_code, raised.value.reply_text


def test_a_tenant_shares_one_queue_and_one_exchange_and_nothing_else(
    example: BrokerProcess,
) -> None:
    owner = pika.BlockingConnection(
        pika.URLParameters(url(example, "a-app", "a-secret", "tenant-a"))
    )
    a = owner.channel()
    a.queue_declare("partner.notices", durable=True)
    a.exchange_declare("partner.updates", "fanout", durable=True)
    a.queue_declare("updates.inbox", durable=True)
    a.queue_bind("updates.inbox", "partner.updates")
    a.queue_declare("private.ledger", durable=True)
    a.basic_publish("", "partner.notices", b"order 17 shipped")
    a.basic_publish("", "private.ledger", b"secret")

    partner = pika.BlockingConnection(
        pika.URLParameters(url(example, "b-app", "b-secret", "tenant-a"))
    )
    b = partner.channel()
    # What is shared: reading the notices, publishing updates.
    method, _, body = b.basic_get("partner.notices", auto_ack=True)
    assert method is not None and body == b"order 17 shipped"
    b.basic_publish("partner.updates", "", b"order 17 received")
    b.exchange_declare("partner.updates", passive=True)  # the publish went through
    method, _, body = a.basic_get("updates.inbox", auto_ack=True)
    assert method is not None and body == b"order 17 received"

    # What is not: every other queue, the default exchange, any declare, delete or bind.
    refused = "ACCESS_REFUSED - access to {} in vhost 'tenant-a' refused for user 'b-app'"
    attempts = {
        "queue 'private.ledger'": lambda channel: channel.basic_get("private.ledger"),
        "exchange 'amq.default'": lambda channel: (
            channel.basic_publish("", "private.ledger", b"x"),
            channel.exchange_declare("partner.updates", passive=True),
        ),
        "queue 'b-owned'": lambda channel: channel.queue_declare("b-owned"),
        "exchange 'partner.updates'": lambda channel: channel.exchange_delete("partner.updates"),
        "queue 'partner.notices'": lambda channel: channel.queue_bind(
            "partner.notices", "amq.fanout"
        ),
    }
    for resource, attempt in attempts.items():
        assert refusal(attempt, partner.channel()) == (403, refused.format(resource))
    assert a.queue_declare("private.ledger", passive=True).method.message_count == 1

    # B's own vhost stays B's: A's user cannot enter it.
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        pika.BlockingConnection(pika.URLParameters(url(example, "a-app", "a-secret", "tenant-b")))
    partner.close()
    owner.close()

    # The refusals are in the audit log with who, where and from which address.
    example.wait_for(r"access to queue 'private.ledger' in vhost 'tenant-a' refused")
    entries = wait_for_entry(
        example.data_dir / "audit.log", {"event": "access_refused", "user": "a-app"}
    )
    refusals = [entry for entry in entries if entry["event"] == "access_refused"]
    assert {entry["user"] for entry in refusals} == {"b-app", "a-app"}
    assert all(entry["peer"] == "127.0.0.1" and "time" in entry for entry in refusals)
    assert any(
        entry["event"] == "queue.declare"
        and entry["queue"] == "private.ledger"
        and entry["user"] == "a-app"
        and entry["vhost"] == "tenant-a"
        for entry in entries
    )
