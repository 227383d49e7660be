"""A client connection as the broker sees it: who, which vhost, its channels and the
exclusive queues it owns (deleted when it goes).

Synchronous and pure; imports broker.* only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amqpd.broker.access import Access

if TYPE_CHECKING:
    from amqpd.broker.channel import Channel
    from amqpd.broker.queue import Queue
    from amqpd.broker.vhost import VirtualHost


class Connection:
    """Identity for exclusive queues is this object itself. `access` is what the user may
    do in the vhost; a reload replaces it, and the next method is checked against it."""

    def __init__(
        self,
        name: str,
        username: str,
        vhost: VirtualHost,
        *,
        consumer_cancel_notify: bool,
        access: Access | None = None,
    ) -> None:
        self.name = name
        self.username = username
        self.vhost = vhost
        self.access = access if access is not None else Access.full(username, vhost.name)
        self.consumer_cancel_notify = consumer_cancel_notify
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: dict[str, Queue] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"<Connection {self.name!r} user {self.username!r} vhost {self.vhost.name!r}>"

    def close(self) -> None:
        """Every channel ends (requeueing its unacked messages); exclusive queues go."""
        if self.closed:
            return
        self.closed = True
        channels = list(self.channels.values())
        # Nothing requeued by one channel may go to another channel of this connection.
        for channel in channels:
            channel.stop_deliveries()
        for channel in channels:
            channel.close()
        self.channels.clear()
        for queue in list(self.exclusive_queues.values()):
            if not queue.deleted:
                self.vhost.delete_queue(queue)
        self.exclusive_queues.clear()
