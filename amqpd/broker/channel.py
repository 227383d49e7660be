"""A channel's broker-side state: publishing, consumers, delivery tags, acks, QoS, confirms, tx.

Delivery tags are per channel and count up from 1. Every delivery that needs an ack is
kept by tag until it is acked, nacked or rejected, or the channel closes, which requeues
it. `basic.qos` follows RabbitMQ's reading of `global`: false sets the limit for each
consumer created afterwards, true sets one limit shared by the whole channel; both apply
at once. In a transaction, publishes and acknowledgements wait for `tx.commit`.

Synchronous and pure; imports amqpd.codec, amqpd.errors and broker.* only.
"""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING, Final

from amqpd.broker.access import CONFIGURE, READ, WRITE
from amqpd.broker.arguments import validate_consumer_arguments
from amqpd.broker.consumer import Consumer
from amqpd.broker.durability import all_durable, any_lost
from amqpd.broker.exchanges import DelayedExchange, Exchange
from amqpd.broker.exchanges.delayed import release_at_ms
from amqpd.broker.message import Message
from amqpd.broker.ports import ChannelSink, MessageLog
from amqpd.broker.queue import Durability, Queue, QueueEntry
from amqpd.broker.readers import parse_offset_spec
from amqpd.broker.stats import MessageCounts
from amqpd.broker.stream import ConsumerGroup, StreamQueue
from amqpd.broker.vhost import (
    DEFAULT_EXCHANGE,
    VirtualHost,
    default_exchange_refused,
    server_generated_name,
)
from amqpd.codec.fields import FieldTable, FieldValue
from amqpd.codec.properties import FLAG_EXPIRATION, FLAG_USER_ID
from amqpd.errors import (
    NO_ROUTE,
    AccessRefused,
    FeatureNotImplemented,
    NotAllowed,
    NotFound,
    PreconditionFailed,
)

if TYPE_CHECKING:
    from amqpd.broker.connection import Connection

_INTEGER_PREFIX: Final = re.compile(r"([+-]?[0-9]+)(.*)", re.DOTALL)

_ACK: Final = 0
_REQUEUE: Final = 1
_DISCARD: Final = 2
_RETRY: Final = 3  # requeue as a consumer's nack or reject: retry delays apply


def check_expiration(expiration: str | None) -> None:
    """406 unless the expiration property is a non-negative integer of milliseconds
    (reasons as RabbitMQ words them)."""
    if expiration is None:
        return
    match = _INTEGER_PREFIX.fullmatch(expiration)
    if match is None:
        reason = "no_integer"
    elif match.group(2):
        reason = f'{{leftover_string,"{match.group(2)}"}}'
    elif int(match.group(1)) < 0:
        reason = f"{{value_negative,{int(match.group(1))}}}"
    else:
        return
    raise PreconditionFailed(f"invalid expiration '{expiration}': {reason}")


def _redelivered_form(entry: QueueEntry) -> Message:
    """The message as it goes out again: with `x-delivery-count` on a queue that limits
    deliveries or retries later (the count of earlier deliveries, this one already
    counted)."""
    if not entry.queue.settings.counts_deliveries:
        return entry.message
    return entry.message.with_delivery_count(entry.delivery_count - 1)


class Transaction:
    """Publishes and acknowledgements held back until tx.commit."""

    __slots__ = ("publishes", "settlements")

    def __init__(self) -> None:
        self.publishes: list[tuple[Exchange, Message, bool]] = []
        self.settlements: list[tuple[int, QueueEntry, int]] = []  # (tag, entry, outcome)


class Channel:
    def __init__(self, number: int, connection: Connection, sink: ChannelSink) -> None:
        self.number = number
        self.connection = connection
        self.vhost: VirtualHost = connection.vhost
        self.sink = sink
        self.consumers: dict[str, Consumer] = {}
        self._unacked: dict[int, QueueEntry] = {}
        self._next_delivery_tag = 1
        self._acked_below = 1  # every tag below this is known to be settled
        self.consumer_prefetch = 0  # basic.qos(global=false): for consumers created later
        self.prefetch_global = 0  # basic.qos(global=true): shared by the channel
        self.flow_active = True
        self.writable = True
        self._active = True  # flow_active and writable, checked on every delivery
        self.confirm_mode = False
        self._publish_sequence = 0
        # Confirms not yet sent, in order: (sequence, what must be durable first). A confirm
        # goes out only when it and every one before it are safe, so the sink's
        # "everything up to N" acks never cover a message still waiting for the disk.
        # None instead of a list: a queue refused the message (basic.nack in its turn).
        self._unconfirmed: deque[tuple[int, list[Durability] | None]] = deque()
        self.tx: Transaction | None = None
        self.last_queue_name = ""
        self.closed = False
        self.counts = MessageCounts()

    def __repr__(self) -> str:
        return f"<Channel {self.number} of {self.connection!r}>"

    @property
    def unacked_count(self) -> int:
        return len(self._unacked)

    @property
    def unconfirmed_count(self) -> int:
        """Messages published in confirm mode not yet confirmed (or nacked)."""
        return len(self._unconfirmed)

    # ---------------------------------------------------------- flow control

    def can_deliver(self, consumer: Consumer) -> bool:
        """Whether `consumer` may receive one more message now."""
        if not self._active:
            return False
        if consumer.no_ack:
            return True
        limit = consumer.prefetch_count
        if limit and consumer.unacked >= limit:
            return False
        limit = self.prefetch_global
        return not limit or len(self._unacked) < limit

    def set_writable(self, writable: bool) -> None:
        """The connection's outbound buffer crossed its limit (False) or drained (True)."""
        self.writable = writable
        self._update_active()

    def flow(self, active: bool) -> None:
        """channel.flow from the client: pause or resume deliveries to this channel."""
        self.flow_active = active
        self._update_active()

    def _update_active(self) -> None:
        was_active = self._active
        self._active = self.flow_active and self.writable and not self.closed
        if self._active and not was_active:
            self.dispatch_all()

    def stop_deliveries(self) -> None:
        """The channel is about to close: hand it nothing more."""
        self.flow_active = False
        self._active = False

    def dispatch_all(self) -> None:
        """Let every queue this channel consumes from deliver what it can."""
        for queue in {consumer.queue for consumer in self.consumers.values()}:
            queue.dispatch()

    # -------------------------------------------------------------- publish

    def publish(
        self,
        exchange_name: str,
        routing_key: str,
        mandatory: bool,
        immediate: bool,
        header: bytes,
        body: bytes,
        encoded_route: bytes | None = None,
        now_ms: int = 0,
    ) -> None:
        if immediate:
            raise FeatureNotImplemented("immediate=true", 60, 40)
        access = self.connection.access
        if not access.write_all:
            access.check(WRITE, "exchange", exchange_name)
        exchange = self.vhost.exchanges.get(exchange_name)
        if exchange is None:
            raise NotFound(f"no exchange '{exchange_name}' in vhost '{self.vhost.name}'")
        if exchange.internal:
            raise AccessRefused(
                f"cannot publish to internal exchange '{exchange_name}' in vhost "
                f"'{self.vhost.name}'"
            )
        if access.has_topics and exchange.type_name == "topic":
            access.check_topic(WRITE, exchange_name, routing_key)
        message = Message(exchange_name, routing_key, header, body, encoded_route)
        self.counts.publish += 1
        flags = message.flags
        if flags & FLAG_USER_ID and not access.impersonator:
            user_id = message.properties.user_id
            if user_id is not None and user_id != self.connection.username:
                raise PreconditionFailed(
                    f"user_id property set to '{user_id}' but authenticated user was "
                    f"'{self.connection.username}'"
                )
        if flags & FLAG_EXPIRATION:
            check_expiration(message.properties.expiration)
        if isinstance(exchange, DelayedExchange) and exchange.pending is not None:
            # A bad delay is refused now, not when a transaction commits.
            release_at_ms(message, now_ms, exchange.pending.delay_ms_max)
        if self.tx is not None:
            self.tx.publishes.append((exchange, message, mandatory))
            return
        confirm = self.confirm_mode
        if confirm:
            self._publish_sequence += 1
        try:
            waits = self._route(exchange, message, mandatory, now_ms)
        except Exception:
            if confirm:
                # A bug, not the publisher's fault: it hears basic.nack before the
                # connection closes (541), so it knows this message may not be taken.
                self.sink.rejected(self._publish_sequence)
            raise
        if confirm:
            if waits is None or waits or self._unconfirmed:
                self._unconfirmed.append((self._publish_sequence, waits))
                self.vhost.durability.wait(self)
                if waits is None:
                    self.durability_advanced()  # the nack goes out once those before it do
            else:
                self.counts.confirm += 1
                self.sink.confirmed(self._publish_sequence)

    def _route(
        self, exchange: Exchange, message: Message, mandatory: bool, now_ms: int
    ) -> list[Durability] | None:
        """Enqueue on every queue the message reaches; return what must become durable
        (None: a queue refused it, so the publisher is nacked once the others have it)."""
        vhost = self.vhost
        queues = vhost.route(exchange, message, now_ms)
        if queues:
            if mandatory and vhost.unroutable_when_released(exchange, message, queues, now_ms):
                # Held for later but routable nowhere now: returned rather than held
                # (RabbitMQ's plugin returns it and holds it as well).
                self.counts.return_unroutable += 1
                self.sink.returned(NO_ROUTE, "NO_ROUTE", message)
                return []
            waits, refused = vhost.enqueue(queues, message, now_ms)
            return None if refused else waits
        if mandatory:
            self.counts.return_unroutable += 1
            self.sink.returned(NO_ROUTE, "NO_ROUTE", message)
        return []

    # ------------------------------------------------------------ durability

    def durability_advanced(self) -> bool:
        """Send the confirms whose messages (and every earlier one) are now durable."""
        unconfirmed = self._unconfirmed
        while unconfirmed:
            sequence, waits = unconfirmed[0]
            if waits is None:
                unconfirmed.popleft()
                if not self.closed:
                    self.sink.rejected(sequence)
                continue
            if not all_durable(waits):
                return False
            unconfirmed.popleft()
            if not self.closed:
                self.counts.confirm += 1
                self.sink.confirmed(sequence)
        return True

    def durability_lost(self, log: MessageLog, start: int, end: int) -> None:
        """Messages whose writes failed are nacked; the rest keep waiting."""
        kept: deque[tuple[int, list[Durability] | None]] = deque()
        for sequence, waits in self._unconfirmed:
            if waits is not None and any_lost(waits, log, start, end):
                if not self.closed:
                    self.sink.rejected(sequence)
            else:
                kept.append((sequence, waits))
        self._unconfirmed = kept

    # --------------------------------------------------------------- queues

    def queue(self, name: str, permission: str | None = None) -> Queue:
        """The queue a method names; "" means the last queue declared on this channel.
        With `permission`, the user's right to it is checked first (403 before 404)."""
        name = self.resolve_queue_name(name)
        if permission is not None:
            self.connection.access.check(permission, "queue", name)
        return self.vhost.queue(name, self.connection)

    def resolve_queue_name(self, name: str) -> str:
        if name:
            return name
        if not self.last_queue_name:
            raise NotFound("no previously declared queue")
        return self.last_queue_name

    def declare_queue(
        self,
        name: str,
        *,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Queue:
        queue = self.vhost.declare_queue(
            name,
            owner=self.connection,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
            access=self.connection.access,
        )
        if exclusive and not passive:
            self.connection.exclusive_queues[queue.name] = queue
        self.last_queue_name = queue.name
        return queue

    def delete_queue(self, name: str, *, if_unused: bool, if_empty: bool) -> int:
        """queue.delete: the ready messages it held; a missing queue is no error."""
        name = self.resolve_queue_name(name)
        self.connection.access.check(CONFIGURE, "queue", name)
        try:
            queue = self.vhost.queue(name, self.connection)
        except NotFound:
            return 0  # deleting what is not there succeeds, as RabbitMQ does
        return self.vhost.delete_queue(queue, if_unused=if_unused, if_empty=if_empty)

    def purge(self, name: str) -> int:
        return self.queue(name, READ).purge()

    def stream(self, name: str) -> StreamQueue:
        """A stream queue the user may read (406 if the queue is not a stream)."""
        queue = self.queue(name, READ)
        if not isinstance(queue, StreamQueue):
            raise PreconditionFailed(f"queue '{name}' in vhost '{self.vhost.name}' is not a stream")
        return queue

    def reset_group(self, queue_name: str, group: str, offset: FieldValue) -> ConsumerGroup:
        """Move a stream's consumer group to an x-stream-offset value (made if new)."""
        queue = self.stream(queue_name)
        now_ms = self.vhost.services.timers.clock_ms()
        spec = parse_offset_spec(offset, now_ms, queue.name, self.vhost.name)
        return queue.reset_group(group, spec)

    def delete_group(self, queue_name: str, group: str) -> None:
        """Forget a consumer group (406 while it has consumers, 404 if there is none)."""
        queue = self.stream(queue_name)
        if group not in queue.groups:
            raise NotFound(f"no consumer group '{group}' on queue '{queue_name}'")
        if not queue.delete_group(group):
            raise PreconditionFailed(f"consumer group '{group}' has consumers")

    # ------------------------------------------------------------ exchanges

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        *,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> None:
        self.vhost.declare_exchange(
            name,
            type_name,
            passive=passive,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
            access=self.connection.access,
        )

    def delete_exchange(self, name: str, *, if_unused: bool) -> None:
        self.vhost.delete_exchange(name, if_unused=if_unused, access=self.connection.access)

    # ------------------------------------------------------------- bindings

    def _check_binding(self, source: str, kind: str, destination: str, routing_key: str) -> None:
        """RabbitMQ's order: write on the destination, neither end the default exchange,
        read on the source, and the topic permission on the routing key."""
        access = self.connection.access
        access.check(WRITE, kind, destination)
        if source == DEFAULT_EXCHANGE or (kind == "exchange" and destination == DEFAULT_EXCHANGE):
            raise default_exchange_refused()
        access.check(READ, "exchange", source)
        if access.has_topics:
            exchange = self.vhost.exchanges.get(source)
            if exchange is not None and exchange.type_name == "topic":
                access.check_topic(READ, source, routing_key)

    def _queue_binding(self, queue_name: str, routing_key: str) -> tuple[str, str]:
        name = self.resolve_queue_name(queue_name)
        if not queue_name and not routing_key:
            routing_key = name  # both empty: the last queue's name is the key too
        return name, routing_key

    def bind_queue(
        self, queue_name: str, exchange: str, routing_key: str, arguments: FieldTable
    ) -> None:
        name, routing_key = self._queue_binding(queue_name, routing_key)
        self._check_binding(exchange, "queue", name, routing_key)
        queue = self.vhost.queue(name, self.connection)
        self.vhost.bind(exchange, queue, routing_key, arguments)

    def unbind_queue(
        self, queue_name: str, exchange: str, routing_key: str, arguments: FieldTable
    ) -> None:
        # As RabbitMQ: no exclusivity check, and a missing queue or binding is no error.
        name, routing_key = self._queue_binding(queue_name, routing_key)
        self._check_binding(exchange, "queue", name, routing_key)
        queue = self.vhost.queues.get(name)
        if queue is not None:
            self.vhost.unbind(exchange, queue, routing_key, arguments)

    def bind_exchange(
        self, source: str, destination: str, routing_key: str, arguments: FieldTable
    ) -> None:
        self._check_binding(source, "exchange", destination, routing_key)
        self.vhost.bind_exchange(source, destination, routing_key, arguments)

    def unbind_exchange(
        self, source: str, destination: str, routing_key: str, arguments: FieldTable
    ) -> None:
        self._check_binding(source, "exchange", destination, routing_key)
        self.vhost.unbind_exchange(source, destination, routing_key, arguments)

    # ------------------------------------------------------------ consumers

    def consume(
        self,
        queue_name: str,
        consumer_tag: str,
        *,
        no_ack: bool,
        exclusive: bool,
        arguments: FieldTable,
    ) -> Consumer:
        """Register a consumer. The caller sends consume-ok, then calls `start`."""
        queue = self.queue(queue_name, READ)
        if consumer_tag in self.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{consumer_tag}'", 60, 20)
        if queue.exclusive_consumer is not None or (exclusive and queue.consumers):
            raise AccessRefused(
                f"queue '{queue.name}' in vhost '{self.vhost.name}' in exclusive use"
            )
        validate_consumer_arguments(arguments, queue.name, self.vhost.name)
        queue.check_consumer(no_ack, self.consumer_prefetch, self.prefetch_global, arguments)
        if not consumer_tag:
            consumer_tag = server_generated_name("amq.ctag-")
        priority = arguments.get("x-priority", 0)
        consumer = Consumer(
            consumer_tag,
            self,
            queue,
            no_ack=no_ack,
            exclusive=exclusive,
            prefetch_count=self.consumer_prefetch,
            priority=priority if isinstance(priority, int) else 0,
            arguments=arguments,
            wire_tag=self.sink.wire_tag(consumer_tag),
        )
        timeout_ms = arguments.get("x-consumer-timeout")
        if not isinstance(timeout_ms, int):
            timeout_ms = queue.settings.consumer_timeout_ms
            if timeout_ms is None:
                timeout_ms = self.vhost.services.consumer_timeout_ms
        consumer.timeout_ms = None if no_ack else timeout_ms
        self.consumers[consumer_tag] = consumer
        queue.add_consumer(consumer)
        return consumer

    def start(self, consumer: Consumer) -> None:
        consumer.queue.dispatch()

    def cancel(self, consumer_tag: str) -> None:
        """basic.cancel from the client; an unknown tag is not an error."""
        consumer = self.consumers.pop(consumer_tag, None)
        if consumer is not None:
            consumer.queue.remove_consumer(consumer)

    def cancel_by_broker(self, consumer: Consumer) -> None:
        """The consumer's queue is gone: forget the consumer and tell the client."""
        if self.consumers.pop(consumer.tag, None) is None:
            return
        consumer.queue.remove_consumer(consumer)
        if self.connection.consumer_cancel_notify and not self.closed:
            self.sink.consumer_cancelled(consumer.tag)

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        """Called by a queue handing `entry` to `consumer` (credit already checked)."""
        delivery_tag = self._next_delivery_tag
        self._next_delivery_tag = delivery_tag + 1
        redelivered = entry.delivery_count > 0
        entry.delivery_count += 1
        counts = entry.queue.counts
        if redelivered:
            counts.redeliver += 1
        if consumer.no_ack:
            counts.deliver_no_ack += 1
            if self._acked_below == delivery_tag:
                self._acked_below = delivery_tag + 1
        else:
            counts.deliver += 1
            entry.consumer = consumer
            consumer.unacked += 1
            self._unacked[delivery_tag] = entry
            timeout_ms = consumer.timeout_ms
            if timeout_ms is not None:
                timers = self.vhost.services.timers
                entry.delivered_at_ms = now_ms = timers.recent_ms
                if not consumer.timeout_armed:
                    consumer.timeout_armed = True
                    timers.schedule(now_ms + timeout_ms, consumer)
            if entry.stored:
                # Before it leaves: a restart must flag this message redelivered.
                entry.queue.note_delivered(entry)
        message = _redelivered_form(entry) if redelivered else entry.message
        self.sink.deliver(consumer, delivery_tag, redelivered, message)

    def deliver_fresh(self, consumer: Consumer, message: Message) -> None:
        """A new message straight to a no-ack consumer: nothing to track, no entry."""
        delivery_tag = self._next_delivery_tag
        self._next_delivery_tag = delivery_tag + 1
        if self._acked_below == delivery_tag:
            self._acked_below = delivery_tag + 1
        consumer.queue.counts.deliver_no_ack += 1
        self.sink.deliver(consumer, delivery_tag, False, message)

    def get(self, queue_name: str, no_ack: bool) -> tuple[int, bool, Message, int] | None:
        """basic.get: (delivery_tag, redelivered, message, messages still ready) or None."""
        queue = self.queue(queue_name, READ)
        entry = queue.get(no_ack)
        if entry is None:
            return None
        delivery_tag = self._next_delivery_tag
        self._next_delivery_tag = delivery_tag + 1
        redelivered = entry.delivery_count > 0
        entry.delivery_count += 1
        counts = queue.counts
        if redelivered:
            counts.redeliver += 1
        if no_ack:
            counts.get_no_ack += 1
        else:
            counts.get += 1
            self._unacked[delivery_tag] = entry
            queue.note_delivered(entry)
        message = _redelivered_form(entry) if redelivered else entry.message
        return delivery_tag, redelivered, message, queue.message_count

    # ---------------------------------------------------------------- acks

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        taken = self._take(delivery_tag, multiple)
        if self.tx is None:
            self._apply(taken, _ACK)
        else:
            self.tx.settlements.extend((tag, entry, _ACK) for tag, entry in taken)

    def nack(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        self._check_nack(delivery_tag)
        self._settle(self._take(delivery_tag, multiple), _RETRY if requeue else _DISCARD)

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        self._check_nack(delivery_tag)
        self._settle(self._take(delivery_tag, False), _RETRY if requeue else _DISCARD)

    def _check_nack(self, delivery_tag: int) -> None:
        """A stream refuses nack and reject of a plain reader's delivery (540, as RabbitMQ
        3.10), before anything is settled."""
        entry = self._unacked.get(delivery_tag)
        if entry is not None and (refusal := entry.queue.nack_refusal(entry)) is not None:
            raise refusal

    def recover(self, requeue: bool) -> None:
        """basic.recover: every unacked delivery goes back to its queue, redelivered."""
        if not requeue:
            raise FeatureNotImplemented("requeue=false", 60, 110)
        self._settle(self._take(0, True), _REQUEUE)

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[int, QueueEntry]]:
        """Remove and return the deliveries an ack/nack/reject names (406 if unknown)."""
        unacked = self._unacked
        if not multiple:
            entry = unacked.pop(delivery_tag, None)
            if entry is None:
                raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
            return [(delivery_tag, entry)]
        if delivery_tag == 0:  # multiple with tag 0: everything outstanding
            taken = list(unacked.items())
            unacked.clear()
            self._acked_below = self._next_delivery_tag
            return taken
        if delivery_tag not in unacked:
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        taken = []
        if len(unacked) < delivery_tag - self._acked_below:
            for tag in unacked:  # tags were inserted in increasing order
                if tag > delivery_tag:
                    break
                taken.append((tag, unacked[tag]))
            for tag, _ in taken:
                del unacked[tag]
        else:
            pop = unacked.pop
            for tag in range(self._acked_below, delivery_tag + 1):
                entry = pop(tag, None)
                if entry is not None:
                    taken.append((tag, entry))
        self._acked_below = max(self._acked_below, delivery_tag + 1)
        return taken

    def _settle(self, taken: list[tuple[int, QueueEntry]], outcome: int) -> None:
        if self.tx is not None:
            self.tx.settlements.extend((tag, entry, outcome) for tag, entry in taken)
            return
        self._apply(taken, outcome)

    def _apply(self, taken: list[tuple[int, QueueEntry]], outcome: int) -> None:
        touched: dict[Queue, None] = {}
        requeue = outcome in (_REQUEUE, _RETRY)
        later = outcome == _RETRY
        # Acks are counted per run of one queue's entries: a counter above 256 allocates
        # at every increment, and a multiple ack settles many at once.
        acked_queue: Queue | None = None
        acked = 0
        for _, entry in taken:
            consumer = entry.consumer
            queue = entry.queue
            if consumer is not None:
                consumer.unacked -= 1
                touched[queue] = None
            if requeue:
                queue.requeue(entry, later)
                touched[queue] = None
            elif outcome == _DISCARD:
                queue.reject(entry)
            else:
                queue.settle(entry)
                if queue is not acked_queue:
                    if acked_queue is not None:
                        acked_queue.counts.ack += acked
                    acked_queue, acked = queue, 0
                acked += 1
        if acked_queue is not None:
            acked_queue.counts.ack += acked
        # Freed credit (and requeued messages) can move more messages right away.
        for queue in touched:
            queue.dispatch()
        if self.prefetch_global and touched:
            self.dispatch_all()

    def check_consumer_timeout(self, consumer: Consumer, now_ms: int) -> None:
        """Cancel `consumer` if it has held a delivery for its timeout; else wake again
        when its oldest delivery would reach it."""
        timeout_ms = consumer.timeout_ms
        if self.closed or self.consumers.get(consumer.tag) is not consumer or timeout_ms is None:
            return
        oldest = next(
            (entry for entry in self._unacked.values() if entry.consumer is consumer), None
        )
        if oldest is None:
            return  # nothing held: the next delivery arms the timer again
        due_ms = oldest.delivered_at_ms + timeout_ms
        if due_ms > now_ms:
            consumer.timeout_armed = True
            self.vhost.services.timers.schedule(due_ms, consumer)
            return
        if not self.connection.consumer_cancel_notify:
            # As RabbitMQ: without basic.cancel support the channel goes, with 406.
            self.sink.failed(
                PreconditionFailed(
                    f"delivery acknowledgement on channel {self.number} timed out. Timeout "
                    f"value used: {timeout_ms} ms. This timeout value can be configured, "
                    "see consumers doc guide to learn more"
                )
            )
            return
        self.cancel_by_broker(consumer)
        # Its deliveries go back, redelivered; other consumers on the channel go on.
        held = [(tag, entry) for tag, entry in self._unacked.items() if entry.consumer is consumer]
        for tag, _ in held:
            del self._unacked[tag]
        self._apply(held, _REQUEUE)

    # ----------------------------------------------------------------- qos

    def qos(self, prefetch_size: int, prefetch_count: int, global_: bool) -> None:
        if prefetch_size != 0:
            raise FeatureNotImplemented(f"prefetch_size!=0 ({prefetch_size})", 60, 10)
        if global_:
            self.prefetch_global = prefetch_count
            self.dispatch_all()
        else:
            self.consumer_prefetch = prefetch_count

    # ------------------------------------------------------- confirm and tx

    def select_confirms(self) -> None:
        if self.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode", 85, 10)
        self.confirm_mode = True

    def select_tx(self) -> None:
        if self.confirm_mode:
            raise PreconditionFailed("cannot switch from confirm to tx mode", 90, 10)
        if self.tx is None:
            self.tx = Transaction()

    def commit(self, now_ms: int = 0) -> list[Durability]:
        """Apply the transaction; return what must be durable before commit-ok."""
        tx = self._transaction(90, 20)
        self.tx = Transaction()
        waits: list[Durability] = []
        for exchange, message, mandatory in tx.publishes:
            waits += self._route(exchange, message, mandatory, now_ms) or []
        for outcome in (_ACK, _DISCARD, _REQUEUE, _RETRY):
            taken = [(tag, entry) for tag, entry, done in tx.settlements if done == outcome]
            if taken:
                self._apply(taken, outcome)
        return waits

    def rollback(self) -> None:
        tx = self._transaction(90, 30)
        self.tx = Transaction()
        if tx.settlements:
            # Acknowledged-but-uncommitted deliveries are outstanding again, in tag order.
            restored = dict(self._unacked)
            for tag, entry, _ in tx.settlements:
                restored[tag] = entry
            self._unacked = dict(sorted(restored.items()))
            self._acked_below = min(self._acked_below, min(self._unacked))

    def _transaction(self, class_id: int, method_id: int) -> Transaction:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional", class_id, method_id)
        return self.tx

    # --------------------------------------------------------------- close

    def close(self) -> None:
        """The channel ended (either side closed it, or the connection went)."""
        if self.closed:
            return
        self.closed = True
        self._active = False
        consumers = list(self.consumers.values())
        self.consumers.clear()
        for consumer in consumers:
            consumer.queue.remove_consumer(consumer)
        # Consumers are gone first, so requeued messages go to other channels only.
        taken = list(self._unacked.items())
        self._unacked.clear()
        if self.tx is not None:
            taken.extend((tag, entry) for tag, entry, _ in self.tx.settlements)
            self.tx = None
        self._apply(taken, _REQUEUE)
        self._unconfirmed.clear()
        self.vhost.durability.forget(self)
        self.vhost.retired_channel_counts.add(self.counts)
