"""Message counters of queues, channels and vhosts, named as RabbitMQ's message_stats.

Counters only ever grow. A queue or channel counts what passes through it; when it goes
(deleted, closed), its vhost adds its counts to `VirtualHost.retired_counts`, so node and
vhost totals never fall. Rates are computed elsewhere, by sampling these.

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
    # requeue (redeliver), acknowledged (ack), dead-lettered or dropped (dead_lettered).
    deliver: int = 0
    deliver_no_ack: int = 0
    get: int = 0
    get_no_ack: int = 0
    redeliver: int = 0
    ack: int = 0
    dead_lettered: int = 0

    @property
    def deliver_get(self) -> int:
        return self.deliver + self.deliver_no_ack + self.get + self.get_no_ack

    def add(self, other: MessageCounts) -> None:
        for field in _FIELDS:
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def as_dict(self) -> dict[str, int]:
        counts = {field: getattr(self, field) for field in _FIELDS}
        counts["deliver_get"] = self.deliver_get
        return counts


_FIELDS = tuple(field.name for field in attrs.fields(MessageCounts))
