"""The delayed-message exchange (`x-delayed-message`), as RabbitMQ's plugin declares it.

Declared with `x-delayed-type` naming the type that routes (direct, fanout, topic,
headers); bindings and routing are that type's. A message carrying a delay is held by the
exchange (broker.delayed) and routed when its time comes, through the bindings that exist
then; a message without one routes at once. The delay is read from the headers:
- `x-deliver-at-ms`: the epoch milliseconds to route at (amqpd's own; it wins over x-delay);
- `x-delay`: milliseconds from now, as the plugin reads it (an integer, a numeric string or
  a float, truncated).
Zero, negative or past times mean no delay. A value that is not a number, or a delay over
the configured maximum, is refused with 406 PRECONDITION_FAILED rather than routed at once
(the plugin routes those without a delay, a surprise nobody asks for). When released, a
message's x-delay is set to minus its delay, as the plugin does, so that it is not delayed
again and its consumers can tell where it has been.

Synchronous and pure; imports broker.exchanges.*, broker.binding, broker.message,
amqpd.codec and amqpd.errors only.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from amqpd.broker.binding import Binding, Destination
from amqpd.broker.exchanges.base import Exchange
from amqpd.broker.exchanges.direct import DirectExchange
from amqpd.broker.exchanges.fanout import FanoutExchange
from amqpd.broker.exchanges.headers import HeadersExchange
from amqpd.broker.exchanges.topic import TopicExchange
from amqpd.broker.message import Message
from amqpd.codec.fields import FieldTable, LongInt, type_name
from amqpd.codec.properties import FLAG_HEADERS
from amqpd.errors import PreconditionFailed

if TYPE_CHECKING:
    from amqpd.broker.delayed import DelayedMessages

DELAYED_TYPE_NAME: Final = "x-delayed-message"
DELAY_HEADER: Final = "x-delay"
DELIVER_AT_HEADER: Final = "x-deliver-at-ms"
# The keys as they appear inside an encoded header table (shortstr: length, bytes): a
# message whose header holds neither is not looked at further.
_DELAY_KEY: Final = b"\x07x-delay"
_DELIVER_AT_KEY: Final = b"\x0fx-deliver-at-ms"
ROUTING_TYPES: Final[dict[str, type[Exchange]]] = {
    cls.type_name: cls for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange)
}
_SIGNED_32_MIN: Final = -(1 << 31)


def _delay_type_of(arguments: FieldTable) -> type[Exchange]:
    value = arguments.get("x-delayed-type")
    routing = ROUTING_TYPES.get(value) if isinstance(value, str) else None
    if routing is None:
        raise PreconditionFailed(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type "
            f"({', '.join(ROUTING_TYPES)}); got {value!r}"
        )
    return routing


class DelayedExchange(Exchange):
    __slots__ = ("_routing", "pending")
    type_name = DELAYED_TYPE_NAME

    @staticmethod
    def validate_arguments(arguments: FieldTable) -> None:
        _delay_type_of(arguments)

    def _init_index(self) -> None:
        # The exchange of the underlying type that indexes the bindings and routes.
        self._routing = _delay_type_of(self.arguments)(self.name, self.vhost)
        # Set by the vhost: where the messages waiting for their time are.
        self.pending: DelayedMessages | None = None

    @property
    def delayed_type(self) -> str:
        return self._routing.type_name

    def validate_binding(self, routing_key: str, arguments: FieldTable) -> None:
        self._routing.validate_binding(routing_key, arguments)

    def _index(self, binding: Binding) -> None:
        self._routing._index(binding)

    def _unindex(self, binding: Binding) -> None:
        self._routing._unindex(binding)

    def route(self, message: Message, routing_keys: Iterable[str]) -> Iterable[Destination]:
        return self._routing.route(message, routing_keys)


def release_at_ms(message: Message, now_ms: int, delay_ms_max: int) -> int | None:
    """When a message published now is to be routed (None: at once)."""
    if not message.flags & FLAG_HEADERS:
        return None
    header = message.header
    if _DELIVER_AT_KEY not in header and _DELAY_KEY not in header:
        return None
    headers = message.headers
    if DELIVER_AT_HEADER in headers:
        at = headers[DELIVER_AT_HEADER]
        if isinstance(at, bool) or not isinstance(at, int):
            raise PreconditionFailed(
                f"header '{DELIVER_AT_HEADER}' must be an integer (epoch milliseconds), "
                f"not {type_name(at)}"
            )
        release_ms: int = at
    elif DELAY_HEADER in headers:
        release_ms = now_ms + _delay_ms(headers[DELAY_HEADER])
    else:
        return None
    if release_ms <= now_ms:
        return None
    if release_ms - now_ms > delay_ms_max:
        raise PreconditionFailed(
            f"delay of {release_ms - now_ms} ms is over the maximum of {delay_ms_max} ms"
        )
    return release_ms


def _delay_ms(value: object) -> int:
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, (float, Decimal)):
        if value == value and abs(value) != float("inf"):  # not NaN, not infinite
            return int(value)
    elif isinstance(value, (str, bytes)):
        try:
            return int(value)
        except ValueError:
            pass
    raise PreconditionFailed(
        f"header '{DELAY_HEADER}' must be a number of milliseconds, not {value!r}"
    )


def released(message: Message) -> Message:
    """The message as it is routed when its time comes: a positive x-delay negated."""
    if not message.flags & FLAG_HEADERS or _DELAY_KEY not in message.header:
        return message
    headers = message.headers
    try:
        delay = _delay_ms(headers.get(DELAY_HEADER))
    except PreconditionFailed:
        return message
    if delay <= 0:
        return message
    negated = LongInt(-delay) if -delay >= _SIGNED_32_MIN else -delay
    return message.with_headers({**headers, DELAY_HEADER: negated})
