"""The core flows with aio-pika (asyncio): robust connect, declare, bind, confirmed publish,
async-iterator consume with acks, reject/requeue, returns, channel errors and clean close.

Runs with the anyio pytest plugin on the asyncio backend. Expected behaviour is RabbitMQ
3.10's, checked by running these tests against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq
import anyio
import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

WAIT_S = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(amqp_url, client_properties={"connection_name": "aio"})
    try:
        yield conn
    finally:
        await conn.close()


async def ready_count(connection: aio_pika.abc.AbstractRobustConnection, queue: str) -> int:
    """message_count from a passive declare on a fresh channel (a robust channel answers a
    passive declare of a queue it knows from its cache, without asking the broker)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count
    finally:
        await channel.close()


async def take(
    queue: aio_pika.abc.AbstractQueue, count: int, *, ack: bool = True
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """The next `count` deliveries from `queue` via its async iterator, acked if `ack`."""
    messages: list[aio_pika.abc.AbstractIncomingMessage] = []
    with anyio.fail_after(WAIT_S):
        async with queue.iterator() as iterator:
            async for message in iterator:
                if ack:
                    await message.ack()
                messages.append(message)
                if len(messages) == count:
                    break
    return messages


async def test_connect_and_close_cleanly(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    assert not connection.is_closed
    channel = await connection.channel()
    assert not channel.is_closed
    await channel.close()
    assert channel.is_closed
    await connection.close()
    assert connection.is_closed


async def test_declare_bind_publish_with_confirms_and_consume(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()  # publisher confirms are on by default
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    queue = await channel.declare_queue(name, exclusive=True)
    await queue.bind(exchange, routing_key="orders.#")
    for number in range(5):
        confirmation = await exchange.publish(
            aio_pika.Message(
                str(number).encode(),
                content_type="text/plain",
                headers={"n": number, "nested": {"k": "v"}},
                message_id=f"m-{number}",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"orders.{number}",
        )
        assert isinstance(confirmation, aiormq.spec.Basic.Ack)
    messages = await take(queue, 5)
    assert [m.body for m in messages] == [str(n).encode() for n in range(5)]
    assert [m.routing_key for m in messages] == [f"orders.{n}" for n in range(5)]
    assert [m.headers for m in messages] == [{"n": n, "nested": {"k": "v"}} for n in range(5)]
    assert {m.exchange for m in messages} == {name}
    assert {m.content_type for m in messages} == {"text/plain"}
    assert [m.message_id for m in messages] == [f"m-{n}" for n in range(5)]
    assert {m.delivery_mode for m in messages} == {aio_pika.DeliveryMode.PERSISTENT}
    assert not any(m.redelivered for m in messages)
    assert await ready_count(connection, name) == 0
    await queue.unbind(exchange, routing_key="orders.#")
    await exchange.delete()


async def test_many_concurrent_confirmed_publishes(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()
    await channel.declare_queue(name, exclusive=True)
    confirmations: list[object] = []

    async def publish(number: int) -> None:
        confirmations.append(
            await channel.default_exchange.publish(
                aio_pika.Message(str(number).encode()), routing_key=name
            )
        )

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tasks:
            for number in range(200):
                tasks.start_soon(publish, number)
    assert len(confirmations) == 200
    assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirmations)
    assert await ready_count(connection, name) == 200


async def test_reject_with_requeue_redelivers(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1)
    queue = await channel.declare_queue(name, exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"again"), routing_key=name)
    await channel.default_exchange.publish(aio_pika.Message(b"next"), routing_key=name)
    seen: list[tuple[bytes, bool]] = []
    with anyio.fail_after(WAIT_S):
        async with queue.iterator() as iterator:
            async for message in iterator:
                seen.append((message.body, bool(message.redelivered)))
                if len(seen) == 1:
                    await message.reject(requeue=True)
                else:
                    await message.ack()
                if len(seen) == 3:
                    break
    assert seen == [(b"again", False), (b"again", True), (b"next", False)]


async def test_nack_without_requeue_drops(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(name, exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"dropped"), routing_key=name)
    (message,) = await take(queue, 1, ack=False)
    await message.nack(requeue=False)
    assert await queue.get(fail=False, timeout=WAIT_S) is None


async def test_message_process_context_acks_or_rejects(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(name, exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"fails once"), routing_key=name)
    message = await queue.get(timeout=WAIT_S)
    assert message.body == b"fails once"
    with pytest.raises(RuntimeError):
        async with message.process(requeue=True):
            raise RuntimeError("handler failed")
    again = await queue.get(timeout=WAIT_S)
    assert (again.body, again.redelivered) == (b"fails once", True)
    async with again.process():
        pass
    assert await queue.get(fail=False, timeout=WAIT_S) is None


async def test_get_message_count_and_empty(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(name, exclusive=True)
    for body in (b"1", b"2"):
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)
    first = await queue.get(no_ack=True, timeout=WAIT_S)
    assert (first.body, first.message_count) == (b"1", 1)
    second = await queue.get(no_ack=True, timeout=WAIT_S)
    assert (second.body, second.message_count) == (b"2", 0)
    assert await queue.get(fail=False, timeout=WAIT_S) is None
    with pytest.raises(aio_pika.exceptions.QueueEmpty):
        await queue.get(timeout=WAIT_S)


async def test_mandatory_unroutable_raises_publish_error(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel(on_return_raises=True)
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, auto_delete=True)
    with pytest.raises(aio_pika.exceptions.PublishError) as caught:
        await exchange.publish(
            aio_pika.Message(b"bounced", message_id="r-1"), routing_key="nowhere", mandatory=True
        )
    frame = caught.value.frame
    assert (frame.reply_code, frame.reply_text) == (312, "NO_ROUTE")
    await exchange.delete()


async def test_channel_error_closes_only_the_channel(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity) as caught:
        await channel.declare_queue(name, passive=True)
    assert caught.value.args[0] == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    assert not connection.is_closed
    other = await connection.channel()
    queue = await other.declare_queue(name, exclusive=True)
    await other.default_exchange.publish(aio_pika.Message(b"ok"), routing_key=name)
    (message,) = await take(queue, 1)
    assert message.body == b"ok"


async def test_qos_limits_unacked_deliveries(
    connection: aio_pika.abc.AbstractRobustConnection, name: str
) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=2)
    queue = await channel.declare_queue(name, exclusive=True)
    for number in range(5):
        await channel.default_exchange.publish(
            aio_pika.Message(str(number).encode()), routing_key=name
        )
    send, receive = anyio.create_memory_object_stream[aio_pika.abc.AbstractIncomingMessage](10)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await send.send(message)

    async with send, receive:
        tag = await queue.consume(on_message)
        with anyio.fail_after(WAIT_S):
            first = await receive.receive()
            await receive.receive()
        with anyio.move_on_after(0.3) as watch:
            extra = await receive.receive()
            pytest.fail(f"a third unacked delivery despite prefetch 2: {extra.body!r}")
        assert watch.cancelled_caught
        await first.ack()
        with anyio.fail_after(WAIT_S):
            third = await receive.receive()
        assert third.body == b"2"
        await queue.cancel(tag)
