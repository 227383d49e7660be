"""The integration fixtures (connection, channel, cleanup) and a fresh stream queue for the
stream tests."""

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.integration.conftest import channel, cleanup, connection
from tests.integration.helpers import Cleanup

__all__ = ["channel", "cleanup", "connection", "stream"]

STREAM = {"x-queue-type": "stream"}


@pytest.fixture
def stream(channel: BlockingChannel, name: str, cleanup: Cleanup) -> str:
    """A fresh stream queue named `name`, deleted after the test."""
    channel.queue_declare(cleanup.queue(name), durable=True, arguments=STREAM)
    return name
