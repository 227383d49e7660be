"""Queues over logs: what is written, what waits for the disk, paging, read-ahead,
recovery, purge and lost writes — with a log whose durability the test moves by hand."""

from __future__ import annotations

import pytest

from amqpd.broker.broker import Broker
from amqpd.broker.definitions import decode
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.queue import KIND_PERSISTENT, KIND_TRANSIENT, queue_key
from amqpd.broker.vhost import BrokerServices, VirtualHost
from tests.support.broker_harness import Client, consume, message, publish
from tests.support.memory_log import MemoryDefinitions, MemoryLog, MemoryStorage

PERSISTENT = {"delivery_mode": 2}


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def definitions() -> MemoryDefinitions:
    return MemoryDefinitions()


def services(
    storage: MemoryStorage,
    definitions: MemoryDefinitions | None = None,
    queue_bytes_max: int = 1 << 30,
    total_bytes_max: int = 1 << 30,
) -> BrokerServices:
    return BrokerServices(
        storage=storage,
        definitions=definitions,
        memory=MemoryBudget(queue_bytes_max, total_bytes_max),
    )


def declare(client: Client, name: str = "q", durable: bool = True) -> MemoryLog | None:
    vhost = client.connection.vhost
    queue = vhost.declare_queue(name, owner=client.connection, durable=durable)
    log = queue.log
    assert log is None or isinstance(log, MemoryLog)
    return log


def durable_log(client: Client, name: str = "q") -> MemoryLog:
    """Declare a durable queue; its log (storage always gives a durable queue one)."""
    log = declare(client, name)
    assert log is not None
    return log


def test_persistent_messages_on_a_durable_queue_are_written(storage: MemoryStorage) -> None:
    client = Client(VirtualHost("/", services(storage)))
    log = durable_log(client)
    channel, _ = client.channel()
    publish(channel, "", "q", b"kept", **PERSISTENT)
    publish(channel, "", "q", b"transient")
    assert [record.kind for record in log.records.values()] == [KIND_PERSISTENT]
    assert client.connection.vhost.queues["q"].message_count == 2


def test_a_non_durable_queue_writes_nothing(storage: MemoryStorage) -> None:
    client = Client(VirtualHost("/", services(storage)))
    assert declare(client, durable=False) is None
    channel, _ = client.channel()
    publish(channel, "", "q", b"m", **PERSISTENT)
    assert storage.logs == {}


def test_confirms_wait_for_durability_and_go_out_in_order(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    log = durable_log(client)
    vhost.declare_queue("memory-only", owner=client.connection)
    channel, sink = client.channel()
    channel.select_confirms()
    publish(channel, "", "memory-only", b"1")  # confirmed at once: nothing waits
    publish(channel, "", "q", b"2", **PERSISTENT)  # waits for the disk
    publish(channel, "", "memory-only", b"3")  # would be safe, but waits behind #2
    publish(channel, "", "q", b"4")  # transient on a durable queue: not waiting itself
    assert sink.confirms == [1]
    log.make_durable()
    vhost.durability.advanced()
    assert sink.confirms == [1, 2, 3, 4]
    assert vhost.durability.waiting == 0


def test_a_message_to_two_durable_queues_waits_for_both(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    first, second = declare(client, "a"), declare(client, "b")
    assert first is not None and second is not None
    vhost.declare_exchange("fan", "fanout", durable=True)
    vhost.bind("fan", vhost.queues["a"], "", {})
    vhost.bind("fan", vhost.queues["b"], "", {})
    channel, sink = client.channel()
    channel.select_confirms()
    publish(channel, "fan", "", b"x", **PERSISTENT)
    first.make_durable()
    vhost.durability.advanced()
    assert sink.confirms == []
    second.make_durable()
    vhost.durability.advanced()
    assert sink.confirms == [1]


def test_lost_writes_are_nacked(storage: MemoryStorage) -> None:
    broker = Broker(["/"], services(storage))
    client = Client(broker.vhosts["/"])
    log = durable_log(client)
    channel, sink = client.channel()
    channel.select_confirms()
    publish(channel, "", "q", b"lost", **PERSISTENT)
    publish(channel, "", "q", b"kept", **PERSISTENT)
    broker.storage_lost(log, 0, 1)
    assert sink.nacks == [1]
    log.make_durable()
    broker.durability_advanced()
    assert sink.confirms == [2]


def test_messages_past_the_memory_bound_go_to_the_log_and_come_back_in_order(
    storage: MemoryStorage,
) -> None:
    one_message = message("q", b"0").memory_bytes
    vhost = VirtualHost("/", services(storage, queue_bytes_max=2 * one_message))
    client = Client(vhost)
    declare(client, durable=False)
    channel, sink = client.channel()
    for number in range(10):
        publish(channel, "", "q", b"%d" % number)
    queue = vhost.queues["q"]
    paged = storage.logs[queue_key("/", "q")]
    assert [record.kind for record in paged.records.values()] == [KIND_TRANSIENT] * 8
    assert queue.message_count == 10
    assert queue.memory_bytes == 2 * one_message
    consume(channel, no_ack=True)
    assert sink.bodies() == [b"%d" % number for number in range(10)]
    assert paged.live() == []  # read back and settled


def test_a_durable_backlog_is_read_ahead_in_batches(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage, queue_bytes_max=1))  # nothing held in memory
    client = Client(vhost)
    log = durable_log(client)
    channel, sink = client.channel()
    for number in range(600):
        publish(channel, "", "q", b"%d" % number, **PERSISTENT)
    assert vhost.queues["q"].memory_bytes == 0
    channel.qos(0, 300, False)
    consume(channel)
    assert [d.body for d in sink.deliveries] == [b"%d" % n for n in range(300)]
    assert vhost.queues["q"].memory_bytes < 300 * 300  # one read-ahead batch at most
    channel.ack(0, multiple=True)
    assert len(sink.deliveries) == 600
    channel.ack(0, multiple=True)
    assert log.live() == []


def test_a_backlog_of_large_messages_is_read_back_whole(storage: MemoryStorage) -> None:
    """A read of the log stops at its byte bound (a few large records), not only at the
    records asked for: the lane must read on, not take a short read for the end."""
    vhost = VirtualHost("/", services(storage, queue_bytes_max=1))  # nothing held in memory
    client = Client(vhost)
    durable_log(client)
    channel, sink = client.channel()
    bodies = [b"%d:" % number + b"x" * 300_000 for number in range(20)]  # 6 MB
    for body in bodies:
        publish(channel, "", "q", body, **PERSISTENT)
    consume(channel, no_ack=True)
    assert sink.bodies() == bodies
    assert vhost.queues["q"].message_count == 0


def test_the_memory_alarm_sends_new_messages_to_the_log(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    log = declare(client, durable=False)
    assert log is None
    channel, sink = client.channel()
    publish(channel, "", "q", b"kept")
    queue = vhost.queues["q"]
    in_memory = queue.memory_bytes
    assert in_memory > 0
    vhost.services.memory.conserve(True)
    publish(channel, "", "q", b"paged")
    assert queue.memory_bytes == in_memory  # a transient log took it
    paged = storage.logs[queue.key]
    assert [record.payload.endswith(b"paged") for record in paged.records.values()] == [True]
    vhost.services.memory.conserve(False)
    publish(channel, "", "q", b"after")  # behind one on disk: to the log as well, in order
    consume(channel, no_ack=True)
    assert sink.bodies() == [b"kept", b"paged", b"after"]


def test_acks_reach_the_log_only_for_what_it_holds(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    log = durable_log(client)
    channel, _ = client.channel()
    publish(channel, "", "q", b"p", **PERSISTENT)
    publish(channel, "", "q", b"t")
    consume(channel)
    channel.ack(2, multiple=True)  # MemoryLog.ack asserts the offset was appended
    assert log.live() == []


def test_delivered_messages_are_noted_before_they_go(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    log = durable_log(client)
    channel, sink = client.channel()
    publish(channel, "", "q", b"a", **PERSISTENT)
    publish(channel, "", "q", b"b", **PERSISTENT)
    channel.qos(0, 1, False)
    consume(channel)
    assert len(sink.deliveries) == 1
    assert log.delivered_below == 1


def test_a_recovered_log_serves_its_messages_redelivered_below_the_watermark(
    storage: MemoryStorage,
) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    log = durable_log(client)
    channel, _ = client.channel()
    for number in range(4):
        publish(channel, "", "q", b"%d" % number, **PERSISTENT)
    log.ack(0)
    log.delivered_below = 3  # 1 and 2 went out before the "crash"

    restarted = VirtualHost("/", services(storage))
    restarted.restore([], lambda key: None)
    restarted._add_queue("q", True, False, None, False, {}, [log])  # as restore does
    again = Client(restarted)
    channel, sink = again.channel()
    assert restarted.queues["q"].message_count == 3
    consume(channel, no_ack=True)
    assert [(d.body, d.redelivered) for d in sink.deliveries] == [
        (b"1", True),
        (b"2", True),
        (b"3", False),
    ]


def test_purge_acks_everything_ready_in_the_log(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage, queue_bytes_max=600))
    client = Client(vhost)
    log = durable_log(client)
    channel, _ = client.channel()
    for number in range(5):
        publish(channel, "", "q", b"%d" % number, **PERSISTENT)
    assert vhost.queues["q"].purge() == 5
    assert log.live() == []
    assert vhost.queues["q"].message_count == 0


def test_deleting_a_queue_deletes_its_log(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    declare(client)
    vhost.delete_queue(vhost.queues["q"])
    assert storage.deleted == [queue_key("/", "q")]


def test_durable_definitions_are_journaled_and_restored(
    storage: MemoryStorage, definitions: MemoryDefinitions
) -> None:
    vhost = VirtualHost("/", services(storage, definitions))
    owner = object()
    vhost.declare_exchange(
        "durable-x", "topic", durable=True, arguments={"alternate-exchange": "ae"}
    )
    vhost.declare_exchange("transient-x", "fanout")
    queue = vhost.declare_queue("durable-q", owner=owner, durable=True)
    vhost.declare_queue("transient-q", owner=owner)
    vhost.declare_queue("exclusive-q", owner=owner, durable=True, exclusive=True)
    vhost.bind("durable-x", queue, "a.#", {})
    vhost.bind("amq.direct", queue, "k", {"x-tag": 1})
    vhost.bind("transient-x", queue, "", {})  # one end not durable: not kept
    kinds = sorted(type(decode(value)).__name__ for value in definitions.entries.values())
    assert kinds == [
        "BindingDefinition",
        "BindingDefinition",
        "ExchangeDefinition",
        "QueueDefinition",
    ]

    restarted = VirtualHost("/", services(MemoryStorage(), MemoryDefinitions()))
    problems = restarted.restore(
        [decode(value) for value in definitions.entries.values()], lambda key: None
    )
    assert problems == []
    assert set(restarted.queues) == {"durable-q"}
    assert restarted.exchanges["durable-x"].alternate_exchange == "ae"
    assert "transient-x" not in restarted.exchanges
    bindings = {(b.source, b.routing_key) for b in restarted.bindings()}
    assert bindings == {("durable-x", "a.#"), ("amq.direct", "k")}


def test_deleting_durable_entities_removes_their_definitions(
    storage: MemoryStorage, definitions: MemoryDefinitions
) -> None:
    vhost = VirtualHost("/", services(storage, definitions))
    vhost.declare_exchange("x", "direct", durable=True)
    queue = vhost.declare_queue("q", owner=object(), durable=True)
    vhost.bind("x", queue, "k", {})
    vhost.unbind("x", queue, "k", {})
    vhost.bind("x", queue, "k", {})
    vhost.delete_exchange("x")  # its bindings go with it
    vhost.delete_queue(queue)
    assert definitions.entries == {}


def test_replies_to_durable_changes_wait_for_the_journal(
    storage: MemoryStorage, definitions: MemoryDefinitions
) -> None:
    vhost = VirtualHost("/", services(storage, definitions))
    before = vhost.services.definitions_ticket
    vhost.declare_queue("q", owner=object(), durable=True)
    ticket = vhost.services.definitions_ticket
    assert ticket > before
    assert not vhost.services.definitions_durable(ticket)
    definitions.make_durable()
    assert vhost.services.definitions_durable(ticket)


def test_a_transaction_returns_what_commit_ok_waits_for(storage: MemoryStorage) -> None:
    vhost = VirtualHost("/", services(storage))
    client = Client(vhost)
    log = durable_log(client)
    channel, _ = client.channel()
    channel.select_tx()
    publish(channel, "", "q", b"t")
    publish(channel, "", "q", b"p", **PERSISTENT)
    assert channel.commit(now_ms=5) == [(log, 1)]
    assert log.records[1].timestamp_ms == 5
