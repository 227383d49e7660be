"""Differential scenarios, by group. A scenario is a function of a pika channel factory
and a Transcript; it drives the broker as a user would and records what it sees. The same
function runs against amqpd and against RabbitMQ, and the transcripts must be equal.

Scenarios wait on the broker's own clock (expiry) by polling with a deadline, never by
sleeping a fixed time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interop.transcript import Transcript

Scenario = Callable[["Session", Transcript], None]
SCENARIOS: dict[str, tuple[str, Scenario]] = {}  # name -> (group, function)


def scenario(group: str) -> Callable[[Scenario], Scenario]:
    def register(function: Scenario) -> Scenario:
        SCENARIOS[function.__name__] = (group, function)
        return function

    return register


class Session:
    """Connections to one broker for one scenario; closed afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connections: list[Any] = []

    def channel(self, confirm: bool = False) -> Any:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.connections.append(connection)
        channel = connection.channel()
        if confirm:
            channel.confirm_delivery()
        return channel

    def close(self) -> None:
        for connection in self.connections:
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # a broker that closed it first is fine
                pass


def load_all() -> None:
    """Import every scenario module (each registers its scenarios)."""
    from interop.scenarios import basics, consistent_hash, delivery, streams  # noqa: F401
