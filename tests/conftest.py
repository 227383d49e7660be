"""Shared fixtures.

Integration tests talk to the broker at AMQP_URL when it is set (so the same tests run
against RabbitMQ), otherwise to one amqpd process started for the whole run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.broker_process import BrokerProcess

# No per-example deadline: on a shared machine a slow example is noise, not a bug.
# print_blob makes any failure reproducible from the CI log alone.
settings.register_profile("amqpd", deadline=None, print_blob=True)
settings.load_profile("amqpd")


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("AMQP_URL")
    if url:
        yield url
        return
    broker = BrokerProcess(tmp_path_factory.mktemp("amqpd-data")).start()
    try:
        yield broker.url
    finally:
        exit_code = broker.stop()
        assert exit_code == 0, broker.log


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh amqpd for tests that restart, signal or configure it (not started yet)."""
    broker = BrokerProcess(tmp_path / "data")
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def name() -> str:
    """A unique name for queues and exchanges, so tests never see each other's state."""
    return f"test-{uuid.uuid4().hex[:12]}"
