"""Dead-lettering: the message a queue hands to its dead-letter exchange, as RabbitMQ
writes it, and RabbitMQ's rule for dropping dead-letter cycles.

The dead-lettered message goes to the dead-letter exchange with the queue's dead-letter
routing key if one is set (CC is then dropped), else with its own routing keys; its
`expiration` is removed (kept as `original-expiration` in the death record). `x-death` is
an array, most recent first, with one table per (queue, reason): a repeat increments that
table's 64-bit `count` and moves it to the front, keeping its first `time`, `exchange` and
`routing-keys`. The first death also sets `x-first-death-{queue,reason,exchange}`; every
death sets `x-last-death-{queue,reason,exchange}` (RabbitMQ 3.13 and later).

Synchronous and pure; imports amqpd.codec and broker.message only.
"""

from __future__ import annotations

from typing import Final

import attrs

from amqpd.broker.message import Message
from amqpd.codec.fields import FieldTable, FieldValue, Timestamp
from amqpd.codec.properties import encode_content_header

REASON_REJECTED: Final = "rejected"
REASON_EXPIRED: Final = "expired"
REASON_MAXLEN: Final = "maxlen"
REASON_DELIVERY_LIMIT: Final = "delivery_limit"


def _strings(value: FieldValue) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def dead_lettered(
    message: Message,
    queue_name: str,
    reason: str,
    now_ms: int,
    exchange: str,
    routing_key: str | None,
) -> Message:
    """The message as `queue_name` dead-letters it to `exchange` for `reason`."""
    properties = message.properties
    headers: FieldTable = dict(properties.headers or {})
    death_keys = [message.routing_key, *_strings(headers.get("CC"))]
    info: FieldTable = {
        "reason": reason,
        "queue": queue_name,
        "time": Timestamp(now_ms // 1000),
        "exchange": message.exchange,
        "routing-keys": list[FieldValue](death_keys),
    }
    if properties.expiration is not None:
        info["original-expiration"] = properties.expiration
    deaths = _tables(headers.get("x-death"))
    if not deaths:
        headers["x-first-death-reason"] = reason
        headers["x-first-death-queue"] = queue_name
        headers["x-first-death-exchange"] = message.exchange
    for index, death in enumerate(deaths):
        if death.get("queue") == queue_name and death.get("reason") == reason:
            previous = deaths.pop(index)
            count = previous.get("count")
            entry = dict(previous)
            entry["count"] = (count if isinstance(count, int) else 0) + 1
            break
    else:
        entry = {"count": 1, **info}
    deaths.insert(0, dict(sorted(entry.items())))
    headers["x-death"] = list[FieldValue](deaths)
    headers["x-last-death-reason"] = reason
    headers["x-last-death-queue"] = queue_name
    headers["x-last-death-exchange"] = message.exchange
    if routing_key is not None:
        headers.pop("CC", None)
    rewritten = attrs.evolve(properties, headers=headers, expiration=None)
    return Message(
        exchange,
        routing_key if routing_key is not None else message.routing_key,
        encode_content_header(len(message.body), rewritten),
        message.body,
    )


def _tables(value: FieldValue) -> list[FieldTable]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def is_cycle(message: Message, queue_name: str) -> bool:
    """Whether dead-lettering `message` (already carrying its newest death) into
    `queue_name` closes a cycle in which nothing was rejected: such a copy is dropped."""
    deaths = _tables(message.headers.get("x-death"))
    for index, death in enumerate(deaths):
        if death.get("queue") == queue_name:
            return all(d.get("reason") != REASON_REJECTED for d in deaths[: index + 1])
    return False
