"""Bindings: an edge from a source exchange to a destination (a queue or an exchange).

RabbitMQ tells bindings apart by source, destination, routing key and arguments, so the
same pair may be bound several times with different keys or arguments. `Binding.key` is
that identity, hashable (arguments are encoded with sorted keys).

Synchronous and pure; imports attrs and amqpd.codec only.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from amqpd.codec.fields import FieldTable, encode_table


class Destination:
    """Something a binding can point at: a queue or an exchange (identity-compared)."""

    __slots__ = ()
    kind: ClassVar[str]  # "queue" or "exchange", as RabbitMQ names destination types
    name: str


BindingKey = tuple[Destination, str, bytes]


def arguments_key(arguments: FieldTable) -> bytes:
    return encode_table(dict(sorted(arguments.items()))) if arguments else b""


@attrs.frozen(eq=False)
class Binding:
    source: str
    destination: Destination
    routing_key: str
    arguments: FieldTable = attrs.field(factory=dict)

    @property
    def key(self) -> BindingKey:
        return (self.destination, self.routing_key, arguments_key(self.arguments))
