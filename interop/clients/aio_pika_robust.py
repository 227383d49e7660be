"""aio-pika's robust connection and channel across a broker restart: durable state and
persistent messages are there afterwards, and the same objects go on working.

Prints RESTART when the runner should restart the broker, then waits to be reconnected.
"""

from __future__ import annotations

import asyncio
import os

import aio_pika

COUNT = 5
WAIT_S = 30.0


async def main() -> None:
    url, prefix = os.environ["AMQP_URL"], os.environ["RUN_PREFIX"]
    connection = await aio_pika.connect_robust(url, reconnect_interval=0.2)
    reconnected = asyncio.Event()
    connection.reconnect_callbacks.add(lambda *_: reconnected.set())
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(f"{prefix}.x", "direct", durable=True)
    queue = await channel.declare_queue(f"{prefix}.q", durable=True)
    await queue.bind(exchange, "key")
    for number in range(COUNT):
        message = aio_pika.Message(
            b"before-%d" % number, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await exchange.publish(message, "key")  # confirmed
    print("RESTART", flush=True)
    await asyncio.wait_for(reconnected.wait(), WAIT_S)
    for number in range(COUNT):
        message = aio_pika.Message(
            b"after-%d" % number, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await exchange.publish(message, "key")
    bodies: list[bytes] = []
    rejected = False
    async with queue.iterator() as messages:
        async for message in messages:
            if message.body == b"before-0" and not rejected:
                rejected = True
                await message.reject(requeue=True)
                continue
            await message.ack()
            bodies.append(message.body)
            if len(bodies) == 2 * COUNT:
                break
    expected = sorted(
        [b"before-%d" % n for n in range(COUNT)] + [b"after-%d" % n for n in range(COUNT)]
    )
    assert sorted(bodies) == expected, bodies
    await queue.delete()
    await exchange.delete()
    await connection.close()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 60))
