"""Delivery semantics (issue: TTL, length limits, dead-lettering, delivery limit,
consumer timeout, priorities, single active consumer and consumer priorities)."""

from __future__ import annotations

import time
from typing import Any

import pika
import pika.exceptions

from interop.scenarios import Session, scenario
from interop.scenarios.basics import drain
from interop.transcript import Transcript

WAIT_S = 10.0


def get_when_there(t: Transcript, channel: Any, queue: str, label: str) -> None:
    """Poll basic.get until a message arrives (it waits on the broker's clock)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            t.message(label, method, properties, body)
            return
        if time.monotonic() > deadline:
            t.add(label, "nothing arrived")
            return
        channel.connection.process_data_events(time_limit=0.02)


def dead_letter_pair(channel: Any, t: Transcript, **arguments: Any) -> tuple[str, str]:
    queue, dlq = t.name("q"), t.name("dlq")
    channel.queue_declare(dlq)
    channel.queue_declare(
        queue,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq, **arguments},
    )
    return queue, dlq


def publish_confirmed(
    t: Transcript, channel: Any, queue: str, body: bytes, **properties: Any
) -> None:
    try:
        channel.basic_publish("", queue, body, pika.BasicProperties(**properties))
        t.add("publish", body, "ack")
    except pika.exceptions.NackError:
        t.add("publish", body, "nack")


@scenario("ttl")
def queue_ttl_dead_letters_with_x_death(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue, dlq = dead_letter_pair(channel, t, **{"x-message-ttl": 100})
    channel.basic_publish("", queue, b"expires", pika.BasicProperties(headers={"h": 1}))
    get_when_there(t, channel, dlq, "dead-lettered")
    t.add("left", channel.queue_declare(queue, passive=True).method.message_count)


@scenario("ttl")
def per_message_expiration_lower_wins(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue, dlq = dead_letter_pair(channel, t, **{"x-message-ttl": 60_000})
    channel.basic_publish("", queue, b"short", pika.BasicProperties(expiration="50"))
    get_when_there(t, channel, dlq, "dead-lettered")
    channel.basic_publish("", queue, b"long", pika.BasicProperties(expiration="600000"))
    drain(t, channel, queue)


@scenario("ttl")
def ttl_zero_reaches_only_a_waiting_consumer(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue, dlq = dead_letter_pair(channel, t, **{"x-message-ttl": 0})
    channel.basic_publish("", queue, b"nobody waiting")
    get_when_there(t, channel, dlq, "dead-lettered")
    received: list[bytes] = []
    channel.basic_consume(queue, lambda ch, m, p, b: received.append(b), auto_ack=True)
    channel.basic_publish("", queue, b"consumer waiting")
    deadline = time.monotonic() + WAIT_S
    while not received and time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.02)
    t.add("consumed", received)


@scenario("ttl")
def requeued_message_keeps_its_expiration(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue, dlq = dead_letter_pair(channel, t)
    channel.basic_publish("", queue, b"m", pika.BasicProperties(expiration="300"))
    method, properties, _ = channel.basic_get(queue)
    t.add("expiration as delivered", properties.expiration)
    channel.basic_nack(method.delivery_tag, requeue=True)
    get_when_there(t, channel, dlq, "dead-lettered")


@scenario("ttl")
def x_expires_deletes_an_unused_queue(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue, arguments={"x-expires": 200})
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        # Looking renews the lease (a passive declare is a use, on both brokers): look
        # less often than the lease lasts, so that the outcome is the broker's, not the
        # client's pace (polling every 50 ms kept it alive unless the client paused).
        time.sleep(0.5)
        try:
            s.channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            t.add("gone", error.reply_code)
            return
    t.add("still there")


@scenario("limits")
def max_length_drop_head_dead_letters(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue, dlq = dead_letter_pair(channel, t, **{"x-max-length": 2})
    for number in range(4):
        channel.basic_publish("", queue, b"%d" % number)
    drain(t, channel, queue)
    drain(t, channel, dlq, "dead-lettered")


@scenario("limits")
def max_length_bytes(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue, arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc", b"dd"):
        channel.basic_publish("", queue, body)
    drain(t, channel, queue)


@scenario("limits")
def reject_publish_nacks(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queue, dlq = dead_letter_pair(channel, t, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    for body in (b"first", b"second"):
        publish_confirmed(t, channel, queue, body)
    drain(t, channel, queue)
    drain(t, channel, dlq, "dead-lettered")


@scenario("limits")
def reject_publish_dlx_dead_letters_the_newcomer(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queue, dlq = dead_letter_pair(
        channel, t, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}
    )
    for body in (b"first", b"second"):
        publish_confirmed(t, channel, queue, body)
    drain(t, channel, queue)
    get_when_there(t, channel, dlq, "dead-lettered")


@scenario("dead-lettering")
def rejected_then_expired_x_death_history(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue, dlq = dead_letter_pair(channel, t)
    second = t.name("second")
    channel.queue_declare(
        second,
        arguments={
            "x-message-ttl": 50,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    channel.basic_publish("", queue, b"m", pika.BasicProperties(headers={"CC": [second]}))
    method, _, _ = channel.basic_get(queue)
    channel.basic_reject(method.delivery_tag, requeue=False)
    get_when_there(t, channel, dlq, "first death")
    get_when_there(t, channel, dlq, "second death")


@scenario("dead-lettering")
def dead_letter_to_an_exchange_keeps_the_routing_key(s: Session, t: Transcript) -> None:
    channel = s.channel()
    exchange, queue, caught = t.name("dlx"), t.name("q"), t.name("caught")
    channel.exchange_declare(exchange, "direct")
    channel.queue_declare(caught)
    channel.queue_bind(caught, exchange, queue)
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": exchange})
    channel.basic_publish("", queue, b"m")
    method, _, _ = channel.basic_get(queue)
    channel.basic_nack(method.delivery_tag, requeue=False)
    get_when_there(t, channel, caught, "dead-lettered")


@scenario("dead-lettering")
def cycle_without_rejection_is_dropped(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("loop")
    channel.queue_declare(
        queue,
        arguments={
            "x-message-ttl": 20,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        },
    )
    channel.basic_publish("", queue, b"m")
    deadline = time.monotonic() + 0.5  # several TTLs: it would have come back by now
    while time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.05)
    drain(t, channel, queue)


@scenario("delivery-limit")
def delivery_limit_dead_letters(s: Session, t: Transcript) -> None:
    channel = s.channel()
    with t.expect_error("declare with x-delivery-limit"):
        queue, dlq = dead_letter_pair(channel, t, **{"x-delivery-limit": 1})
    if channel.is_closed:
        return
    channel.basic_publish("", queue, b"poison")
    for _ in range(3):
        method, properties, body = channel.basic_get(queue)
        if method is None:
            break
        t.message("delivery", method, properties, body)
        channel.basic_nack(method.delivery_tag, requeue=True)
    get_when_there(t, channel, dlq, "dead-lettered")


@scenario("priorities")
def priority_order(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue, arguments={"x-max-priority": 3})
    for number, priority in enumerate([None, 1, 5, 3, 0, 2, 3, None, 200]):
        channel.basic_publish("", queue, b"%d" % number, pika.BasicProperties(priority=priority))
    method, _, _ = channel.basic_get(queue)
    channel.basic_nack(method.delivery_tag, requeue=True)
    drain(t, channel, queue)


@scenario("priorities")
def priority_with_max_length(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue, arguments={"x-max-priority": 3, "x-max-length": 3})
    for number, priority in enumerate([1, 3, 0, 2, 0]):
        channel.basic_publish("", queue, b"%d" % number, pika.BasicProperties(priority=priority))
    drain(t, channel, queue)


@scenario("consumers")
def single_active_consumer_fails_over(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue, arguments={"x-single-active-consumer": True})
    got: list[tuple[str, bytes]] = []
    first = channel.basic_consume(
        queue, lambda ch, m, p, b: got.append(("first", b)), auto_ack=True
    )
    channel.basic_consume(queue, lambda ch, m, p, b: got.append(("second", b)), auto_ack=True)
    channel.basic_publish("", queue, b"1")
    wait_for(channel, got, 1)
    channel.basic_cancel(first)
    channel.basic_publish("", queue, b"2")
    wait_for(channel, got, 2)
    t.add("deliveries", got)


@scenario("consumers")
def consumer_priorities(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue)
    got: list[tuple[str, bytes]] = []
    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(
        queue, lambda ch, m, p, b: got.append(("low", b)), arguments={"x-priority": 1}
    )
    channel.basic_consume(
        queue, lambda ch, m, p, b: got.append(("high", b)), arguments={"x-priority": 5}
    )
    for number in range(2):
        channel.basic_publish("", queue, b"%d" % number)
    wait_for(channel, got, 2)
    t.add("deliveries", sorted(got))


def wait_for(channel: Any, got: list[Any], count: int, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.02)


@scenario("consumer-timeout")
def consumer_timeout_cancels_and_requeues(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue, arguments={"x-consumer-timeout": 200})
    channel.basic_publish("", queue, b"held")
    cancelled: list[str] = []
    channel.add_on_cancel_callback(lambda frame: cancelled.append("cancelled"))
    channel.basic_consume(queue, lambda ch, m, p, b: None)
    wait_for(channel, cancelled, 1, timeout_s=2.0)  # ten times the timeout
    t.add("consumer", cancelled or ["still consuming"])
    drain(t, channel, queue)
