"""The fanout exchange: a message goes to every destination bound, whatever its key.

Synchronous and pure; imports broker.exchanges.base and broker.binding only.
"""

from __future__ import annotations

from collections.abc import Iterable

from amqpd.broker.binding import Binding, Destination
from amqpd.broker.exchanges.base import Exchange, count_in, count_out
from amqpd.broker.message import Message


class FanoutExchange(Exchange):
    __slots__ = ("_destinations",)
    type_name = "fanout"

    def _init_index(self) -> None:
        self._destinations: dict[Destination, int] = {}

    def _index(self, binding: Binding) -> None:
        count_in(self._destinations, binding.destination)

    def _unindex(self, binding: Binding) -> None:
        count_out(self._destinations, binding.destination)

    def route(self, message: Message, routing_keys: Iterable[str]) -> Iterable[Destination]:
        return self._destinations.keys()
