"""The broker's domain root: its virtual hosts and the services they share.

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from amqpd.broker.definitions import Definition
from amqpd.broker.policies import Policy
from amqpd.broker.ports import MessageLog
from amqpd.broker.vhost import BrokerServices, VirtualHost


class Broker:
    def __init__(self, vhost_names: Iterable[str], services: BrokerServices | None = None) -> None:
        self.services = services or BrokerServices()
        self.vhosts: dict[str, VirtualHost] = {
            name: VirtualHost(name, self.services) for name in vhost_names
        }

    def vhost(self, name: str) -> VirtualHost | None:
        return self.vhosts.get(name)

    def add_vhost(self, name: str) -> VirtualHost:
        """A vhost named by a reloaded config (the one there already, if any)."""
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(name, self.services)
        return vhost

    def set_policies(self, policies: Mapping[str, Iterable[Policy]]) -> None:
        """Each vhost's policies (a vhost not named has none)."""
        for name, vhost in self.vhosts.items():
            vhost.set_policies(policies.get(name, ()))

    def restore(
        self,
        definitions: Iterable[Definition],
        recovered_log: Callable[[str], Sequence[MessageLog] | None],
    ) -> list[str]:
        """Rebuild every vhost's durable entities; returns what could not be restored."""
        by_vhost: dict[str, list[Definition]] = {}
        skipped: list[str] = []
        for definition in definitions:
            if definition.vhost in self.vhosts:
                by_vhost.setdefault(definition.vhost, []).append(definition)
            else:
                skipped.append(f"{definition!r}: vhost '{definition.vhost}' is not configured")
        for name, entries in by_vhost.items():
            skipped += self.vhosts[name].restore(entries, recovered_log)
        return skipped

    def durability_advanced(self) -> None:
        """The store made more of what was written durable: release confirms and replies."""
        self.services.durability.advanced()

    def storage_lost(self, log: MessageLog, start: int, end: int) -> None:
        """Writes of offsets [start, end) to `log` failed: queues and publishers adjust."""
        for vhost in self.vhosts.values():
            for queue in vhost.queues.values():
                queue.storage_lost(log, start, end)
        self.services.durability.lost(log, start, end)
