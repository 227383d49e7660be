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
