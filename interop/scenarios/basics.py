"""Core AMQP behaviour: declare, bind, publish, get, consume, ack/nack/reject, errors,
confirms, transactions and the exchange types."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions

from interop.scenarios import Session, scenario
from interop.transcript import Transcript


def drain(t: Transcript, channel: Any, queue: str, label: str = "get") -> None:
    """basic.get with auto-ack until the queue is empty, recording every message."""
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            t.add(label, "empty")
            return
        t.message(label, method, properties, body)


@scenario("basics")
def declare_publish_get(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)  # counted once confirmed (RabbitMQ's queues lag)
    queue = t.name("q")
    ok = channel.queue_declare(queue, arguments={"x-unknown": "kept"})
    t.add("declare-ok", ok.method.queue, ok.method.message_count, ok.method.consumer_count)
    for number in range(3):
        channel.basic_publish("", queue, b"m%d" % number, pika.BasicProperties(priority=number))
    t.add("passive", channel.queue_declare(queue, passive=True).method.message_count)
    drain(t, channel, queue)
    t.add("delete-ok", channel.queue_delete(queue).method.message_count)


@scenario("basics")
def server_named_and_empty_name(s: Session, t: Transcript) -> None:
    channel = s.channel()
    ok = channel.queue_declare("", exclusive=True)
    t.add("server-named", ok.method.queue.startswith("amq.gen-"))
    channel.basic_publish("", ok.method.queue, b"to the last declared")
    method, _, body = channel.basic_get("", auto_ack=True)
    t.add("get from ''", body, method.routing_key.startswith("amq.gen-"))


@scenario("basics")
def nack_reject_requeue_order(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue)
    for number in range(4):
        channel.basic_publish("", queue, b"%d" % number)
    tags = [channel.basic_get(queue)[0].delivery_tag for _ in range(4)]
    channel.basic_nack(tags[2], requeue=True)
    channel.basic_reject(tags[0], requeue=True)
    channel.basic_reject(tags[1], requeue=False)
    channel.basic_nack(tags[3], multiple=True, requeue=True)
    drain(t, channel, queue)
    channel.queue_delete(queue)


@scenario("basics")
def consume_with_prefetch_and_multiple_ack(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue)
    for number in range(5):
        channel.basic_publish("", queue, b"%d" % number)
    channel.basic_qos(prefetch_count=2)
    seen: list[Any] = []
    tag = channel.basic_consume(queue, lambda ch, m, p, b: seen.append((m.delivery_tag, b)))
    while len(seen) < 2:
        channel.connection.process_data_events(time_limit=0.05)
    channel.connection.process_data_events(time_limit=0.1)
    t.add("held at prefetch", [body for _, body in seen])
    channel.basic_ack(seen[-1][0], multiple=True)
    while len(seen) < 4:
        channel.connection.process_data_events(time_limit=0.05)
    t.add("after multiple ack", [body for _, body in seen])
    channel.basic_cancel(tag)
    channel.basic_recover(requeue=True)
    drain(t, channel, queue)
    channel.queue_delete(queue)


@scenario("errors")
def channel_errors(s: Session, t: Transcript) -> None:
    queue = t.name("q")
    setup = s.channel()
    setup.queue_declare(queue, durable=False)
    with t.expect_error("inequivalent durable"):
        s.channel().queue_declare(queue, durable=True)
    with t.expect_error("inequivalent argument"):
        s.channel().queue_declare(queue, arguments={"x-max-length": 1})
    with t.expect_error("passive missing"):
        s.channel().queue_declare(t.name("missing"), passive=True)
    with t.expect_error("reserved prefix"):
        s.channel().queue_declare("amq.mine")
    with t.expect_error("bad x-max-priority"):
        s.channel().queue_declare(t.name("p"), arguments={"x-max-priority": 256})
    with t.expect_error("bad x-message-ttl"):
        s.channel().queue_declare(t.name("p"), arguments={"x-message-ttl": -1})
    with t.expect_error("bad x-overflow"):
        s.channel().queue_declare(t.name("p"), arguments={"x-overflow": "drop-tail"})
    with t.expect_error("dlx routing key without dlx"):
        s.channel().queue_declare(t.name("p"), arguments={"x-dead-letter-routing-key": "k"})
    with t.expect_error("bind to missing exchange"):
        s.channel().queue_bind(queue, t.name("nowhere"))
    with t.expect_error("publish to missing exchange"):
        channel = s.channel()
        channel.basic_publish(t.name("nowhere"), "k", b"x")
        channel.queue_declare(queue, passive=True)  # the error arrives by then
    with t.expect_error("bad expiration"):
        channel = s.channel()
        channel.basic_publish("", queue, b"x", pika.BasicProperties(expiration="soon"))
        channel.queue_declare(queue, passive=True)
    with t.expect_error("unknown delivery tag"):
        channel = s.channel()
        channel.basic_ack(99)
        channel.queue_declare(queue, passive=True)
    with t.expect_error("delete if-empty"):
        channel = s.channel()
        channel.basic_publish("", queue, b"x")
        channel.queue_delete(queue, if_empty=True)
    setup.queue_delete(queue)


@scenario("errors")
def exclusive_queue_of_another_connection(s: Session, t: Transcript) -> None:
    owner = s.channel()
    queue = t.name("mine")
    owner.queue_declare(queue, exclusive=True)
    with t.expect_error("declare"):
        s.channel().queue_declare(queue)
    with t.expect_error("consume"):
        s.channel().basic_consume(queue, lambda *_: None)


@scenario("confirms")
def confirms_and_mandatory_returns(s: Session, t: Transcript) -> None:
    channel = s.channel(confirm=True)
    queue = t.name("q")
    channel.queue_declare(queue)
    returned: list[Any] = []
    channel.add_on_return_callback(
        lambda ch, m, p, b: returned.append((m.reply_code, m.reply_text, b))
    )
    channel.basic_publish("", queue, b"routed", mandatory=True)
    t.add("routed confirmed")
    try:
        channel.basic_publish("", t.name("nowhere"), b"lost", mandatory=True)
    except pika.exceptions.UnroutableError as error:
        t.add("unroutable", [message.body for message in error.messages])
    channel.connection.process_data_events(time_limit=0)
    t.add("returns", returned)
    channel.basic_publish("", t.name("nowhere"), b"not mandatory")
    t.add("unroutable without mandatory is confirmed")
    channel.queue_delete(queue)


@scenario("confirms")
def transactions(s: Session, t: Transcript) -> None:
    channel = s.channel()
    queue = t.name("q")
    channel.queue_declare(queue)
    channel.tx_select()
    channel.basic_publish("", queue, b"rolled back")
    channel.tx_rollback()
    t.add("after rollback", channel.queue_declare(queue, passive=True).method.message_count)
    channel.basic_publish("", queue, b"committed")
    channel.tx_commit()
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    channel.tx_rollback()  # the ack is undone: the message is unacked again
    channel.basic_recover(requeue=True)
    channel.tx_commit()
    drain(t, channel, queue)
    channel.queue_delete(queue)


@scenario("exchanges")
def exchange_types_route(s: Session, t: Transcript) -> None:
    channel = s.channel()
    kinds = {"direct": ["a"], "fanout": [""], "topic": ["orders.*", "#.eu"], "headers": [""]}
    queues = {}
    for kind, keys in kinds.items():
        exchange = t.name(kind)
        channel.exchange_declare(exchange, kind)
        queue = queues[kind] = t.name(f"{kind}.q")
        channel.queue_declare(queue)
        for key in keys:
            arguments = (
                {"x-match": "any", "region": "eu", "tier": "gold"} if kind == "headers" else None
            )
            channel.queue_bind(queue, exchange, key, arguments=arguments)
    for kind in kinds:
        for key, headers in (
            ("a", None),
            ("orders.new", None),
            ("x.y.eu", {"region": "eu"}),
            ("b", {"tier": "silver"}),
        ):
            channel.basic_publish(
                t.name(kind), key, f"{kind}:{key}".encode(), pika.BasicProperties(headers=headers)
            )
    for kind in kinds:
        drain(t, channel, queues[kind], kind)
        channel.queue_delete(queues[kind])
        channel.exchange_delete(t.name(kind))


@scenario("exchanges")
def exchange_to_exchange_and_alternate(s: Session, t: Transcript) -> None:
    channel = s.channel()
    source, middle, alternate = t.name("src"), t.name("mid"), t.name("ae")
    channel.exchange_declare(alternate, "fanout")
    channel.exchange_declare(source, "topic", arguments={"alternate-exchange": alternate})
    channel.exchange_declare(middle, "direct")
    channel.exchange_bind(middle, source, "orders.*")
    caught, orders = t.name("caught"), t.name("orders")
    for queue in (caught, orders):
        channel.queue_declare(queue)
    channel.queue_bind(caught, alternate)
    channel.queue_bind(orders, middle, "orders.new")
    for key in ("orders.new", "orders.old", "other"):
        channel.basic_publish(source, key, key.encode())
    drain(t, channel, orders, "orders")
    drain(t, channel, caught, "caught")
    for queue in (caught, orders):
        channel.queue_delete(queue)
    for exchange in (source, middle, alternate):
        channel.exchange_delete(exchange)
