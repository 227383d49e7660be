"""The broker's domain root: its virtual hosts.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

from collections.abc import Iterable

from amqpd.broker.vhost import VirtualHost


class Broker:
    def __init__(self, vhost_names: Iterable[str]) -> None:
        self.vhosts: dict[str, VirtualHost] = {name: VirtualHost(name) for name in vhost_names}

    def vhost(self, name: str) -> VirtualHost | None:
        return self.vhosts.get(name)
