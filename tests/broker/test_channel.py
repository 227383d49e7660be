"""Consumers, delivery tags, acks, requeue position, QoS, confirms and transactions."""

from __future__ import annotations

import pytest

from amqpd.broker.channel import Channel
from amqpd.broker.vhost import VirtualHost
from amqpd.errors import (
    AccessRefused,
    FeatureNotImplemented,
    NotAllowed,
    NotFound,
    PreconditionFailed,
)
from tests.support.broker_harness import Client, consume, publish


@pytest.fixture
def vhost() -> VirtualHost:
    return VirtualHost("/")


@pytest.fixture
def client(vhost: VirtualHost) -> Client:
    return Client(vhost)


def declare(channel: Channel, name: str = "q", **flags: bool) -> None:
    channel.declare_queue(
        name,
        passive=False,
        durable=flags.get("durable", False),
        exclusive=flags.get("exclusive", False),
        auto_delete=flags.get("auto_delete", False),
        arguments={},
    )


def fill(channel: Channel, count: int, queue: str = "q") -> None:
    for index in range(1, count + 1):
        publish(channel, "", queue, f"m{index}".encode())


def test_delivery_tags_count_up_from_one_per_channel(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    fill(channel, 3)
    consume(channel)
    assert [(d.delivery_tag, d.body, d.redelivered) for d in sink.deliveries] == [
        (1, b"m1", False),
        (2, b"m2", False),
        (3, b"m3", False),
    ]
    other, other_sink = client.channel(2)
    fill(other, 1)  # on channel 1's consumer: the tag continues there
    assert sink.deliveries[-1].delivery_tag == 4
    assert not other_sink.deliveries


def test_requeued_messages_return_to_their_original_position(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    fill(channel, 5)
    tags = {}
    for _ in range(5):
        got = channel.get("q", no_ack=False)
        assert got is not None
        tags[got[2].body] = got[0]
    channel.reject(tags[b"m4"], requeue=True)
    channel.nack(tags[b"m2"], multiple=False, requeue=True)
    channel.ack(tags[b"m1"], multiple=False)
    consume(channel)
    assert [(d.body, d.redelivered) for d in sink.deliveries] == [(b"m2", True), (b"m4", True)]


def test_requeue_goes_before_newer_messages(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    fill(channel, 2)
    got = channel.get("q", no_ack=False)
    assert got is not None
    fill(channel, 1, "q")  # m1 again as a third message
    channel.nack(got[0], multiple=False, requeue=True)
    consume(channel, no_ack=True)
    assert [(d.body, d.redelivered) for d in sink.deliveries] == [
        (b"m1", True),
        (b"m2", False),
        (b"m1", False),
    ]


def test_get_reports_messages_still_ready(client: Client) -> None:
    channel, _ = client.channel()
    declare(channel)
    fill(channel, 3)
    first = channel.get("q", no_ack=False)
    assert first is not None and first[3] == 2
    second = channel.get("q", no_ack=True)
    assert second is not None and second[3] == 1
    assert client.connection.vhost.queues["q"].unacked_count == 1
    assert channel.get("q", no_ack=True) is not None
    assert channel.get("q", no_ack=True) is None


def test_ack_errors(client: Client) -> None:
    channel, _ = client.channel()
    declare(channel)
    fill(channel, 2)
    consume(channel)
    channel.ack(1, multiple=False)
    with pytest.raises(PreconditionFailed, match="^unknown delivery tag 1$"):
        channel.ack(1, multiple=False)
    with pytest.raises(PreconditionFailed, match="^unknown delivery tag 7$"):
        channel.ack(7, multiple=True)
    with pytest.raises(PreconditionFailed, match="^unknown delivery tag 0$"):
        channel.ack(0, multiple=False)


def test_multiple_ack_settles_everything_up_to_the_tag(client: Client, vhost: VirtualHost) -> None:
    channel, _ = client.channel()
    declare(channel)
    fill(channel, 6)
    consume(channel)
    channel.ack(2, multiple=False)
    channel.ack(4, multiple=True)
    assert vhost.queues["q"].unacked_count == 2
    channel.ack(0, multiple=True)  # tag 0 with multiple: all outstanding
    assert vhost.queues["q"].unacked_count == 0
    channel.ack(0, multiple=True)  # nothing outstanding: still fine


def test_multiple_nack_requeues_everything_up_to_the_tag(
    client: Client, vhost: VirtualHost
) -> None:
    channel, sink = client.channel()
    declare(channel)
    fill(channel, 3)
    channel.qos(0, 3, False)
    consume(channel)
    sink.take()
    channel.nack(2, multiple=True, requeue=True)
    assert [(d.body, d.redelivered) for d in sink.deliveries] == [(b"m1", True), (b"m2", True)]


def test_nack_and_reject_without_requeue_drop(client: Client, vhost: VirtualHost) -> None:
    channel, _ = client.channel()
    declare(channel)
    fill(channel, 2)
    consume(channel)
    channel.nack(1, multiple=False, requeue=False)
    channel.reject(2, requeue=False)
    queue = vhost.queues["q"]
    assert (queue.message_count, queue.unacked_count) == (0, 0)


def test_consumers_share_a_queue_round_robin(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    consume(channel, tag="a", no_ack=True)
    consume(channel, tag="b", no_ack=True)
    fill(channel, 4)
    assert [d.consumer_tag for d in sink.deliveries] == ["a", "b", "a", "b"]


def test_consumer_priority_goes_first_while_it_has_credit(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    channel.qos(0, 2, False)
    for tag, priority in (("low", 0), ("high", 10), ("high2", 10)):
        consumer = channel.consume(
            "q", tag, no_ack=False, exclusive=False, arguments={"x-priority": priority}
        )
        channel.start(consumer)
    fill(channel, 6)
    assert [d.consumer_tag for d in sink.deliveries] == [
        "high",
        "high2",
        "high",
        "high2",
        "low",
        "low",
    ]


def test_prefetch_per_consumer_and_per_channel(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel, "q1")
    declare(channel, "q2")
    channel.qos(0, 2, False)  # each consumer created from now on: 2
    channel.qos(0, 3, True)  # the whole channel: 3
    consume(channel, "q1", "a")
    consume(channel, "q2", "b")
    fill(channel, 5, "q1")
    fill(channel, 5, "q2")
    assert [d.consumer_tag for d in sink.deliveries] == ["a", "a", "b"]
    channel.ack(1, multiple=False)  # frees channel credit; "a" has room again
    assert [d.consumer_tag for d in sink.deliveries] == ["a", "a", "b", "a"]


def test_prefetch_zero_is_unlimited(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    channel.qos(0, 0, False)
    fill(channel, 50)
    consume(channel)
    assert len(sink.deliveries) == 50


def test_prefetch_size_is_not_implemented(client: Client) -> None:
    channel, _ = client.channel()
    with pytest.raises(FeatureNotImplemented, match=r"prefetch_size!=0 \(10\)"):
        channel.qos(10, 0, False)


def test_consumer_tags(client: Client) -> None:
    channel, _ = client.channel()
    declare(channel)
    generated = channel.consume("q", "", no_ack=True, exclusive=False, arguments={})
    assert generated.tag.startswith("amq.ctag-")
    channel.consume("q", "mine", no_ack=True, exclusive=False, arguments={})
    with pytest.raises(NotAllowed, match="attempt to reuse consumer tag 'mine'"):
        channel.consume("q", "mine", no_ack=True, exclusive=False, arguments={})
    channel.cancel("unknown")  # not an error


def test_exclusive_consumers(client: Client) -> None:
    channel, _ = client.channel()
    declare(channel)
    channel.consume("q", "only", no_ack=True, exclusive=True, arguments={})
    with pytest.raises(AccessRefused, match="queue 'q' in vhost '/' in exclusive use"):
        channel.consume("q", "second", no_ack=True, exclusive=False, arguments={})
    channel.cancel("only")
    channel.consume("q", "first", no_ack=True, exclusive=False, arguments={})
    with pytest.raises(AccessRefused, match="in exclusive use"):
        channel.consume("q", "excl", no_ack=True, exclusive=True, arguments={})


def test_empty_queue_name_means_the_last_declared_queue(client: Client) -> None:
    channel, _ = client.channel()
    with pytest.raises(NotFound, match="^no previously declared queue$"):
        channel.queue("")
    declare(channel, "")
    assert channel.queue("").name.startswith("amq.gen-")


def test_closing_a_channel_requeues_to_other_consumers(client: Client) -> None:
    first, first_sink = client.channel(1)
    second, second_sink = client.channel(2)
    declare(first)
    consume(first, tag="a")
    fill(first, 2)
    consume(second, tag="b")
    assert len(first_sink.deliveries) == 2 and not second_sink.deliveries
    first.close()
    assert [(d.body, d.redelivered) for d in second_sink.deliveries] == [
        (b"m1", True),
        (b"m2", True),
    ]


def test_recover_requeues_and_redelivers(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    fill(channel, 2)
    consume(channel)
    sink.take()
    channel.recover(requeue=True)
    assert [(d.body, d.redelivered, d.delivery_tag) for d in sink.deliveries] == [
        (b"m1", True, 3),
        (b"m2", True, 4),
    ]


def test_deleting_a_queue_cancels_its_consumers(vhost: VirtualHost) -> None:
    notified = Client(vhost, cancel_notify=True)
    silent = Client(vhost, "other", cancel_notify=False)
    channel, sink = notified.channel()
    other, other_sink = silent.channel()
    declare(channel)
    consume(channel, tag="a")
    consume(other, tag="b")
    vhost.delete_queue(vhost.queues["q"])
    assert sink.cancelled == ["a"]
    assert other_sink.cancelled == []
    assert not channel.consumers and not other.consumers


def test_auto_delete_queue_goes_when_its_last_consumer_leaves(
    client: Client, vhost: VirtualHost
) -> None:
    channel, _ = client.channel()
    declare(channel, auto_delete=True)
    assert channel.get("q", no_ack=True) is None  # basic.get does not count as a consumer
    assert "q" in vhost.queues
    consume(channel, tag="a")
    consume(channel, tag="b")
    channel.cancel("a")
    assert "q" in vhost.queues
    channel.cancel("b")
    assert "q" not in vhost.queues


def test_exclusive_queues_go_with_their_connection(client: Client, vhost: VirtualHost) -> None:
    channel, _ = client.channel()
    declare(channel, exclusive=True)
    client.connection.close()
    assert "q" not in vhost.queues


def test_flow_pauses_deliveries(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    consume(channel, no_ack=True)
    channel.flow(False)
    fill(channel, 2)
    assert not sink.deliveries
    channel.flow(True)
    assert sink.bodies() == [b"m1", b"m2"]


def test_unwritable_connection_stops_deliveries_until_drained(client: Client) -> None:
    channel, sink = client.channel()
    declare(channel)
    consume(channel, no_ack=True)
    channel.set_writable(False)
    fill(channel, 3)
    assert not sink.deliveries
    channel.set_writable(True)
    assert sink.bodies() == [b"m1", b"m2", b"m3"]


def test_mandatory_unroutable_is_returned_and_still_confirmed(client: Client) -> None:
    channel, sink = client.channel()
    channel.select_confirms()
    publish(channel, "", "nowhere", mandatory=True)
    publish(channel, "", "nowhere")
    assert [(code, text) for code, text, _ in sink.returns] == [(312, "NO_ROUTE")]
    assert sink.confirms == [1, 2]


def test_publish_errors(client: Client, vhost: VirtualHost) -> None:
    channel, _ = client.channel()
    with pytest.raises(NotFound, match="^no exchange 'nope' in vhost '/'$"):
        publish(channel, "nope", "k")
    vhost.declare_exchange("internal", "fanout", internal=True)
    with pytest.raises(AccessRefused, match="cannot publish to internal exchange 'internal'"):
        publish(channel, "internal", "k")
    with pytest.raises(PreconditionFailed) as error:
        publish(channel, "", "k", user_id="mallory")
    assert error.value.detail == (
        "user_id property set to 'mallory' but authenticated user was 'guest'"
    )
    publish(channel, "", "k", user_id="guest")
    with pytest.raises(FeatureNotImplemented, match="immediate=true"):
        channel.publish("", "k", False, True, b"", b"")


def test_transaction_holds_publishes_and_acks_until_commit(
    client: Client, vhost: VirtualHost
) -> None:
    channel, _sink = client.channel()
    declare(channel)
    fill(channel, 1)
    channel.select_tx()
    got = channel.get("q", no_ack=False)
    assert got is not None
    publish(channel, "", "q", b"in-tx")
    channel.ack(got[0], multiple=False)
    queue = vhost.queues["q"]
    assert (queue.message_count, queue.unacked_count) == (0, 1)
    channel.commit()
    assert (queue.message_count, queue.unacked_count) == (1, 0)


def test_rollback_discards_publishes_and_restores_acked_deliveries(
    client: Client, vhost: VirtualHost
) -> None:
    channel, _ = client.channel()
    declare(channel)
    fill(channel, 1)
    channel.select_tx()
    got = channel.get("q", no_ack=False)
    assert got is not None
    publish(channel, "", "q", b"in-tx")
    channel.ack(got[0], multiple=False)
    channel.rollback()
    queue = vhost.queues["q"]
    assert (queue.message_count, queue.unacked_count) == (0, 1)
    channel.ack(got[0], multiple=False)  # outstanding again, so it can be acked
    channel.commit()
    assert queue.unacked_count == 0


def test_confirm_and_tx_exclude_each_other(client: Client) -> None:
    channel, _ = client.channel()
    with pytest.raises(PreconditionFailed, match="channel is not transactional"):
        channel.commit()
    with pytest.raises(PreconditionFailed, match="channel is not transactional"):
        channel.rollback()
    channel.select_confirms()
    with pytest.raises(PreconditionFailed, match="cannot switch from confirm to tx mode"):
        channel.select_tx()
    other, _ = client.channel(2)
    other.select_tx()
    with pytest.raises(PreconditionFailed, match="cannot switch from tx to confirm mode"):
        other.select_confirms()


def test_closing_a_transactional_channel_requeues_uncommitted_acks(
    client: Client, vhost: VirtualHost
) -> None:
    channel, _ = client.channel()
    declare(channel)
    fill(channel, 1)
    channel.select_tx()
    got = channel.get("q", no_ack=False)
    assert got is not None
    channel.ack(got[0], multiple=False)
    channel.close()
    queue = vhost.queues["q"]
    assert (queue.message_count, queue.unacked_count) == (1, 0)


def test_counts_stay_consistent(client: Client, vhost: VirtualHost) -> None:
    """ready + unacked always equals what was published minus what was settled."""
    channel, _ = client.channel()
    declare(channel)
    fill(channel, 10)
    channel.qos(0, 4, False)
    consume(channel)
    queue = vhost.queues["q"]
    assert (queue.message_count, queue.unacked_count) == (6, 4)
    channel.ack(2, multiple=True)
    assert (queue.message_count, queue.unacked_count) == (4, 4)
    channel.nack(0, multiple=True, requeue=False)
    assert (queue.message_count, queue.unacked_count) == (0, 4)


def test_recover_without_requeue_is_not_implemented(client: Client) -> None:
    channel, _ = client.channel()
    with pytest.raises(FeatureNotImplemented, match="requeue=false"):
        channel.recover(requeue=False)


@pytest.mark.parametrize(
    ("expiration", "reason"),
    [
        ("abc", "no_integer"),
        ("", "no_integer"),
        ("-1", "{value_negative,-1}"),
        ("10abc", '{leftover_string,"abc"}'),
    ],
)
def test_invalid_expiration_is_refused(client: Client, expiration: str, reason: str) -> None:
    channel, _ = client.channel()
    with pytest.raises(PreconditionFailed) as error:
        publish(channel, "", "k", expiration=expiration)
    assert error.value.detail == f"invalid expiration '{expiration}': {reason}"


def test_valid_expiration_is_accepted(client: Client, vhost: VirtualHost) -> None:
    channel, _ = client.channel()
    declare(channel)
    publish(channel, "", "q", expiration="60000")
    assert vhost.queues["q"].message_count == 1


def test_an_internal_failure_while_routing_nacks_the_publish(
    client: Client, vhost: VirtualHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, sink = client.channel()
    declare(channel)
    channel.select_confirms()
    publish(channel, "", "q")

    def broken_enqueue(self: object, message: object, now_ms: int) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(type(vhost.queues["q"]), "enqueue", broken_enqueue)
    with pytest.raises(RuntimeError, match="injected fault"):
        publish(channel, "", "q")
    assert (sink.confirms, sink.nacks) == ([1], [2])


def test_closing_a_connection_requeues_to_other_connections_only(vhost: VirtualHost) -> None:
    leaving, staying = Client(vhost, "leaving"), Client(vhost, "staying")
    first, _ = leaving.channel(1)
    second, second_sink = leaving.channel(2)
    other, other_sink = staying.channel(1)
    declare(first)
    consume(first, tag="a")
    fill(first, 2)
    consume(second, tag="b")
    consume(other, tag="c")
    leaving.connection.close()
    assert not second_sink.deliveries  # the closing connection got nothing back
    assert [(d.body, d.redelivered) for d in other_sink.deliveries] == [
        (b"m1", True),
        (b"m2", True),
    ]
