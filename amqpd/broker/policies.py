"""Policies: settings for queues and exchanges chosen by name pattern, as RabbitMQ's.

A vhost holds its policies. The one that applies to a queue or an exchange is the policy
of highest priority whose `apply_to` covers the kind and whose pattern matches the name
(a regular-expression search, unanchored, as RabbitMQ's); equal priorities go to the name
that sorts first. At most one policy applies to an entity, as in RabbitMQ, and it is
chosen again whenever the policies change.

A policy combines with the entity's own `x-` arguments by RabbitMQ's rules (its
rabbit_amqqueue_process argument table): for the limits the lower value wins, for the
rest the argument wins over the policy.

Synchronous and pure; imports attrs and amqpd.codec only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from amqpd.codec.fields import FieldTable

APPLY_TO_QUEUES: Final = "queues"
APPLY_TO_EXCHANGES: Final = "exchanges"
APPLY_TO_ALL: Final = "all"
_APPLY_TO_KIND: Final = {"queue": APPLY_TO_QUEUES, "exchange": APPLY_TO_EXCHANGES}

# Policy keys whose value combines with the argument `x-<key>` by taking the lower.
LOWER_WINS: Final = frozenset(
    {
        "message-ttl",
        "expires",
        "max-length",
        "max-length-bytes",
        "delivery-limit",
        "consumer-timeout",
    }
)
# Policy keys that apply only where the entity has no `x-<key>` argument of its own.
ARGUMENT_WINS: Final = frozenset(
    {
        "dead-letter-exchange",
        "dead-letter-routing-key",
        "overflow",
        "retry-backoff-ms",  # amqpd's retry with backoff
        "retry-backoff-max-ms",
    }
)
QUEUE_KEYS: Final = LOWER_WINS | ARGUMENT_WINS
# Exchange arguments carry no `x-` prefix; the argument wins here too.
EXCHANGE_KEYS: Final = frozenset({"alternate-exchange"})
POLICY_KEYS: Final = QUEUE_KEYS | EXCHANGE_KEYS


@attrs.frozen
class Policy:
    name: str
    pattern: re.Pattern[str]
    definition: Mapping[str, str | int]
    apply_to: str = APPLY_TO_ALL
    priority: int = 0

    def covers(self, kind: str, name: str) -> bool:
        """Whether this policy may apply to the `kind` ("queue" or "exchange") `name`."""
        if self.apply_to != APPLY_TO_ALL and self.apply_to != _APPLY_TO_KIND[kind]:
            return False
        return self.pattern.search(name) is not None


def choose(policies: Iterable[Policy], kind: str, name: str) -> Policy | None:
    """The policy that applies to an entity, or None."""
    best: Policy | None = None
    for policy in policies:
        if not policy.covers(kind, name):
            continue
        if (
            best is None
            or policy.priority > best.priority
            or (policy.priority == best.priority and policy.name < best.name)
        ):
            best = policy
    return best


def queue_arguments(arguments: FieldTable, policy: Policy | None) -> FieldTable:
    """A queue's arguments with its policy folded in: what its settings are read from."""
    if policy is None:
        return arguments
    merged = dict(arguments)
    for key, value in policy.definition.items():
        if key not in QUEUE_KEYS:
            continue
        argument = "x-" + key
        own = arguments.get(argument)
        if own is None:
            merged[argument] = value
        elif key in LOWER_WINS and isinstance(own, int) and isinstance(value, int):
            merged[argument] = min(own, value)
    return merged


def exchange_alternate(arguments: FieldTable, policy: Policy | None) -> str | None:
    """An exchange's alternate exchange: its argument, else its policy's."""
    value = arguments.get("alternate-exchange")
    if value is None and policy is not None:
        value = policy.definition.get("alternate-exchange")
    return value if isinstance(value, str) else None
