"""One open channel: AMQP methods in, broker calls, replies out.

The dispatch table maps each method a client may send on a channel to a handler that
calls the broker and queues the reply; the handler also implements the broker's
ChannelSink, encoding deliveries, returns, confirms and cancel notifications straight
into the connection's outbound buffer. Publisher confirms are batched: all confirms of
one read go out as one `basic.ack(multiple=true)`.

Synchronous (no await); imports amqpd.broker, amqpd.protocol and amqpd.errors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from amqpd.broker.channel import Channel
from amqpd.broker.consumer import Consumer
from amqpd.broker.durability import all_durable
from amqpd.broker.message import Message
from amqpd.broker.ports import MessageLog
from amqpd.errors import ChannelException, CommandInvalid
from amqpd.protocol import spec
from amqpd.protocol.connection import ProtocolConnection
from amqpd.protocol.fast_codec import (
    ack_frame,
    append_delivery,
    append_get_ok,
    nack_frame,
    short_string,
)
from amqpd.protocol.frames import append_content

if TYPE_CHECKING:
    from amqpd.server.client import ClientSession

# Approximate framing bytes per delivery, for outbound back-pressure accounting.
_DELIVERY_OVERHEAD_BYTES: Final = 64


def encode_route(message: Message) -> bytes:
    """Exchange and routing key as deliveries write them (for messages the broker made)."""
    return short_string(message.exchange) + short_string(message.routing_key)


class ChannelHandler:
    """Dispatches one channel's methods and carries its server-initiated traffic."""

    def __init__(self, number: int, session: ClientSession) -> None:
        self.number = number
        self.session = session
        self.proto: ProtocolConnection = session.proto
        assert session.broker_connection is not None
        self.channel = Channel(number, session.broker_connection, self)
        self._now_ms = 0
        self._pending_reply: spec.Method | None = None
        self._confirm_through = 0  # highest publish sequence confirmed, not yet sent
        self._confirm_sent = 0  # highest publish sequence acked to the client
        # Replies that wait for the disk (commit-ok, declare-ok of a durable entity), and
        # every reply after them, in order: (ready when this holds, reply).
        self._held: deque[tuple[Callable[[], bool] | None, spec.Method]] = deque()

    # ------------------------------------------------------- ChannelSink

    def wire_tag(self, consumer_tag: str) -> bytes:
        return short_string(consumer_tag)

    def deliver(
        self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message
    ) -> None:
        route = message.encoded_route
        if route is None:
            route = message.encoded_route = encode_route(message)
        body = message.body
        append_delivery(
            self.proto.out,
            self.number,
            consumer.wire_tag,
            delivery_tag,
            redelivered,
            route,
            message.header,
            body,
            self.proto.body_frame_bytes_max,
        )
        self.session.queued_output(len(body) + _DELIVERY_OVERHEAD_BYTES)

    def returned(self, reply_code: int, reply_text: str, message: Message) -> None:
        self.proto.send_content(
            self.number,
            spec.BasicReturn(
                reply_code=reply_code,
                reply_text=reply_text,
                exchange=message.exchange,
                routing_key=message.routing_key,
            ),
            message.header,
            message.body,
        )
        self.session.queued_output(len(message.body) + _DELIVERY_OVERHEAD_BYTES)

    def confirmed(self, sequence: int) -> None:
        if not self._confirm_through:
            self.session.confirms_pending(self)
        self._confirm_through = sequence

    def rejected(self, sequence: int) -> None:
        self.flush_confirms()  # acks for earlier messages go first, in order
        self.proto.out.append(nack_frame(self.number, sequence, False, False))
        self._confirm_sent = sequence
        self.session.queued_output(_DELIVERY_OVERHEAD_BYTES)

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.proto.send_method(
            self.number, spec.BasicCancel(consumer_tag=consumer_tag, nowait=True)
        )
        self.session.queued_output(_DELIVERY_OVERHEAD_BYTES)

    def failed(self, error: ChannelException) -> None:
        self.session.channel_failed(self, error)

    def flush_confirms(self) -> None:
        """Send the confirms gathered during one read as one ack (multiple if several)."""
        through = self._confirm_through
        if through and self.proto.is_channel_open(self.number):
            multiple = through > self._confirm_sent + 1
            self.proto.out.append(ack_frame(self.number, through, multiple))
            self._confirm_sent = through
        self._confirm_through = 0

    # ---------------------------------------------------------- dispatch

    def handle(self, method: spec.Method, now_ms: int) -> None:
        handler = _DISPATCH.get(type(method))
        if handler is None:
            # RabbitMQ's answer to methods only a server sends (flow-ok, declare-ok, ...).
            raise CommandInvalid("unimplemented method", method.CLASS_ID, method.METHOD_ID)
        self._now_ms = now_ms
        services = self.channel.vhost.services
        ticket = services.definitions_ticket
        handler(self, method)
        if type(method) in _AUDITED:
            self._audit(method)
        if services.definitions_ticket != ticket and self._pending_reply is not None:
            # A durable definition changed: its reply waits for the journal's fsync.
            after = services.definitions_ticket
            self._reply_when(lambda: services.definitions_durable(after), self._pending_reply)
        elif self._pending_reply is not None:
            self._reply_now(self._pending_reply)
        self._pending_reply = None

    def _audit(self, method: spec.Method) -> None:
        """A declare, delete, bind or unbind that succeeded, for the audit log."""
        audit = self.session.context.audit
        if not audit.enabled or getattr(method, "passive", False):
            return
        channel = self.channel
        fields = {
            name: getattr(method, name)
            for name in _AUDITED[type(method)]
            if getattr(method, name, None) not in (None, "", {})
        }
        if type(method) is spec.QueueDeclare and not fields.get("queue"):
            fields["queue"] = channel.last_queue_name  # the name the broker chose
        audit.record(
            method.NAME,
            user=channel.connection.username,
            vhost=channel.vhost.name,
            peer=self.session.peer_host,
            **fields,
        )

    def close(self) -> None:
        self._confirm_through = 0
        self._held.clear()
        self.channel.vhost.durability.forget(self)
        self.channel.close()

    def _reply(self, method: spec.Method) -> None:
        """The reply to the method being handled; sent once handle() knows it may go."""
        self._pending_reply = method

    def _flush_reply(self) -> None:
        if self._pending_reply is not None:
            self._reply_now(self._pending_reply)
            self._pending_reply = None

    def _reply_now(self, method: spec.Method) -> None:
        if self._held:
            self._held.append((None, method))
        else:
            self.proto.send_method(self.number, method)

    def _reply_when(self, ready: Callable[[], bool], method: spec.Method) -> None:
        if not self._held and ready():
            self.proto.send_method(self.number, method)
            return
        self._held.append((ready, method))
        self.channel.vhost.durability.wait(self)

    # ---------------------------------------------------- DurabilityWaiter

    def durability_advanced(self) -> bool:
        held = self._held
        while held:
            ready, method = held[0]
            if ready is not None and not ready():
                return False
            held.popleft()
            if self.proto.is_channel_open(self.number):
                self.proto.send_method(self.number, method)
                self.session.queued_output(_DELIVERY_OVERHEAD_BYTES)
        return True

    def durability_lost(self, log: MessageLog, start: int, end: int) -> None:
        """A reply waiting on lost writes can never be true: fail the connection."""
        if self._held:
            self.session.storage_failed_for(self)

    # channel ------------------------------------------------------------

    def _flow(self, method: spec.ChannelFlow) -> None:
        self._reply(spec.ChannelFlowOk(active=method.active))
        self.channel.flow(method.active)

    # exchange -----------------------------------------------------------

    def _exchange_declare(self, method: spec.ExchangeDeclare) -> None:
        self.channel.declare_exchange(
            method.exchange,
            method.exchange_type,
            passive=method.passive,
            durable=method.durable,
            auto_delete=method.auto_delete,
            internal=method.internal,
            arguments=method.arguments,
        )
        if not method.nowait:
            self._reply(spec.ExchangeDeclareOk())

    def _exchange_delete(self, method: spec.ExchangeDelete) -> None:
        self.channel.delete_exchange(method.exchange, if_unused=method.if_unused)
        if not method.nowait:
            self._reply(spec.ExchangeDeleteOk())

    def _exchange_bind(self, method: spec.ExchangeBind) -> None:
        self.channel.bind_exchange(
            method.source, method.destination, method.routing_key, method.arguments
        )
        if not method.nowait:
            self._reply(spec.ExchangeBindOk())

    def _exchange_unbind(self, method: spec.ExchangeUnbind) -> None:
        self.channel.unbind_exchange(
            method.source, method.destination, method.routing_key, method.arguments
        )
        if not method.nowait:
            self._reply(spec.ExchangeUnbindOk())

    # queue --------------------------------------------------------------

    def _queue_declare(self, method: spec.QueueDeclare) -> None:
        queue = self.channel.declare_queue(
            method.queue,
            passive=method.passive,
            durable=method.durable,
            exclusive=method.exclusive,
            auto_delete=method.auto_delete,
            arguments=method.arguments,
        )
        if not method.nowait:
            self._reply(
                spec.QueueDeclareOk(
                    queue=queue.name,
                    message_count=queue.message_count,
                    consumer_count=queue.consumer_count,
                )
            )

    def _queue_bind(self, method: spec.QueueBind) -> None:
        self.channel.bind_queue(method.queue, method.exchange, method.routing_key, method.arguments)
        if not method.nowait:
            self._reply(spec.QueueBindOk())

    def _queue_unbind(self, method: spec.QueueUnbind) -> None:
        self.channel.unbind_queue(
            method.queue, method.exchange, method.routing_key, method.arguments
        )
        self._reply(spec.QueueUnbindOk())

    def _queue_purge(self, method: spec.QueuePurge) -> None:
        count = self.channel.purge(method.queue)
        if not method.nowait:
            self._reply(spec.QueuePurgeOk(message_count=count))

    def _queue_delete(self, method: spec.QueueDelete) -> None:
        count = self.channel.delete_queue(
            method.queue, if_unused=method.if_unused, if_empty=method.if_empty
        )
        if not method.nowait:
            self._reply(spec.QueueDeleteOk(message_count=count))

    # basic --------------------------------------------------------------

    def _basic_qos(self, method: spec.BasicQos) -> None:
        self.channel.qos(method.prefetch_size, method.prefetch_count, method.global_)
        self._reply(spec.BasicQosOk())

    def _basic_consume(self, method: spec.BasicConsume) -> None:
        channel = self.channel
        consumer = channel.consume(
            method.queue,
            method.consumer_tag,
            no_ack=method.no_ack,
            exclusive=method.exclusive,
            arguments=method.arguments,
        )
        if not method.nowait:
            self._reply(spec.BasicConsumeOk(consumer_tag=consumer.tag))
            self._flush_reply()  # consume-ok goes before the first delivery
        channel.start(consumer)

    def _basic_cancel(self, method: spec.BasicCancel) -> None:
        self.channel.cancel(method.consumer_tag)
        if not method.nowait:
            self._reply(spec.BasicCancelOk(consumer_tag=method.consumer_tag))

    def _basic_get(self, method: spec.BasicGet) -> None:
        got = self.channel.get(method.queue, method.no_ack)
        if got is None:
            self._reply(spec.BasicGetEmpty())
            return
        delivery_tag, redelivered, message, message_count = got
        route = message.encoded_route
        if route is None:
            route = message.encoded_route = encode_route(message)
        out = self.proto.out
        append_get_ok(out, self.number, delivery_tag, redelivered, route, message_count)
        append_content(
            out, self.number, message.header, message.body, self.proto.body_frame_bytes_max
        )
        self.session.queued_output(len(message.body) + _DELIVERY_OVERHEAD_BYTES)

    def _basic_ack(self, method: spec.BasicAck) -> None:
        self.channel.ack(method.delivery_tag, method.multiple)

    def _basic_nack(self, method: spec.BasicNack) -> None:
        self.channel.nack(method.delivery_tag, method.multiple, method.requeue)

    def _basic_reject(self, method: spec.BasicReject) -> None:
        self.channel.reject(method.delivery_tag, method.requeue)

    def _basic_recover(self, method: spec.BasicRecover) -> None:
        self.channel.recover(method.requeue)
        self._reply(spec.BasicRecoverOk())

    def _basic_recover_async(self, method: spec.BasicRecoverAsync) -> None:
        """Deprecated, but RabbitMQ still honours it: basic.recover without a reply."""
        self.channel.recover(method.requeue)

    # confirm and tx -----------------------------------------------------

    def _confirm_select(self, method: spec.ConfirmSelect) -> None:
        self.channel.select_confirms()
        if not method.nowait:
            self._reply(spec.ConfirmSelectOk())

    def _tx_select(self, method: spec.TxSelect) -> None:
        self.channel.select_tx()
        self._reply(spec.TxSelectOk())

    def _tx_commit(self, method: spec.TxCommit) -> None:
        waits = self.channel.commit(self._now_ms)
        if waits:
            # tx.commit-ok means every persistent message of the transaction is on disk.
            self._reply_when(
                lambda: all_durable(waits),
                spec.TxCommitOk(),
            )
        else:
            self._reply(spec.TxCommitOk())

    def _tx_rollback(self, method: spec.TxRollback) -> None:
        self.channel.rollback()
        self._reply(spec.TxRollbackOk())


# Methods the audit log records, with the fields it keeps of each.
_AUDITED: Final[dict[type[spec.Method], tuple[str, ...]]] = {
    spec.ExchangeDeclare: ("exchange", "exchange_type", "durable", "arguments"),
    spec.ExchangeDelete: ("exchange",),
    spec.ExchangeBind: ("destination", "source", "routing_key", "arguments"),
    spec.ExchangeUnbind: ("destination", "source", "routing_key", "arguments"),
    spec.QueueDeclare: ("queue", "durable", "exclusive", "arguments"),
    spec.QueueDelete: ("queue",),
    spec.QueueBind: ("queue", "exchange", "routing_key", "arguments"),
    spec.QueueUnbind: ("queue", "exchange", "routing_key", "arguments"),
    spec.QueuePurge: ("queue",),
}

_DISPATCH: Final[dict[type[spec.Method], Callable[[ChannelHandler, Any], None]]] = {
    spec.ChannelFlow: ChannelHandler._flow,
    spec.ExchangeDeclare: ChannelHandler._exchange_declare,
    spec.ExchangeDelete: ChannelHandler._exchange_delete,
    spec.ExchangeBind: ChannelHandler._exchange_bind,
    spec.ExchangeUnbind: ChannelHandler._exchange_unbind,
    spec.QueueDeclare: ChannelHandler._queue_declare,
    spec.QueueBind: ChannelHandler._queue_bind,
    spec.QueueUnbind: ChannelHandler._queue_unbind,
    spec.QueuePurge: ChannelHandler._queue_purge,
    spec.QueueDelete: ChannelHandler._queue_delete,
    spec.BasicQos: ChannelHandler._basic_qos,
    spec.BasicConsume: ChannelHandler._basic_consume,
    spec.BasicCancel: ChannelHandler._basic_cancel,
    spec.BasicGet: ChannelHandler._basic_get,
    spec.BasicAck: ChannelHandler._basic_ack,
    spec.BasicNack: ChannelHandler._basic_nack,
    spec.BasicReject: ChannelHandler._basic_reject,
    spec.BasicRecover: ChannelHandler._basic_recover,
    spec.BasicRecoverAsync: ChannelHandler._basic_recover_async,
    spec.ConfirmSelect: ChannelHandler._confirm_select,
    spec.TxSelect: ChannelHandler._tx_select,
    spec.TxCommit: ChannelHandler._tx_commit,
    spec.TxRollback: ChannelHandler._tx_rollback,
}
