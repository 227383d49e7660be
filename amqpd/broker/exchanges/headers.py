"""The headers exchange: routing on message headers against binding arguments.

`x-match` picks the rule: `all` (the default) needs every binding argument to match,
`any` needs one; both ignore arguments whose names start with `x-`. `all-with-x` and
`any-with-x` take those into account too (only `x-match` itself is never compared).
A binding argument with no value (void) matches any value of a header of that name.
Values match when their type classes and values are equal (any integer width alike; a
string "1" never matches the integer 1), as RabbitMQ compares them.

Synchronous and pure; imports amqpd.codec, amqpd.errors and broker.* only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from amqpd.broker.binding import Binding, Destination
from amqpd.broker.exchanges.base import Exchange
from amqpd.broker.message import Message
from amqpd.codec.fields import FieldTable, FieldValue, type_name, values_equal
from amqpd.errors import PreconditionFailed, erlang_binary

X_MATCH_MODES: Final = ("all", "any", "all-with-x", "any-with-x")


def _match_spec(arguments: FieldTable) -> tuple[bool, list[tuple[str, FieldValue]]]:
    mode = arguments.get("x-match", "all")
    with_x = mode in ("all-with-x", "any-with-x")
    wanted = [
        (key, value)
        for key, value in arguments.items()
        if key != "x-match" and (with_x or not key.startswith("x-"))
    ]
    return mode in ("all", "all-with-x"), wanted


def headers_match(arguments: FieldTable, headers: FieldTable) -> bool:
    match_all, wanted = _match_spec(arguments)
    for key, expected in wanted:
        matched = key in headers and (expected is None or values_equal(expected, headers[key]))
        if matched and not match_all:
            return True
        if not matched and match_all:
            return False
    return match_all


class HeadersExchange(Exchange):
    __slots__ = ("_bindings",)
    type_name = "headers"

    def _init_index(self) -> None:
        self._bindings: list[Binding] = []

    def validate_binding(self, routing_key: str, arguments: FieldTable) -> None:
        mode = arguments.get("x-match", "all")
        if not isinstance(mode, str):
            shown = mode.decode("utf-8", "replace") if isinstance(mode, bytes) else str(mode)
            raise PreconditionFailed(
                f"Invalid x-match field type {type_name(mode)} (value {shown}); expected longstr"
            )
        if mode not in X_MATCH_MODES:
            raise PreconditionFailed(
                f"Invalid x-match field value {erlang_binary(mode.encode())}; expected all, "
                "any, all-with-x, or any-with-x"
            )

    def _index(self, binding: Binding) -> None:
        self._bindings.append(binding)

    def _unindex(self, binding: Binding) -> None:
        self._bindings.remove(binding)

    def route(self, message: Message, routing_keys: Iterable[str]) -> Iterable[Destination]:
        headers = message.headers
        found: dict[Destination, None] = {}
        for binding in self._bindings:
            if binding.destination not in found and headers_match(binding.arguments, headers):
                found[binding.destination] = None
        return found.keys()
