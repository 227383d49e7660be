"""SIGHUP: the config file is read again and its policies apply to what is there."""

from __future__ import annotations

import signal
from pathlib import Path

import pika

from tests.support.broker_process import BrokerProcess

BASE = "listeners: [{bind: 127.0.0.1, port: 0}]\n"
CAP_AT_ONE = BASE + (
    "policies:\n"
    "  - name: cap\n"
    "    pattern: ^capped\\.\n"
    "    apply_to: queues\n"
    "    definition: {max-length: 1}\n"
)


def depth(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def test_sighup_applies_new_policies_to_existing_queues_and_refuses_a_bad_file(
    tmp_path: Path,
) -> None:
    config = tmp_path / "amqpd.yaml"
    config.write_text(BASE)
    process = BrokerProcess(tmp_path / "data", ["--config", str(config)]).start()
    try:
        connection = pika.BlockingConnection(pika.URLParameters(process.url))
        channel = connection.channel()
        channel.queue_declare("capped.q")
        channel.queue_declare("free.q")
        for queue in ("capped.q", "free.q"):
            for number in range(3):
                channel.basic_publish("", queue, b"%d" % number)
        assert depth(channel, "capped.q") == 3

        config.write_text(CAP_AT_ONE)
        process.signal(signal.SIGHUP)
        process.wait_for(r"config reloaded: .* 1 policies in force")
        assert depth(channel, "capped.q") == 1
        assert depth(channel, "free.q") == 3
        method, _, body = channel.basic_get("capped.q", auto_ack=True)
        assert method is not None and body == b"2"  # drop-head kept the newest

        # A file with an error is refused; the running policy stays in force.
        config.write_text(CAP_AT_ONE.replace("max-length: 1", "max-length: -1"))
        process.signal(signal.SIGHUP)
        process.wait_for(r"config not reloaded, the running one stays")
        process.wait_for(r"definition 'max-length' must be an integer >= 0: -1")
        for number in range(3):
            channel.basic_publish("", "capped.q", b"%d" % number)
        assert depth(channel, "capped.q") == 1
        connection.close()
    finally:
        assert process.stop() == 0


def test_a_reload_says_which_settings_wait_for_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "amqpd.yaml"
    config.write_text(BASE)
    process = BrokerProcess(tmp_path / "data", ["--config", str(config)]).start()
    try:
        config.write_text(BASE + "limits: {channel_max: 10}\n")
        process.signal(signal.SIGHUP)
        process.wait_for(r"config reloaded: limits changed; applied at the next restart")
    finally:
        assert process.stop() == 0
