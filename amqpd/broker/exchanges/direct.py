"""The direct exchange: a message goes to every binding whose key equals a routing key.

Synchronous and pure; imports broker.exchanges.base and broker.binding only.
"""

from __future__ import annotations

from collections.abc import Iterable

from amqpd.broker.binding import Binding, Destination
from amqpd.broker.exchanges.base import Exchange, count_in, count_out
from amqpd.broker.message import Message


class DirectExchange(Exchange):
    __slots__ = ("_by_key",)
    type_name = "direct"

    def _init_index(self) -> None:
        self._by_key: dict[str, dict[Destination, int]] = {}

    def _index(self, binding: Binding) -> None:
        count_in(self._by_key.setdefault(binding.routing_key, {}), binding.destination)

    def _unindex(self, binding: Binding) -> None:
        destinations = self._by_key[binding.routing_key]
        count_out(destinations, binding.destination)
        if not destinations:
            del self._by_key[binding.routing_key]

    def route(self, message: Message, routing_keys: Iterable[str]) -> Iterable[Destination]:
        by_key = self._by_key
        for routing_key in routing_keys:
            destinations = by_key.get(routing_key)
            if destinations:
                yield from destinations
