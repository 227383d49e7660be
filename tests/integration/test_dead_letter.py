"""TTL, length limits, dead-lettering and the delivery limit, as a pika user sees them.

Expected behaviour is RabbitMQ 3.10's (these tests run against it with AMQP_URL), except
where a test says it checks an amqpd extension; those are skipped against RabbitMQ, and the
deviation is listed in the README.
"""

from __future__ import annotations

import os
import time

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.helpers import WAIT_S, Cleanup, queue_depth, round_trip

pytestmark = pytest.mark.timeout(30)

amqpd_only = pytest.mark.skipif(
    bool(os.environ.get("AMQP_URL")), reason="an amqpd extension RabbitMQ 3.10 does not have"
)


def get_one(
    channel: BlockingChannel, queue: str, auto_ack: bool = True
) -> tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes]:
    """basic.get until a message comes (expiry and dead-lettering happen on the broker's
    clock), failing after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, properties, body
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing arrived in {queue!r} within {WAIT_S} s")
        channel.connection.process_data_events(time_limit=0.02)


def dead_letter_pair(
    channel: BlockingChannel, name: str, cleanup: Cleanup, **arguments: object
) -> tuple[str, str]:
    """A queue `name` dead-lettering through the default exchange to `name`-dlq."""
    dlq = cleanup.queue(f"{name}-dlq")
    channel.queue_declare(dlq)
    channel.queue_declare(
        cleanup.queue(name),
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
            **arguments,
        },
    )
    return name, dlq


def test_queue_ttl_expires_into_the_dead_letter_queue_with_x_death(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue, dlq = dead_letter_pair(channel, name, cleanup, **{"x-message-ttl": 50})
    before_s = int(time.time())
    channel.basic_publish(
        "", queue, b"old", pika.BasicProperties(headers={"keep": "me"}, message_id="m-1")
    )
    method, properties, body = get_one(channel, dlq)
    assert body == b"old"
    assert method.exchange == ""
    assert method.routing_key == dlq
    assert properties.message_id == "m-1"
    headers = properties.headers
    assert headers["keep"] == "me"
    assert headers["x-first-death-reason"] == "expired"
    assert headers["x-first-death-queue"] == queue
    assert headers["x-first-death-exchange"] == ""
    [death] = headers["x-death"]
    assert before_s <= death.pop("time").timestamp() <= time.time() + 1
    assert death == {
        "count": 1,
        "reason": "expired",
        "queue": queue,
        "exchange": "",
        "routing-keys": [queue],
    }
    assert queue_depth(channel, queue) == (0, 0)


def test_the_lower_of_queue_ttl_and_expiration_wins(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue, dlq = dead_letter_pair(channel, name, cleanup, **{"x-message-ttl": 60_000})
    channel.basic_publish("", queue, b"short", pika.BasicProperties(expiration="30"))
    _, properties, body = get_one(channel, dlq)
    assert body == b"short"
    assert properties.expiration is None  # removed when dead-lettered...
    assert properties.headers["x-death"][0]["original-expiration"] == "30"  # ...and kept here


def test_invalid_expiration_closes_the_channel_with_406(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name))
    channel.basic_publish("", name, b"x", pika.BasicProperties(expiration="soon"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        round_trip(channel)
    assert closed.value.reply_code == 406
    assert "invalid expiration" in closed.value.reply_text


def test_ttl_zero_reaches_a_waiting_consumer_and_expires_otherwise(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue, dlq = dead_letter_pair(channel, name, cleanup, **{"x-message-ttl": 0})
    channel.basic_publish("", queue, b"nobody waits")
    _, properties, body = get_one(channel, dlq)
    assert body == b"nobody waits"
    assert properties.headers["x-death"][0]["reason"] == "expired"
    received: list[bytes] = []
    channel.basic_consume(queue, lambda ch, m, p, b: received.append(b), auto_ack=True)
    channel.basic_publish("", queue, b"someone waits")
    deadline = time.monotonic() + WAIT_S
    while not received and time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.02)
    assert received == [b"someone waits"]


def test_a_requeued_message_keeps_its_expiry(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue, dlq = dead_letter_pair(channel, name, cleanup, **{"x-message-ttl": 300})
    channel.basic_publish("", queue, b"bounced")
    method, _, _ = channel.basic_get(queue)
    assert method is not None
    channel.basic_nack(method.delivery_tag, requeue=True)
    _, properties, body = get_one(channel, dlq)
    assert body == b"bounced"
    assert properties.headers["x-death"][0]["reason"] == "expired"


def test_reject_without_requeue_dead_letters_with_the_dead_letter_routing_key(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}-dlx")
    channel.exchange_declare(exchange, "direct")
    dlq = cleanup.queue(f"{name}-dlq")
    channel.queue_declare(dlq)
    channel.queue_bind(dlq, exchange, "dead")
    queue = cleanup.queue(name)
    channel.queue_declare(
        queue,
        arguments={"x-dead-letter-exchange": exchange, "x-dead-letter-routing-key": "dead"},
    )
    channel.basic_publish("", queue, b"no", pika.BasicProperties(headers={"CC": ["elsewhere"]}))
    method, _, _ = channel.basic_get(queue)
    assert method is not None
    channel.basic_reject(method.delivery_tag, requeue=False)
    got, properties, body = get_one(channel, dlq)
    assert body == b"no"
    assert (got.exchange, got.routing_key) == (exchange, "dead")
    assert "CC" not in properties.headers  # a dead-letter routing key drops CC
    death = properties.headers["x-death"][0]
    assert death["reason"] == "rejected"
    assert death["routing-keys"] == [queue, "elsewhere"]


def test_nack_dead_letters_with_the_original_routing_keys(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    exchange = cleanup.exchange(f"{name}-dlx")
    channel.exchange_declare(exchange, "fanout")
    dlq = cleanup.queue(f"{name}-dlq")
    channel.queue_declare(dlq)
    channel.queue_bind(dlq, exchange)
    queue = cleanup.queue(name)
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": exchange})
    channel.basic_publish("", queue, b"nope")
    method, _, _ = channel.basic_get(queue)
    assert method is not None
    channel.basic_nack(method.delivery_tag, requeue=False)
    got, properties, _ = get_one(channel, dlq)
    assert (got.exchange, got.routing_key) == (exchange, queue)
    assert properties.headers["x-death"][0]["count"] == 1


def test_dead_lettering_to_a_missing_exchange_drops_the_message(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue = cleanup.queue(name)
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": f"{name}-missing"})
    channel.basic_publish("", queue, b"lost on purpose")
    method, _, _ = channel.basic_get(queue)
    assert method is not None
    channel.basic_reject(method.delivery_tag, requeue=False)
    round_trip(channel)
    assert queue_depth(channel, queue) == (0, 0)


def test_repeated_deaths_count_up_in_one_entry_moved_to_the_front(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    # q rejects into r; r expires back into q: rejects keep the cycle alive.
    queue, retry = cleanup.queue(name), cleanup.queue(f"{name}-retry")
    channel.queue_declare(
        queue, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": retry}
    )
    channel.queue_declare(
        retry,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            "x-message-ttl": 20,
        },
    )
    channel.basic_publish("", queue, b"again")
    for _ in range(2):
        method, _, _ = get_one(channel, queue, auto_ack=False)
        channel.basic_reject(method.delivery_tag, requeue=False)
    method, properties, _ = get_one(channel, queue, auto_ack=False)
    deaths = properties.headers["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
        (retry, "expired", 2),
        (queue, "rejected", 2),
    ]
    assert properties.headers["x-first-death-queue"] == queue
    assert properties.headers["x-first-death-reason"] == "rejected"
    channel.basic_ack(method.delivery_tag)


def test_an_expiry_cycle_without_rejection_is_dropped(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue = cleanup.queue(name)
    channel.queue_declare(
        queue,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            "x-message-ttl": 20,
        },
    )
    channel.basic_publish("", queue, b"round and round")
    wait_for_depth(channel, queue, 0)
    # A message still cycling would be back within a TTL; watch for ten of them.
    watch_until = time.monotonic() + 0.2
    while time.monotonic() < watch_until:
        assert queue_depth(channel, queue)[0] == 0
        channel.connection.process_data_events(time_limit=0.02)


def wait_for_depth(channel: BlockingChannel, queue: str, depth: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while queue_depth(channel, queue)[0] != depth:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue!r} never held {depth} message(s)")
        channel.connection.process_data_events(time_limit=0.02)


def test_max_length_drops_from_the_head_into_the_dead_letter_queue(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue, dlq = dead_letter_pair(channel, name, cleanup, **{"x-max-length": 2})
    for body in (b"1", b"2", b"3", b"4"):
        channel.basic_publish("", queue, body)
    round_trip(channel)
    assert queue_depth(channel, queue)[0] == 2
    assert [get_one(channel, queue)[2] for _ in range(2)] == [b"3", b"4"]
    dropped = [get_one(channel, dlq) for _ in range(2)]
    assert [body for _, _, body in dropped] == [b"1", b"2"]
    assert {p.headers["x-death"][0]["reason"] for _, p, _ in dropped} == {"maxlen"}


def test_max_length_bytes_counts_bodies(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue = cleanup.queue(name)
    channel.queue_declare(queue, arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        channel.basic_publish("", queue, body)
    round_trip(channel)
    assert queue_depth(channel, queue)[0] == 2
    assert [get_one(channel, queue)[2] for _ in range(2)] == [b"bbbb", b"cccc"]


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
def test_reject_publish_nacks_the_newcomer(
    channel: BlockingChannel, name: str, cleanup: Cleanup, overflow: str
) -> None:
    queue, dlq = dead_letter_pair(
        channel, name, cleanup, **{"x-max-length": 1, "x-overflow": overflow}
    )
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"fits")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", queue, b"does not fit")
    assert queue_depth(channel, queue)[0] == 1
    assert get_one(channel, queue)[2] == b"fits"
    if overflow == "reject-publish-dlx":
        _, properties, body = get_one(channel, dlq)
        assert body == b"does not fit"
        assert properties.headers["x-death"][0]["reason"] == "maxlen"
    else:
        assert queue_depth(channel, dlq)[0] == 0


def test_x_expires_deletes_an_unused_queue(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue = cleanup.queue(name)
    channel.queue_declare(queue, arguments={"x-expires": 100})
    # Binding does not count as using the queue (a passive declare would).
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            channel.queue_bind(queue, "amq.fanout")
        except pika.exceptions.ChannelClosedByBroker as closed:
            assert closed.reply_code == 404
            return
        channel.connection.process_data_events(time_limit=0.05)
    raise AssertionError("the queue was still there")


def test_a_passive_declare_keeps_an_expiring_queue_alive(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue = cleanup.queue(name)
    channel.queue_declare(queue, arguments={"x-expires": 300})
    until = time.monotonic() + 0.9  # three lifetimes, used every 50 ms
    while time.monotonic() < until:
        channel.queue_declare(queue, passive=True)
        channel.connection.process_data_events(time_limit=0.05)


@amqpd_only
def test_delivery_limit_dead_letters_after_that_many_returns(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue, dlq = dead_letter_pair(channel, name, cleanup, **{"x-delivery-limit": 1})
    channel.basic_publish("", queue, b"poison")
    method, properties, _ = channel.basic_get(queue)
    assert not method.redelivered
    assert "x-delivery-count" not in (properties.headers or {})
    channel.basic_nack(method.delivery_tag, requeue=True)
    method, properties, _ = channel.basic_get(queue)
    assert method.redelivered
    assert properties.headers["x-delivery-count"] == 1
    channel.basic_nack(method.delivery_tag, requeue=True)
    _, properties, body = get_one(channel, dlq)
    assert body == b"poison"
    assert properties.headers["x-death"][0]["reason"] == "delivery_limit"
    assert queue_depth(channel, queue) == (0, 0)


@amqpd_only
def test_a_message_expires_behind_a_longer_lived_head(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    queue, dlq = dead_letter_pair(channel, name, cleanup)
    channel.basic_publish("", queue, b"long", pika.BasicProperties(expiration="60000"))
    channel.basic_publish("", queue, b"short", pika.BasicProperties(expiration="20"))
    _, _, body = get_one(channel, dlq)
    assert body == b"short"
    assert queue_depth(channel, queue)[0] == 1
