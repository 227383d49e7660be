"""Running low on disk: the disk alarm blocks publishers; a full disk loses nothing
confirmed, nacks what it could not write, and leaves the logs readable."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pamqp import commands

from amqpd.config.model import Limits
from amqpd.server import alarms
from tests.support.faulty_fs import FaultyFileSystem, segments_only
from tests.support.in_process import running_node
from tests.support.raw_client import RawClient

PERSISTENT = commands.Basic.Properties(delivery_mode=2)


def depth(client: RawClient, queue: str) -> int:
    client.send(1, commands.Queue.Declare(queue=queue, passive=True))
    return int(client.expect(commands.Queue.DeclareOk).message_count)


def wait_for_depth(client: RawClient, queue: str, expected: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := depth(client, queue)) != expected:
        assert time.monotonic() < deadline, f"{queue} holds {found}, not {expected}"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.005)


def test_the_disk_alarm_blocks_publishers_until_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = {"bytes": 10**12}
    monkeypatch.setattr(alarms, "free_bytes", lambda path: free["bytes"])
    limits = Limits(disk_free_bytes_min=10**9, disk_check_interval_s=0.02)
    with running_node(tmp_path, limits=limits) as node:
        host, port = node.addresses[0]
        with RawClient(host, port) as publisher, RawClient(host, port) as consumer:
            publisher.handshake(capabilities={"connection.blocked": True})
            publisher.open_channel(1)
            publisher.send(1, commands.Queue.Declare(queue="alarm"))
            publisher.expect(commands.Queue.DeclareOk)
            publisher.publish(1, b"before", routing_key="alarm")
            assert depth(publisher, "alarm") == 1

            free["bytes"] = 10**6  # below the limit
            wait_until(lambda: node.context.alarms.disk)
            # Like RabbitMQ, the connection is blocked when it next publishes: that
            # publish is taken, then the broker stops reading and says why.
            publisher.publish(1, b"during", routing_key="alarm")
            blocked = publisher.expect(commands.Connection.Blocked)
            assert blocked.reason == "low on disk"
            for _ in range(4):
                publisher.publish(1, b"during", routing_key="alarm")
            consumer.handshake()  # a consumer is not blocked: it still gets answers
            consumer.open_channel(1)
            assert depth(consumer, "alarm") == 2  # the publisher is not being read

            free["bytes"] = 10**12
            publisher.expect(commands.Connection.Unblocked)
            wait_for_depth(consumer, "alarm", 6)


def test_a_full_disk_nacks_what_it_could_not_write_and_loses_nothing_confirmed(
    tmp_path: Path,
) -> None:
    fs = FaultyFileSystem(random.Random(3))
    with running_node(tmp_path, fs=fs) as node:
        host, port = node.addresses[0]
        with RawClient(host, port) as client:
            client.handshake()
            client.open_channel(1)
            client.declare_and_confirm(1, commands.Queue.Declare(queue="full", durable=True))
            client.publish(1, b"safe", routing_key="full", properties=PERSISTENT)
            assert client.expect(commands.Basic.Ack).delivery_tag == 1

            fs.fill_disk_after(0, match=segments_only)
            client.publish(1, b"lost", routing_key="full", properties=PERSISTENT)
            nack = client.expect(commands.Basic.Nack)
            assert nack.delivery_tag == 2
            # The nacked message stays deliverable from memory (at least once: the
            # publisher may send it again), but it is not durable.
            assert depth(client, "full") == 2

            fs.free_space()
            client.publish(1, b"later", routing_key="full", properties=PERSISTENT)
            assert client.expect(commands.Basic.Ack).delivery_tag == 3
    # After a restart exactly what was confirmed is there.
    with running_node(tmp_path) as node:
        host, port = node.addresses[0]
        with RawClient(host, port) as client:
            client.handshake()
            client.open_channel(1)
            bodies = []
            while True:
                client.send(1, commands.Basic.Get(queue="full", no_ack=True))
                _, reply = client.receive()
                if isinstance(reply, commands.Basic.GetEmpty):
                    break
                client.receive()  # content header
                _, body = client.receive()
                bodies.append(body.value)
            assert bodies == [b"safe", b"later"]


def test_a_failed_fsync_nacks_what_waited_for_it_and_stops_the_node(tmp_path: Path) -> None:
    fs = FaultyFileSystem(random.Random(4))
    with running_node(tmp_path, fs=fs) as node:
        host, port = node.addresses[0]
        with RawClient(host, port) as client:
            client.handshake()
            client.open_channel(1)
            client.declare_and_confirm(1, commands.Queue.Declare(queue="eio", durable=True))
            client.publish(1, b"safe", routing_key="eio", properties=PERSISTENT)
            assert client.expect(commands.Basic.Ack).delivery_tag == 1

            fs.fail_fsync(match=segments_only)
            client.publish(1, b"doomed", routing_key="eio", properties=PERSISTENT)
            assert client.expect(commands.Basic.Nack).delivery_tag == 2
            # Nothing written since the last good fsync can be trusted: the node stops,
            # so that a restart recovers from what the disk really holds.
            close = client.expect(commands.Connection.Close)
            assert close.reply_code == 320
        wait_until(lambda: node.exit_code == 1)
    with running_node(tmp_path) as node:
        host, port = node.addresses[0]
        with RawClient(host, port) as client:
            client.handshake()
            client.open_channel(1)
            client.send(1, commands.Basic.Get(queue="eio", no_ack=True))
            _, reply = client.receive()
            assert isinstance(reply, commands.Basic.GetOk)
            client.receive()  # content header
            _, body = client.receive()
            assert body.value == b"safe"


def test_the_memory_alarm_blocks_publishers_and_pages_new_messages_until_memory_falls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resident = {"bytes": 10**8}
    monkeypatch.setattr(alarms, "resident_bytes", lambda: resident["bytes"])
    free = {"bytes": 10**12}
    monkeypatch.setattr(alarms, "free_bytes", lambda path: free["bytes"])
    limits = Limits(
        memory_high_watermark_bytes=10**9,
        memory_check_interval_s=0.02,
        disk_free_bytes_min=10**9,
        disk_check_interval_s=0.02,
    )
    with running_node(tmp_path, limits=limits) as node:
        state = node.context.alarms
        budget = node.context.broker.services.memory
        wait_until(lambda: state.memory_used_bytes == 10**8)
        assert state.memory_limit_bytes == 10**9
        assert state.disk_free_limit_bytes == 10**9
        assert state.active() == []
        host, port = node.addresses[0]
        with RawClient(host, port) as publisher, RawClient(host, port) as consumer:
            publisher.handshake(capabilities={"connection.blocked": True})
            publisher.open_channel(1)
            publisher.send(1, commands.Queue.Declare(queue="mem"))
            publisher.expect(commands.Queue.DeclareOk)
            publisher.publish(1, b"before", routing_key="mem")
            assert depth(publisher, "mem") == 1
            vhost = node.context.broker.vhost("/")
            assert vhost is not None
            queue = vhost.queues["mem"]
            in_memory = queue.memory_bytes
            assert in_memory > 0

            resident["bytes"] = 10**9 + 1  # above the watermark
            wait_until(lambda: state.memory)
            assert state.active() == ["memory"]
            assert state.memory_used_bytes == 10**9 + 1
            assert budget.conserving
            publisher.publish(1, b"during", routing_key="mem")
            blocked = publisher.expect(commands.Connection.Blocked)
            assert blocked.reason == "low on memory"
            publisher.publish(1, b"during", routing_key="mem")
            consumer.handshake()
            consumer.open_channel(1)
            assert depth(consumer, "mem") == 2  # the publisher is not being read
            # The message taken under the alarm went to the queue's log, not to memory.
            assert queue.memory_bytes == in_memory

            free["bytes"] = 10**6  # the disk alarm too: both must clear
            wait_until(lambda: state.disk)
            assert state.active() == ["memory", "disk"]
            assert state.reason == "low on memory & disk"
            resident["bytes"] = 10**8
            wait_until(lambda: not state.memory)
            assert not budget.conserving
            assert state.active() == ["disk"]
            assert depth(consumer, "mem") == 2  # still blocked by the disk alarm
            free["bytes"] = 10**12
            publisher.expect(commands.Connection.Unblocked)
            wait_for_depth(consumer, "mem", 3)
            for expected in (b"before", b"during", b"during"):
                consumer.send(1, commands.Basic.Get(queue="mem", no_ack=True))
                consumer.expect(commands.Basic.GetOk)
                consumer.receive()  # content header
                _, body = consumer.receive()
                assert body.value == expected
