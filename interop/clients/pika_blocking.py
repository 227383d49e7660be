"""pika's BlockingConnection, as most scripts and web apps use it."""

from __future__ import annotations

import os
import sys

import pika


def main() -> None:
    url, prefix = os.environ["AMQP_URL"], os.environ["RUN_PREFIX"]
    exchange, queue = f"{prefix}.x", f"{prefix}.q"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare(exchange, "topic", auto_delete=True)
    channel.queue_declare(queue, auto_delete=True)
    channel.queue_bind(queue, exchange, "orders.*")
    for number in range(10):
        channel.basic_publish(exchange, "orders.new", b"%d" % number)  # raises if nacked
    channel.basic_publish(exchange, "other", b"unrouted")
    channel.basic_qos(prefetch_count=3)
    bodies: list[bytes] = []
    rejected = False
    for method, _, body in channel.consume(queue, inactivity_timeout=5):
        assert method is not None, f"consumed only {bodies}"
        if body == b"5" and not rejected:
            rejected = True
            channel.basic_reject(method.delivery_tag, requeue=True)
            continue
        if body == b"5":
            assert method.redelivered, "a requeued message must come back redelivered"
        if body == b"9":
            channel.basic_reject(method.delivery_tag, requeue=False)
        else:
            channel.basic_ack(method.delivery_tag)
        bodies.append(body)
        if len(bodies) == 10:
            break
    assert sorted(bodies) == [b"%d" % n for n in range(10)], bodies
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    channel.cancel()  # the last consumer of an auto-delete queue: the queue goes
    connection.close()


if __name__ == "__main__":
    main()
    sys.exit(0)
