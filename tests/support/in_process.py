"""Run a Node inside the test process, on a thread with its own event loop, so that tests
can inject faults (monkeypatch) and read its log records with caplog."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.from_thread

from amqpd.config.model import Listener, Management, ServerConfig
from amqpd.node import Node
from amqpd.store import FileSystem


@contextmanager
def running_node(
    data_dir: Path,
    config: ServerConfig | None = None,
    fs: FileSystem | None = None,
    **settings: Any,
) -> Iterator[Node]:
    """A node in this process; `settings` replace ServerConfig fields (limits=...)."""
    settings.setdefault("management", Management(port=0))  # tests that want it ask
    config = config or ServerConfig(
        listeners=(Listener("127.0.0.1", 0),), data_dir=data_dir, **settings
    )
    node = Node(config, fs)
    ready = threading.Event()
    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(node.run, lambda _addresses: ready.set())
        assert ready.wait(10), "the in-process node did not become ready"
        try:
            yield node
        finally:
            portal.call(node.request_shutdown)
            future.result(timeout=15)


def url_of(node: Node) -> str:
    host, port = node.addresses[0]
    return f"amqp://guest:guest@{host}:{port}/%2f"
