"""Broker and server objects in the JSON shapes of RabbitMQ's management API.

Field names are RabbitMQ's (messages_ready, messages_unacknowledged, message_stats with
`<counter>` and `<counter>_details.rate`, ...), so scripts and dashboards written for it
read these unchanged. Only what amqpd really has is reported: no Erlang process figures.

Pure functions; imports amqpd.broker, amqpd.codec and amqpd.server (read only).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from amqpd.broker.binding import Binding, arguments_key
from amqpd.broker.consumer import Consumer
from amqpd.broker.exchanges.base import Exchange
from amqpd.broker.queue import Queue
from amqpd.broker.stats import MessageCounts
from amqpd.broker.stream import ConsumerGroup, StreamQueue
from amqpd.codec.fields import FieldTable, FieldValue
from amqpd.codec.properties import BasicProperties
from amqpd.management.rates import RateTracker
from amqpd.server.channel import ChannelHandler
from amqpd.server.client import ClientSession

Json = Any  # what json.dumps takes

# The counters of a queue's message_stats, in the order rate samples keep them.
QUEUE_COUNTERS: Final = (
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "redeliver",
    "ack",
)
# The depth figures of a queue whose rates are sampled too (messages_details, ...).
QUEUE_DEPTHS: Final = ("messages", "messages_ready", "messages_unacknowledged")
CHANNEL_COUNTERS: Final = ("publish", "confirm", "return_unroutable")
NODE_COUNTERS: Final = (
    "publish",
    "confirm",
    "return_unroutable",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "redeliver",
    "ack",
)


def json_value(value: FieldValue) -> Json:
    """A field-table value as JSON: byte strings as text where they are UTF-8."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, list):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return table_json(value)
    return value


def table_json(table: FieldTable | None) -> dict[str, Json]:
    return {key: json_value(value) for key, value in (table or {}).items()}


def properties_json(properties: BasicProperties) -> dict[str, Json]:
    """Basic properties as the API shows them: only those present."""
    shown: dict[str, Json] = {}
    for name in (
        "content_type",
        "content_encoding",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    ):
        value = getattr(properties, name)
        if value is not None:
            shown[name] = value
    if properties.headers is not None:
        shown["headers"] = table_json(properties.headers)
    return shown


def stats_json(
    names: tuple[str, ...], values: Mapping[str, int], rates: tuple[float, ...]
) -> dict[str, Json]:
    """RabbitMQ's message_stats: each counter, and its rate under `<name>_details`."""
    shown: dict[str, Json] = {}
    for name, rate in zip(names, rates, strict=True):
        shown[name] = values[name]
        shown[f"{name}_details"] = {"rate": round(rate, 2)}
    return shown


def ready_count(queue: Queue) -> int:
    """Ready messages as the management API shows them: a stream's are all it holds."""
    return queue.stored_count if isinstance(queue, StreamQueue) else queue.message_count


def group_json(group: ConsumerGroup, next_offset: int) -> dict[str, Json]:
    return {
        "name": group.name,
        "offset": group.committed,
        "lag": group.lag(next_offset),
        "consumers": len(group.members),
    }


def queue_counter_values(queue: Queue) -> tuple[int, ...]:
    counts = queue.counts
    ready = ready_count(queue)
    unacked = queue.unacked_count
    return (
        counts.publish,
        counts.deliver,
        counts.deliver_no_ack,
        counts.get,
        counts.get_no_ack,
        counts.redeliver,
        counts.ack,
        ready + unacked,
        ready,
        unacked,
    )


def queue_json(queue: Queue, node: str, rates: RateTracker) -> dict[str, Json]:
    counts = queue.counts
    width = len(QUEUE_COUNTERS) + len(QUEUE_DEPTHS)
    sampled = rates.rates(("queue", queue.vhost, queue.name), width)
    ready, unacked = ready_count(queue), queue.unacked_count
    message_stats = stats_json(QUEUE_COUNTERS, counts.as_dict(), sampled[: len(QUEUE_COUNTERS)])
    message_stats["deliver_get"] = counts.deliver_get
    message_stats["deliver_get_details"] = {"rate": round(sum(sampled[1:5]), 2)}
    shown: dict[str, Json] = {
        "name": queue.name,
        "vhost": queue.vhost,
        "durable": queue.durable,
        "auto_delete": queue.auto_delete,
        "exclusive": queue.exclusive,
        "arguments": table_json(queue.arguments),
        "type": "stream" if isinstance(queue, StreamQueue) else "classic",
        "state": "running",
        "node": node,
        "policy": queue.policy.name if queue.policy is not None else None,
        "effective_policy_definition": dict(queue.policy.definition)
        if queue.policy is not None
        else {},
        "consumers": queue.consumer_count,
        "exclusive_consumer_tag": queue.exclusive_consumer.tag
        if queue.exclusive_consumer is not None
        else None,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_stats": message_stats,
        "memory": queue.memory_bytes,
    }
    for name, rate in zip(QUEUE_DEPTHS, sampled[len(QUEUE_COUNTERS) :], strict=True):
        shown[f"{name}_details"] = {"rate": round(rate, 2)}
    if isinstance(queue, StreamQueue):
        end = queue.next_offset
        shown["first_offset"] = queue.first_offset
        shown["next_offset"] = end
        shown["groups"] = [group_json(group, end) for group in queue.groups.values()]
    return shown


def exchange_json(exchange: Exchange) -> dict[str, Json]:
    return {
        "name": exchange.name,
        "vhost": exchange.vhost,
        "type": exchange.type_name,
        "durable": exchange.durable,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": table_json(exchange.arguments),
        "policy": exchange.policy.name if exchange.policy is not None else None,
        "user_who_performed_action": "",
    }


def quote_binding_key(routing_key: str) -> str:
    """A routing key as it stands in a properties key: "~" separates the arguments' part."""
    return routing_key.replace("%", "%25").replace("~", "%7E")


def properties_key(binding: Binding) -> str:
    """How the API names one binding among those with the same ends (RabbitMQ's form:
    the routing key, with "~" and a digest of the arguments when there are any)."""
    key = quote_binding_key(binding.routing_key)
    if not binding.arguments:
        return key or "~"
    digest = hashlib.sha256(arguments_key(binding.arguments)).digest()[:12]
    return f"{key}~{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def binding_json(vhost: str, binding: Binding) -> dict[str, Json]:
    return {
        "source": binding.source,
        "vhost": vhost,
        "destination": binding.destination.name,
        "destination_type": binding.destination.kind,
        "routing_key": binding.routing_key,
        "arguments": table_json(binding.arguments),
        "properties_key": properties_key(binding),
    }


def connection_json(session: ClientSession, node: str) -> dict[str, Json]:
    connection = session.broker_connection
    proto = session.proto
    local_host, local_port = session.local
    return {
        "name": session.name,
        "node": node,
        "type": "network",
        "state": "blocked" if session.blocked else "running",
        "user": session.username,
        "vhost": connection.vhost.name if connection is not None else None,
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": session.auth_mechanism,
        "ssl": session.peer_certificate is not None or session.tls,
        "host": local_host,
        "port": local_port,
        "peer_host": session.peer_host,
        "peer_port": session.peer_port,
        "channels": len(session.handlers),
        "channel_max": proto.channel_max,
        "frame_max": proto.frame_max,
        "timeout": proto.heartbeat_s,
        "client_properties": table_json(proto.client_properties),
        "connected_at": session.connected_at_ms,
        "recv_oct": session.received_bytes,
        "send_oct": session.sent_bytes,
        "user_provided_name": proto.client_properties.get("connection_name"),
    }


def connection_details(session: ClientSession) -> dict[str, Json]:
    return {"name": session.name, "peer_host": session.peer_host, "peer_port": session.peer_port}


def channel_name(session: ClientSession, number: int) -> str:
    return f"{session.name} ({number})"


def channel_json(
    session: ClientSession, handler: ChannelHandler, node: str, rates: RateTracker
) -> dict[str, Json]:
    channel = handler.channel
    name = channel_name(session, handler.number)
    sampled = rates.rates(("channel", name), len(CHANNEL_COUNTERS))
    return {
        "name": name,
        "number": handler.number,
        "node": node,
        "user": session.username,
        "vhost": channel.vhost.name,
        "connection_details": connection_details(session),
        "state": "running" if channel.flow_active else "flow",
        "consumer_count": len(channel.consumers),
        "messages_unacknowledged": channel.unacked_count,
        "messages_unconfirmed": channel.unconfirmed_count,
        "prefetch_count": channel.consumer_prefetch,
        "global_prefetch_count": channel.prefetch_global,
        "confirm": channel.confirm_mode,
        "transactional": channel.tx is not None,
        "message_stats": stats_json(CHANNEL_COUNTERS, channel.counts.as_dict(), sampled),
    }


def consumer_json(
    session: ClientSession, handler: ChannelHandler, consumer: Consumer
) -> dict[str, Json]:
    queue = consumer.queue
    return {
        "consumer_tag": consumer.tag,
        "queue": {"name": queue.name, "vhost": queue.vhost},
        "channel_details": {
            **connection_details(session),
            "name": channel_name(session, handler.number),
            "number": handler.number,
            "connection_name": session.name,
            "user": session.username,
        },
        "ack_required": not consumer.no_ack,
        "exclusive": consumer.exclusive,
        "prefetch_count": consumer.prefetch_count,
        "arguments": table_json(consumer.arguments),
        "active": True,
        "activity_status": "up",
        "consumer_unacknowledged": consumer.unacked,
    }


def node_counts_total(counts: list[MessageCounts]) -> MessageCounts:
    total = MessageCounts()
    for item in counts:
        total.add(item)
    return total
