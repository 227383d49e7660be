"""Durable definitions as journal entries: what a restart needs to rebuild a vhost.

Durable exchanges, durable non-exclusive queues and bindings whose source and
destination are both durable are kept, as RabbitMQ keeps them. Each is one entry: a key
naming it and a value describing it, both encoded as AMQP field tables (lossless, so
arguments come back with their wire types).

Synchronous and pure; imports amqpd.codec and broker.binding only.
"""

from __future__ import annotations

from typing import Final

import attrs

from amqpd.broker.binding import arguments_key
from amqpd.codec.fields import FieldTable, decode_table, encode_table

EXCHANGE: Final = "exchange"
QUEUE: Final = "queue"
BINDING: Final = "binding"


@attrs.frozen
class ExchangeDefinition:
    vhost: str
    name: str
    type_name: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: FieldTable

    @property
    def key(self) -> bytes:
        return encode_table({"kind": EXCHANGE, "vhost": self.vhost, "name": self.name})


@attrs.frozen
class QueueDefinition:
    vhost: str
    name: str
    auto_delete: bool
    arguments: FieldTable

    @property
    def key(self) -> bytes:
        return encode_table({"kind": QUEUE, "vhost": self.vhost, "name": self.name})


@attrs.frozen
class BindingDefinition:
    vhost: str
    source: str
    destination_kind: str  # "queue" or "exchange"
    destination: str
    routing_key: str
    arguments: FieldTable

    @property
    def key(self) -> bytes:
        return encode_table(
            {
                "kind": BINDING,
                "vhost": self.vhost,
                "source": self.source,
                "destination_kind": self.destination_kind,
                "destination": self.destination,
                "routing_key": self.routing_key,
                "arguments": arguments_key(self.arguments),
            }
        )


Definition = ExchangeDefinition | QueueDefinition | BindingDefinition
_CLASSES: Final[dict[str, type[Definition]]] = {
    EXCHANGE: ExchangeDefinition,
    QUEUE: QueueDefinition,
    BINDING: BindingDefinition,
}


def encode(definition: Definition) -> bytes:
    kind = next(kind for kind, cls in _CLASSES.items() if isinstance(definition, cls))
    return encode_table({"kind": kind, **attrs.asdict(definition, recurse=False)})


def decode(value: bytes) -> Definition:
    """ValueError for an entry this version cannot read."""
    table, _ = decode_table(value, 0)
    fields = dict(table)
    kind = fields.pop("kind", None)
    cls = _CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown definition kind {kind!r}")
    try:
        return cls(**fields)  # type: ignore[arg-type]
    except TypeError as error:
        raise ValueError(f"malformed {cls.__name__}: {error}") from error
