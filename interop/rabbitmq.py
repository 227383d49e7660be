"""A RabbitMQ to compare with: the one named by INTEROP_RABBITMQ_URL, or Debian's
rabbitmq-server (installed with apt-get if missing), started on a free port for the run
and stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pika.exceptions

from interop.system import ensure_debian_package, free_port

START_TIMEOUT_S = 120.0


def install() -> None:
    if ensure_debian_package("rabbitmq-server", "rabbitmq-server"):
        # The package starts a node on 5672 where it can: stop it, the run starts its own.
        subprocess.run(["rabbitmqctl", "stop"], check=False, capture_output=True)


def wait_until_serving(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pika.BlockingConnection(pika.URLParameters(url)).close()
            return
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ did not accept connections on {url}") from None
            time.sleep(0.5)


@contextmanager
def rabbitmq() -> Iterator[str]:
    """The URL of a RabbitMQ that serves for the duration."""
    given = os.environ.get("INTEROP_RABBITMQ_URL")
    if given:
        yield given
        return
    install()
    port = free_port()
    environment = {
        **os.environ,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
    }
    status = subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, check=False)
    if status.returncode == 0:
        raise RuntimeError(
            "a RabbitMQ node is already running here: set INTEROP_RABBITMQ_URL to its URL"
        )
    subprocess.run(["rabbitmq-server", "-detached"], env=environment, check=True)
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
    try:
        wait_until_serving(url, START_TIMEOUT_S)
        yield url
    finally:
        subprocess.run(["rabbitmqctl", "stop"], check=False, capture_output=True)
