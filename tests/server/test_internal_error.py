"""A bug in the broker closes only the connection it hit, with 541, and is logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqpd.broker.channel import Channel
from tests.support.in_process import running_node, url_of


def test_unexpected_exception_closes_that_connection_with_541(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_qos(self: Channel, prefetch_size: int, prefetch_count: int, global_: bool) -> None:
        raise RuntimeError("injected fault")

    with running_node(tmp_path) as node:
        bystander = pika.BlockingConnection(pika.URLParameters(url_of(node)))
        bystander_channel = bystander.channel()
        queue = bystander_channel.queue_declare("", exclusive=True).method.queue

        monkeypatch.setattr(Channel, "qos", broken_qos)
        victim = pika.BlockingConnection(pika.URLParameters(url_of(node)))
        with (
            caplog.at_level(logging.ERROR, logger="amqpd.connection"),
            pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed,
        ):
            victim.channel().basic_qos(prefetch_count=1)
        assert closed.value.reply_code == 541
        assert closed.value.reply_text == "INTERNAL_ERROR - internal error, see the broker log"
        assert any("injected fault" in (r.exc_text or "") for r in caplog.records)

        # Everyone else carries on.
        bystander_channel.basic_publish("", queue, b"still here")
        _method, _, body = bystander_channel.basic_get(queue, auto_ack=True)
        assert body == b"still here"
        bystander.close()


def test_a_confirmed_publish_hit_by_a_bug_is_nacked_before_the_541(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pamqp import commands

    from amqpd.broker.queue import Queue
    from tests.support.raw_client import RawClient

    with running_node(tmp_path) as node:
        host, port = node.addresses[0]
        with RawClient(host, port) as client:
            client.handshake()
            client.open_channel(1)
            client.declare_and_confirm(1, commands.Queue.Declare(queue="victim", exclusive=True))
            client.publish(1, b"fine", routing_key="victim")
            assert client.expect(commands.Basic.Ack).delivery_tag == 1

            def broken_enqueue(self: Queue, message: object, now_ms: int) -> None:
                raise RuntimeError("injected fault")

            monkeypatch.setattr(Queue, "enqueue", broken_enqueue)
            client.publish(1, b"lost", routing_key="victim")
            nack = client.expect(commands.Basic.Nack)
            assert (nack.delivery_tag, nack.multiple) == (2, False)
            close = client.expect(commands.Connection.Close)
            assert (close.reply_code, close.class_id, close.method_id) == (541, 60, 40)
