"""Fixtures for the integration tests: a connection, a channel, a queue, and cleanup.

Every test here must pass against RabbitMQ (`AMQP_URL=amqp://guest:guest@127.0.0.1:5680/%2f`);
without AMQP_URL the same tests run against one amqpd process (see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import Cleanup, connect


@pytest.fixture
def cleanup(amqp_url: str) -> Iterator[Cleanup]:
    registry = Cleanup()
    yield registry
    if not registry.queues and not registry.exchanges:
        return
    with connect(amqp_url) as connection:
        channel = connection.channel()
        for queue in registry.queues:
            channel.queue_delete(queue)
        for exchange in registry.exchanges:
            channel.exchange_delete(exchange)


@pytest.fixture
def connection(amqp_url: str) -> Iterator[BlockingConnection]:
    conn = connect(amqp_url)
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


@pytest.fixture
def channel(connection: BlockingConnection) -> BlockingChannel:
    return connection.channel()


@pytest.fixture
def queue(channel: BlockingChannel, name: str, cleanup: Cleanup) -> str:
    """A fresh, empty, non-exclusive queue named `name`, deleted after the test."""
    channel.queue_declare(cleanup.queue(name))
    return name
