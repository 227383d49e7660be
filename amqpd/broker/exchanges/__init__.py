"""Exchange types by name, as `exchange.declare` names them."""

from __future__ import annotations

from typing import Final

from amqpd.broker.exchanges.base import Exchange
from amqpd.broker.exchanges.consistent_hash import ConsistentHashExchange
from amqpd.broker.exchanges.delayed import DelayedExchange
from amqpd.broker.exchanges.direct import DirectExchange
from amqpd.broker.exchanges.fanout import FanoutExchange
from amqpd.broker.exchanges.headers import HeadersExchange
from amqpd.broker.exchanges.topic import TopicExchange

EXCHANGE_TYPES: Final[dict[str, type[Exchange]]] = {
    cls.type_name: cls
    for cls in (
        DirectExchange,
        FanoutExchange,
        TopicExchange,
        HeadersExchange,
        DelayedExchange,
        ConsistentHashExchange,
    )
}

__all__ = [
    "EXCHANGE_TYPES",
    "ConsistentHashExchange",
    "DelayedExchange",
    "DirectExchange",
    "Exchange",
    "FanoutExchange",
    "HeadersExchange",
    "TopicExchange",
]
