"""kombu on its own, as libraries built on it use it: a Producer with publisher confirms
(`confirm_publish`), a Consumer with prefetch that acks, requeues and rejects."""

from __future__ import annotations

import os
from typing import Any

from kombu import Connection, Consumer, Exchange, Producer, Queue

COUNT = 10


def main() -> None:
    url, prefix = os.environ["AMQP_URL"], os.environ["RUN_PREFIX"]
    exchange = Exchange(f"{prefix}.x", "topic", durable=False, auto_delete=True)
    queue = Queue(f"{prefix}.q", exchange, routing_key="jobs.#", auto_delete=True)
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        channel = connection.channel()
        queue(channel).declare()
        producer = Producer(channel, exchange)
        for number in range(COUNT):
            producer.publish({"n": number}, routing_key="jobs.new", serializer="json")
        seen: list[int] = []
        requeued = False

        def on_message(body: Any, message: Any) -> None:
            nonlocal requeued
            number = body["n"]
            if number == 2 and not requeued:
                requeued = True
                message.requeue()
                return
            if number == 2:
                assert message.delivery_info["redelivered"], "requeued without redelivered"
            if number == 7:
                message.reject()
            else:
                message.ack()
            seen.append(number)

        with Consumer(channel, [queue], callbacks=[on_message], prefetch_count=3):
            while len(seen) < COUNT:
                try:
                    connection.drain_events(timeout=10)
                except TimeoutError:
                    raise AssertionError(f"consumed only {seen}") from None
            # (checked while consuming: the last consumer leaving deletes the queue)
            assert queue(channel).queue_declare(passive=True).message_count == 0
        assert sorted(seen) == list(range(COUNT)), seen


if __name__ == "__main__":
    main()
