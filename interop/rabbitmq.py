"""A RabbitMQ to compare with: the one named by INTEROP_RABBITMQ_URL, or Debian's
rabbitmq-server (installed with apt-get if missing), started on a free port for the run
and stopped afterwards, with the plugins the scenarios use (PLUGINS) enabled offline in a
plugins file of its own (a given RabbitMQ must have them enabled already)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pika.exceptions

from interop.system import ensure_debian_package, free_port

START_TIMEOUT_S = 120.0
# Plugins the scenarios need; the x-consistent-hash exchange is one.
PLUGINS = ("rabbitmq_consistent_hash_exchange",)


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


def enable_plugins(directory: str, environment: dict[str, str]) -> None:
    """Enable PLUGINS offline in a plugins file in `directory` that the node started with
    `environment` reads (the node runs as the rabbitmq user: the file must be readable)."""
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "enabled_plugins")
    environment["RABBITMQ_ENABLED_PLUGINS_FILE"] = path
    subprocess.run(
        ["rabbitmq-plugins", "enable", "--offline", *PLUGINS],
        env=environment,
        check=True,
        capture_output=True,
    )
    os.chmod(path, 0o644)


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
    with tempfile.TemporaryDirectory(prefix="interop-rabbitmq-") as plugins:
        enable_plugins(plugins, environment)
        subprocess.run(["rabbitmq-server", "-detached"], env=environment, check=True)
        url = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
        try:
            wait_until_serving(url, START_TIMEOUT_S)
            yield url
        finally:
            subprocess.run(["rabbitmqctl", "stop"], check=False, capture_output=True)
