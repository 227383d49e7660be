"""What every exchange type shares: identity, flags, arguments and its bindings.

An exchange only routes: given a message (and the routing keys it carries, CC included),
it names destinations. It never touches queue contents. Each type is a small subclass
that indexes its bindings for `route`.

Synchronous and pure; imports amqpd.codec and broker.binding/message/policies only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from amqpd.broker.binding import Binding, BindingKey, Destination
from amqpd.broker.message import Message
from amqpd.broker.policies import Policy, exchange_alternate
from amqpd.codec.fields import FieldTable


class Exchange(Destination):
    """Base of the exchange types; subclasses implement `_index`, `_unindex`, `route`."""

    __slots__ = (
        "arguments",
        "auto_delete",
        "bindings",
        "durable",
        "internal",
        "name",
        "policy",
        "vhost",
    )
    kind: ClassVar[str] = "exchange"
    type_name: ClassVar[str]

    def __init__(
        self,
        name: str,
        vhost: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: FieldTable = arguments or {}
        self.bindings: dict[BindingKey, Binding] = {}
        self.policy: Policy | None = None  # set by the vhost
        self._init_index()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} in vhost {self.vhost!r}>"

    @property
    def alternate_exchange(self) -> str | None:
        return exchange_alternate(self.arguments, self.policy)

    def add_binding(self, binding: Binding) -> bool:
        """Add a binding; False if an identical one exists already."""
        key = binding.key
        if key in self.bindings:
            return False
        self.bindings[key] = binding
        self._index(binding)
        return True

    def remove_binding(self, key: BindingKey) -> Binding | None:
        binding = self.bindings.pop(key, None)
        if binding is not None:
            self._unindex(binding)
        return binding

    def bindings_to(self, destination: Destination) -> list[Binding]:
        return [b for b in self.bindings.values() if b.destination is destination]

    @staticmethod
    def validate_arguments(arguments: FieldTable) -> None:
        """Raise PreconditionFailed for declare arguments this type cannot work with."""

    def validate_binding(self, routing_key: str, arguments: FieldTable) -> None:
        """Raise PreconditionFailed for bindings this type cannot use (headers' x-match)."""

    def _init_index(self) -> None:
        raise NotImplementedError

    def _index(self, binding: Binding) -> None:
        raise NotImplementedError

    def _unindex(self, binding: Binding) -> None:
        raise NotImplementedError

    def route(self, message: Message, routing_keys: Iterable[str]) -> Iterable[Destination]:
        """Destinations for a message published (or CC'd) with these routing keys."""
        raise NotImplementedError


def count_in(counts: dict[Destination, int], destination: Destination) -> None:
    """Count one more binding to `destination` (a pair may be bound with several keys)."""
    counts[destination] = counts.get(destination, 0) + 1


def count_out(counts: dict[Destination, int], destination: Destination) -> None:
    remaining = counts[destination] - 1
    if remaining:
        counts[destination] = remaining
    else:
        del counts[destination]
