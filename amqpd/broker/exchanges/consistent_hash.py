"""The consistent-hash exchange (`x-consistent-hash`), as RabbitMQ 3.10's plugin routes.

A binding's key is its weight: how many buckets of the ring its destination gets (an
integer string, "+3" and "007" included; anything else, zero or negative is refused with
406 as the plugin words it). A message goes to exactly one destination: the owner of the
bucket that a jump consistent hash of a value picks among all buckets. The value is the
message's routing key by default (the first one: CC and BCC are not hashed), or, with the
exchange argument `hash-header`, that header as RabbitMQ holds it (a `{Type, Value}`
tuple), or, with `hash-property`, `message_id`, `correlation_id` or `timestamp` (as its
decimal string). The two arguments exclude each other. A message without that header or
property is hashed as the atom `undefined`: all such messages go to one destination.

For the same bindings, bound in the same order, amqpd picks the same destination as
RabbitMQ: the ring is kept as the plugin keeps it.
- Buckets are numbered in binding order: a destination's first binding appends its weight
  of buckets at the end of the ring. A further binding to a destination already on the
  ring (another key) changes nothing.
- Removing any binding to a destination removes all its buckets (even if another binding
  to it remains), and the buckets after them move down to close the gap.
- The hash is erlang:phash2 and rand's exs1024 (broker.exchanges.erlang_hash).
Durable bindings come back from the definitions journal in the order they were made, which
rebuilds the same ring (RabbitMQ keeps its ring across a restart too). The one case that
differs: a destination whose buckets went with the removal of one of its two bindings is
back on the ring after a restart, through the binding that remained.

Where amqpd differs: a `hash-header` or `hash-property` that is not a string is refused
with 406 PRECONDITION_FAILED; RabbitMQ's plugin crashes on it and closes the connection
with 541 INTERNAL_ERROR.

Synchronous and pure; imports broker.exchanges.*, broker.binding, broker.message,
amqpd.codec and amqpd.errors only.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

from amqpd.broker.binding import Binding, Destination
from amqpd.broker.exchanges.base import Exchange
from amqpd.broker.exchanges.erlang_hash import (
    UNDEFINED,
    Atom,
    Term,
    jump_consistent_hash,
    phash2,
)
from amqpd.broker.message import Message
from amqpd.codec.fields import TYPE_NAMES, FieldTable, FieldValue, type_code, type_name
from amqpd.errors import PreconditionFailed, erlang_binary

CONSISTENT_HASH_TYPE_NAME: Final = "x-consistent-hash"
HASH_HEADER: Final = "hash-header"
HASH_PROPERTY: Final = "hash-property"
HASH_PROPERTIES: Final = ("correlation_id", "message_id", "timestamp")
# What Erlang's list_to_integer takes: an optional sign and decimal digits, nothing else.
_WEIGHT: Final = re.compile(r"[+-]?[0-9]+")

# RabbitMQ's atom for each wire type, as its parser tags a header value.
_TYPE_ATOMS: Final[dict[str, Atom]] = {code: Atom(name) for code, name in TYPE_NAMES.items()}


def weight_of(routing_key: str) -> int:
    """A binding key's weight; 406 (the plugin's words) unless a positive integer."""
    if not _WEIGHT.fullmatch(routing_key):
        shown = erlang_binary(routing_key.encode("utf-8", "surrogateescape"))
        raise PreconditionFailed(f"The binding key must be an integer: {shown}")
    weight = int(routing_key)
    if weight < 1:
        raise PreconditionFailed("The binding key must be greater than 0")
    return weight


def _hash_on(arguments: FieldTable) -> tuple[str, str] | None:
    """("header", name), ("property", name), or None to hash the routing key; 406 for
    arguments the plugin refuses, in its order and words."""
    for key in (HASH_HEADER, HASH_PROPERTY):
        if key in arguments and not isinstance(arguments[key], str):
            raise PreconditionFailed(
                f"invalid arg '{key}' for exchange type {CONSISTENT_HASH_TYPE_NAME}: "
                f"expected longstr, got {type_name(arguments[key])}"
            )
    header = arguments.get(HASH_HEADER)
    prop = arguments.get(HASH_PROPERTY)
    if isinstance(header, str):
        if prop is not None:
            raise PreconditionFailed("hash-header and hash-property are mutually exclusive")
        return ("header", header)
    if isinstance(prop, str):
        if prop not in HASH_PROPERTIES:
            raise PreconditionFailed(f"Unsupported property: {prop}")
        return ("property", prop)
    return None


def erlang_field(value: FieldValue) -> tuple[Atom, Term]:
    """A field value as RabbitMQ holds it after parsing: `{Type, Value}`."""
    code = type_code(value)
    return (_TYPE_ATOMS[code], _erlang_payload(code, value))


def _erlang_payload(code: str, value: FieldValue) -> Term:
    if code == "S":
        assert isinstance(value, str)
        return value.encode("utf-8", "surrogateescape")
    if code == "x":
        assert isinstance(value, (bytes, bytearray))
        return bytes(value)
    if code == "t":
        return Atom("true") if value else Atom("false")
    if code == "V":
        return UNDEFINED
    if code == "D":
        assert isinstance(value, Decimal)
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        scale = -exponent
        if scale < 0:  # as the codec encodes it: a positive exponent folded into digits
            unscaled *= 10**-scale
            scale = 0
        # RabbitMQ's parser reads the digits as an unsigned 32-bit integer.
        return (scale, unscaled & 0xFFFFFFFF)
    if code == "F":
        assert isinstance(value, dict)
        return [
            (key.encode("utf-8", "surrogateescape"), *erlang_field(item))
            for key, item in value.items()
        ]
    if code == "A":
        assert isinstance(value, list)
        return [erlang_field(item) for item in value]
    if code in "fd":
        assert isinstance(value, float)
        return float(value)
    assert isinstance(value, int)
    return int(value)


class ConsistentHashExchange(Exchange):
    __slots__ = ("_ends", "_hash_on", "_ring")
    type_name = CONSISTENT_HASH_TYPE_NAME

    @staticmethod
    def validate_arguments(arguments: FieldTable) -> None:
        _hash_on(arguments)

    def _init_index(self) -> None:
        self._hash_on = _hash_on(self.arguments)
        # The ring: destinations in bucket order, each with its weight; `_ends[i]` is one
        # past the last bucket of `_ring[i]`.
        self._ring: list[tuple[Destination, int]] = []
        self._ends: list[int] = []

    def validate_binding(self, routing_key: str, arguments: FieldTable) -> None:
        weight_of(routing_key)

    @property
    def ring(self) -> list[tuple[Destination, int]]:
        """Destinations in bucket order, with their number of buckets."""
        return list(self._ring)

    def _index(self, binding: Binding) -> None:
        destination = binding.destination
        if any(owner is destination for owner, _ in self._ring):
            return
        weight = weight_of(binding.routing_key)
        self._ring.append((destination, weight))
        self._ends.append((self._ends[-1] if self._ends else 0) + weight)

    def _unindex(self, binding: Binding) -> None:
        ring = [entry for entry in self._ring if entry[0] is not binding.destination]
        if len(ring) == len(self._ring):
            return
        self._ring = ring
        total = 0
        self._ends = []
        for _, weight in ring:
            total += weight
            self._ends.append(total)

    def route(self, message: Message, routing_keys: Iterable[str]) -> Iterable[Destination]:
        ends = self._ends
        if not ends:
            return ()
        buckets = ends[-1]
        if buckets == 1:
            return (self._ring[0][0],)
        key = self._value_to_hash(message, routing_keys)
        bucket = jump_consistent_hash(phash2(key), buckets)
        return (self._ring[bisect.bisect_right(ends, bucket)][0],)

    def _value_to_hash(self, message: Message, routing_keys: Iterable[str]) -> Term:
        hash_on = self._hash_on
        if hash_on is None:
            first = next(iter(routing_keys), message.routing_key)
            return first.encode("utf-8", "surrogateescape")
        kind, name = hash_on
        if kind == "header":
            headers = message.headers
            return erlang_field(headers[name]) if name in headers else UNDEFINED
        properties = message.properties
        if name == "timestamp":
            timestamp = properties.timestamp
            return UNDEFINED if timestamp is None else str(timestamp).encode()
        value = properties.message_id if name == "message_id" else properties.correlation_id
        return UNDEFINED if value is None else value.encode("utf-8", "surrogateescape")
