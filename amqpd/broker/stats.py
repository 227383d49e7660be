"""Message counters of queues, channels and vhosts, named as RabbitMQ's message_stats.

Counters only ever grow. A queue or channel counts what passes through it; when it goes
(deleted, closed), its vhost adds its counts to `VirtualHost.retired_queue_counts` or
`retired_channel_counts`, so node and vhost totals never fall. Rates are computed
elsewhere, by sampling these.

Synchronous and pure; imports attrs only.
"""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class MessageCounts:
    # Channels: basic.publish received; confirms sent; mandatory messages returned.
    publish: int = 0
    confirm: int = 0
    return_unroutable: int = 0
    # Queues: messages enqueued (publish), handed to consumers (deliver with acks,
    # deliver_no_ack), fetched by basic.get (get, get_no_ack), delivered again after a
    # requeue (redeliver), acknowledged (ack), copied to a dead-letter exchange
    # (dead_lettered).
    deliver: int = 0
    deliver_no_ack: int = 0
    get: int = 0
    get_no_ack: int = 0
    redeliver: int = 0
    ack: int = 0
    dead_lettered: int = 0
    # The same deaths by reason (RabbitMQ's x-death reasons), and the messages that died
    # on a queue without a dead-letter exchange (dropped), by reason.
    dead_lettered_rejected: int = 0
    dead_lettered_expired: int = 0
    dead_lettered_maxlen: int = 0
    dead_lettered_delivery_limit: int = 0
    dropped_rejected: int = 0
    dropped_expired: int = 0
    dropped_maxlen: int = 0
    dropped_delivery_limit: int = 0

    @property
    def deliver_get(self) -> int:
        return self.deliver + self.deliver_no_ack + self.get + self.get_no_ack

    def count_death(self, reason: str, dead_lettered: bool) -> None:
        """A message died for `reason` (rejected, expired, maxlen, delivery_limit): copied
        to a dead-letter exchange, or dropped when the queue has none."""
        if dead_lettered:
            self.dead_lettered += 1
            name = "dead_lettered_" + reason
        else:
            name = "dropped_" + reason
        if name in _DEATHS:
            setattr(self, name, getattr(self, name) + 1)

    def add(self, other: MessageCounts) -> None:
        for field in _FIELDS:
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def as_dict(self) -> dict[str, int]:
        counts = {field: getattr(self, field) for field in _FIELDS}
        counts["deliver_get"] = self.deliver_get
        return counts


_FIELDS = tuple(field.name for field in attrs.fields(MessageCounts))
_DEATHS = frozenset(name for name in _FIELDS if name.startswith(("dead_lettered_", "dropped_")))
