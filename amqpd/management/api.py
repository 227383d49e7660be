"""The HTTP API: routes, basic auth, and RabbitMQ's JSON for every read; refusals in
RabbitMQ's error shape ({"error": ..., "reason": ...}) with its status codes.

Listing endpoints take RabbitMQ's query parameters: `columns` (comma-separated, dotted
paths), `sort` and `sort_reverse`, and pagination (`page`, `page_size`, `name`,
`use_regex`), which then answers with RabbitMQ's page object.

Users, vhosts, permissions and policies are owned by the config files: the API shows
them, and answers a change with 405 and a reason that says where to make it.

Imports aiohttp, anyio, amqpd.management.*, amqpd.server, amqpd.broker, amqpd.auth,
amqpd.config, amqpd.store.metrics.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import anyio
from aiohttp import web

from amqpd import __version__
from amqpd.auth.passwords import ALGORITHM_NAMES
from amqpd.broker.access import Access
from amqpd.broker.channel import Channel
from amqpd.broker.queue import Queue
from amqpd.broker.stats import MessageCounts
from amqpd.broker.stream import StreamQueue
from amqpd.broker.vhost import VirtualHost
from amqpd.codec.fields import FieldValue, Timestamp
from amqpd.codec.properties import BasicProperties
from amqpd.config.model import Policy as ConfigPolicy
from amqpd.config.model import ServerConfig, hash_algorithm
from amqpd.errors import (
    ACCESS_REFUSED,
    NOT_FOUND,
    AMQPException,
    LoginRefused,
)
from amqpd.management import operations
from amqpd.management.present import (
    NODE_COUNTERS,
    Json,
    binding_json,
    channel_json,
    channel_name,
    connection_json,
    consumer_json,
    exchange_json,
    group_json,
    properties_key,
    queue_counter_values,
    queue_json,
    quote_binding_key,
    ready_count,
    stats_json,
    table_json,
)
from amqpd.management.rates import RateTracker
from amqpd.management.viewer import Viewer
from amqpd.server.client import ClientSession
from amqpd.server.context import ServerContext
from amqpd.store.metrics import StoreMetrics

log = logging.getLogger("amqpd.management")

T = TypeVar("T")

MANAGEMENT_VERSION: Final = "3.10.8"  # the RabbitMQ management API this one follows
PAGE_SIZE_MAX: Final = 500  # RabbitMQ's limit for one page
_VIEWER: Final = web.RequestKey("viewer", Viewer)


class ApiError(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def not_found(reason: str = "Not Found") -> ApiError:
    return ApiError(404, "Object Not Found", reason)


def not_authorised(reason: str) -> ApiError:
    return ApiError(401, "not_authorised", reason)


def bad_request(reason: str) -> ApiError:
    return ApiError(400, "bad_request", reason)


def owned_by_config(what: str, key: str) -> ApiError:
    return ApiError(
        405,
        "method_not_allowed",
        f"{what} are defined in amqpd's config files (the `{key}` key); change them there "
        "and run `amqpd reload`",
    )


def from_amqp(error: AMQPException) -> ApiError:
    """An AMQP refusal of an operation the API ran as the user, in HTTP terms."""
    if error.reply_code == NOT_FOUND:
        return not_found(error.reply_text)
    if error.reply_code == ACCESS_REFUSED:
        return not_authorised(error.reply_text)
    return bad_request(error.reply_text)


def node_name() -> str:
    return f"amqpd@{socket.gethostname()}"


class ManagementApi:
    """Everything the handlers read: the server context, the running config, rates."""

    def __init__(
        self,
        context: ServerContext,
        config: Callable[[], ServerConfig],
        amqp_addresses: Callable[[], list[tuple[str, int, bool]]],
    ) -> None:
        self.context = context
        self.config = config
        self.amqp_addresses = amqp_addresses
        self.node = node_name()
        self.started_at_s = time.time()
        self.rates = RateTracker()
        self.management_address: tuple[str, int] | None = None
        # The store's counters for /metrics (node.py sets them when there is a store).
        self.store_metrics: StoreMetrics | None = None

    # ----------------------------------------------------------------- sampling

    def sample(self, now_s: float) -> None:
        """One round of rate samples: the node, every queue and every channel."""
        rates = self.rates
        rates.update(("node",), now_s, self.node_counter_values())
        for vhost in self.context.broker.vhosts.values():
            for queue in vhost.queues.values():
                rates.update(("queue", queue.vhost, queue.name), now_s, queue_counter_values(queue))
        for session in self.context.sessions:
            for handler in session.handlers.values():
                counts = handler.channel.counts
                rates.update(
                    ("channel", channel_name(session, handler.number)),
                    now_s,
                    (counts.publish, counts.confirm, counts.return_unroutable),
                )
        rates.end_round()

    async def sample_forever(self, interval_s: float) -> None:
        while True:
            self.sample(time.monotonic())
            await anyio.sleep(interval_s)

    # ------------------------------------------------------------------ totals

    def node_counts(self) -> MessageCounts:
        """The node's totals, as RabbitMQ's overview counts them: publish, confirm and
        returns from channels; deliveries, gets, acks and redeliveries from queues."""
        queues = MessageCounts()
        channels = MessageCounts()
        for vhost in self.context.broker.vhosts.values():
            queues.add(vhost.retired_queue_counts)
            channels.add(vhost.retired_channel_counts)
            for queue in vhost.queues.values():
                queues.add(queue.counts)
        for session in self.context.sessions:
            for handler in session.handlers.values():
                channels.add(handler.channel.counts)
        queues.publish = channels.publish
        queues.confirm = channels.confirm
        queues.return_unroutable = channels.return_unroutable
        return queues

    def node_counter_values(self) -> tuple[int, ...]:
        counts = self.node_counts()
        return tuple(getattr(counts, name) for name in NODE_COUNTERS)

    def open_sessions(self) -> list[ClientSession]:
        return [
            session
            for session in self.context.sessions
            if session.broker_connection is not None and not session.broker_connection.closed
        ]

    def users(self) -> list[dict[str, Json]]:
        """The config's users as the API and the definitions export show them."""
        return [
            {
                "name": user.name,
                "tags": list(user.tags),
                "password_hash": user.password_hash,
                "hashing_algorithm": _hashing_algorithm_name(
                    user.password_hash, user.hashing_algorithm
                ),
                "limits": _present_limits(
                    {
                        "max-connections": user.limits.connections_max,
                        "max-channels": user.limits.channels_max,
                    }
                ),
            }
            for user in self.config().users
        ]

    def topic_permissions(self) -> list[dict[str, Json]]:
        return [
            {
                "user": topic.user,
                "vhost": topic.vhost,
                "exchange": topic.exchange,
                "write": topic.write,
                "read": topic.read,
            }
            for topic in self.config().topic_permissions
        ]

    def permissions(self) -> list[dict[str, Json]]:
        """Every user's rights in every vhost, as the config grants them."""
        config = self.config()
        authenticator = self.context.authenticator
        items = []
        for user in config.users:
            for vhost in config.vhost_names:
                grant = authenticator.grant(user.name, vhost)
                if grant is not None:
                    items.append(
                        {
                            "user": user.name,
                            "vhost": vhost,
                            "configure": grant.configure,
                            "write": grant.write,
                            "read": grant.read,
                        }
                    )
        return items

    # ------------------------------------------------------------------- auth

    async def authenticate(self, request: web.Request) -> Viewer:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise not_authorised("Login failed")
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise not_authorised("Login failed") from None
        context = self.context
        peer = request.remote or ""
        try:
            user = await anyio.to_thread.run_sync(
                context.authenticator.authenticate,
                "PLAIN",
                username,
                password,
                peer,
                limiter=context.password_checks,
            )
        except LoginRefused:
            context.audit.record("login_failed", user=username, peer=peer, mechanism="HTTP")
            raise not_authorised("Login failed") from None
        viewer = Viewer.of(user, context.authenticator, self.config().vhost_names)
        if not viewer.may_manage:
            raise not_authorised("Not management user")
        return viewer

    def access(self, viewer: Viewer, vhost: str) -> Access:
        """What the viewer may do in `vhost` over AMQP: the API acts with those rights."""
        access = self.context.access(viewer.name, vhost)
        if access is None:
            raise not_authorised(f"access to vhost '{vhost}' refused for user '{viewer.name}'")
        return access

    def run_as(self, viewer: Viewer, vhost: VirtualHost, operation: Callable[[Channel], T]) -> T:
        """Run a broker operation on a channel of the viewer's own in `vhost`, with their
        AMQP rights; the broker's refusals come out as the API's errors."""
        with operations.api_channel(vhost, self.access(viewer, vhost.name)) as (channel, _):
            return _run(partial(operation, channel))  # type: ignore[no-any-return]

    def vhost(self, viewer: Viewer, name: str) -> VirtualHost:
        vhost = self.context.broker.vhost(name)
        if vhost is None or not viewer.sees_vhost(name):
            raise not_found(f"vhost '{name}' not found")
        return vhost

    def visible_vhosts(self, viewer: Viewer, only: str | None = None) -> list[VirtualHost]:
        if only is not None:
            return [self.vhost(viewer, only)]
        return [
            vhost
            for name, vhost in sorted(self.context.broker.vhosts.items())
            if viewer.sees_vhost(name)
        ]


# ------------------------------------------------------------------- helpers


def _path_value(item: Mapping[str, Json], path: str) -> Json:
    value: Json = item
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _set_path(target: dict[str, Json], path: str, value: Json) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _sort_key(value: Json) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def listing(request: web.Request, items: list[dict[str, Json]]) -> web.Response:
    """RabbitMQ's list conventions: sort, columns and pagination from the query."""
    query = request.query
    page_text = query.get("page")
    name_filter = query.get("name")
    total = len(items)
    if name_filter:
        if query.get("use_regex") == "true":
            try:
                pattern = re.compile(name_filter)
            except re.error as error:
                raise bad_request(f"bad regular expression: {error}") from None
            items = [item for item in items if pattern.search(str(item.get("name", "")))]
        else:
            items = [item for item in items if name_filter in str(item.get("name", ""))]
    sort = query.get("sort")
    if sort:
        items = sorted(items, key=lambda item: _sort_key(_path_value(item, sort)))
    if query.get("sort_reverse") == "true":
        items = list(reversed(items))
    columns = [column for column in query.get("columns", "").split(",") if column]
    if columns:
        trimmed = []
        for item in items:
            kept: dict[str, Json] = {}
            for column in columns:
                _set_path(kept, column, _path_value(item, column))
            trimmed.append(kept)
        items = trimmed
    if page_text is None:
        return json_response(items)
    try:
        page = int(page_text)
        page_size = int(query.get("page_size", "100"))
    except ValueError:
        raise bad_request("page and page_size must be integers") from None
    if page < 1 or not 1 <= page_size <= PAGE_SIZE_MAX:
        raise bad_request(f"page must be 1 or more, page_size 1 to {PAGE_SIZE_MAX}")
    filtered = len(items)
    page_count = max(1, -(-filtered // page_size))
    start = (page - 1) * page_size
    return json_response(
        {
            "filtered_count": filtered,
            "item_count": len(items[start : start + page_size]),
            "items": items[start : start + page_size],
            "page": page,
            "page_count": page_count,
            "page_size": page_size,
            "total_count": total,
        }
    )


def json_response(value: Json, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(value, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


async def read_json(request: web.Request) -> dict[str, Json]:
    if not request.can_read_body:
        return {}
    try:
        value = json.loads(await request.read() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"the body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object")
    return value


def _segment(request: web.Request, name: str) -> str:
    # Path segments arrive decoded once; RabbitMQ's clients encode "/" as %2F.
    return unquote(request.match_info[name])


# ------------------------------------------------------------------ handlers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Handlers:
    """One method per endpoint; `request[_VIEWER]` is the authenticated user."""

    def __init__(self, api: ManagementApi) -> None:
        self.api = api

    # -- node

    async def overview(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhosts = api.visible_vhosts(viewer)
        queues = [queue for vhost in vhosts for queue in vhost.queues.values()]
        sessions = [
            session
            for session in api.open_sessions()
            if viewer.sees_connection_of(session.username)
        ]
        ready = sum(ready_count(queue) for queue in queues)
        unacked = sum(queue.unacked_count for queue in queues)
        counts = api.node_counts()
        node_rates = api.rates.rates(("node",), len(NODE_COUNTERS))
        message_stats = stats_json(NODE_COUNTERS, counts.as_dict(), node_rates)
        message_stats["deliver_get"] = counts.deliver_get
        message_stats["deliver_get_details"] = {"rate": round(sum(node_rates[3:7]), 2)}
        config = api.config()
        management = config.management
        return json_response(
            {
                "management_version": MANAGEMENT_VERSION,
                "rabbitmq_version": MANAGEMENT_VERSION,
                "product_name": "amqpd",
                "product_version": __version__,
                "cluster_name": api.node,
                "node": api.node,
                "rates_mode": "basic",
                "statistics_db_event_queue": 0,
                "sample_interval_s": management.sample_interval_s,
                "exchange_types": [
                    {"name": name, "description": "", "enabled": True}
                    for name in (
                        "direct",
                        "fanout",
                        "headers",
                        "topic",
                        "x-consistent-hash",
                        "x-delayed-message",
                    )
                ],
                "object_totals": {
                    "connections": len(sessions),
                    "channels": sum(len(session.handlers) for session in sessions),
                    "consumers": sum(queue.consumer_count for queue in queues),
                    "exchanges": sum(len(vhost.exchanges) for vhost in vhosts),
                    "queues": len(queues),
                },
                "queue_totals": {
                    "messages": ready + unacked,
                    "messages_ready": ready,
                    "messages_unacknowledged": unacked,
                },
                "message_stats": message_stats,
                "listeners": [
                    {
                        "node": api.node,
                        "protocol": "amqp/ssl" if tls else "amqp",
                        "ip_address": host,
                        "port": port,
                    }
                    for host, port, tls in api.amqp_addresses()
                ]
                + (
                    [
                        {
                            "node": api.node,
                            "protocol": "http",
                            "ip_address": api.management_address[0],
                            "port": api.management_address[1],
                        }
                    ]
                    if api.management_address is not None
                    else []
                ),
                "alarms": api.context.alarms.active(),
                "uptime_s": round(time.time() - api.started_at_s, 1),
            }
        )

    async def whoami(self, request: web.Request) -> web.Response:
        viewer = request[_VIEWER]
        return json_response({"name": viewer.name, "tags": sorted(viewer.tags)})

    # -- tenancy (owned by the config files)

    def _vhost_items(self, viewer: Viewer) -> list[dict[str, Json]]:
        api = self.api
        settings = {vhost.name: vhost for vhost in api.config().vhosts}
        items = []
        for vhost in api.visible_vhosts(viewer):
            queues = vhost.queues.values()
            ready = sum(ready_count(queue) for queue in queues)
            unacked = sum(queue.unacked_count for queue in queues)
            configured = settings.get(vhost.name)
            items.append(
                {
                    "name": vhost.name,
                    "description": configured.description if configured is not None else "",
                    "tags": [],
                    "tracing": False,
                    "messages": ready + unacked,
                    "messages_ready": ready,
                    "messages_unacknowledged": unacked,
                    "cluster_state": {api.node: "running"},
                }
            )
        return items

    async def vhosts(self, request: web.Request) -> web.Response:
        return listing(request, self._vhost_items(request[_VIEWER]))

    async def vhost(self, request: web.Request) -> web.Response:
        name = _segment(request, "vhost")
        for item in self._vhost_items(request[_VIEWER]):
            if item["name"] == name:
                return json_response(item)
        raise not_found()

    def _require_administrator(self, request: web.Request) -> None:
        if not request[_VIEWER].is_administrator:
            raise not_authorised("Not administrator user")

    async def users(self, request: web.Request) -> web.Response:
        self._require_administrator(request)
        return listing(request, self.api.users())

    async def user(self, request: web.Request) -> web.Response:
        self._require_administrator(request)
        name = _segment(request, "user")
        for item in self.api.users():
            if item["name"] == name:
                return json_response(item)
        raise not_found()

    async def permissions(self, request: web.Request) -> web.Response:
        self._require_administrator(request)
        items = self.api.permissions()
        vhost = request.match_info.get("vhost")
        user = request.match_info.get("user")
        if vhost is not None:
            items = [item for item in items if item["vhost"] == unquote(vhost)]
        if user is not None:
            matched = [item for item in items if item["user"] == unquote(user)]
            if not matched:
                raise not_found()
            return json_response(matched[0])
        return listing(request, items)

    async def topic_permissions(self, request: web.Request) -> web.Response:
        self._require_administrator(request)
        return listing(request, self.api.topic_permissions())

    async def policies(self, request: web.Request) -> web.Response:
        viewer = request[_VIEWER]
        vhost = request.match_info.get("vhost")
        items = [
            _policy_json(policy)
            for policy in self.api.config().policies
            if viewer.sees_vhost(policy.vhost) and (vhost is None or policy.vhost == unquote(vhost))
        ]
        return listing(request, items)

    async def refuse_users(self, request: web.Request) -> web.Response:
        raise owned_by_config("users", "users")

    async def refuse_vhosts(self, request: web.Request) -> web.Response:
        raise owned_by_config("vhosts", "vhosts")

    async def refuse_permissions(self, request: web.Request) -> web.Response:
        raise owned_by_config("permissions", "permissions")

    async def refuse_policies(self, request: web.Request) -> web.Response:
        raise owned_by_config("policies", "policies")

    # -- exchanges

    async def exchanges(self, request: web.Request) -> web.Response:
        vhost = request.match_info.get("vhost")
        items = [
            exchange_json(exchange)
            for each in self.api.visible_vhosts(request[_VIEWER], unquote(vhost) if vhost else None)
            for exchange in each.exchanges.values()
        ]
        return listing(request, items)

    async def exchange(self, request: web.Request) -> web.Response:
        vhost = self.api.vhost(request[_VIEWER], _segment(request, "vhost"))
        exchange = vhost.exchanges.get(_segment(request, "name"))
        if exchange is None:
            raise not_found()
        return json_response(exchange_json(exchange))

    async def declare_exchange(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost = api.vhost(viewer, _segment(request, "vhost"))
        name = _segment(request, "name")
        body = await read_json(request)
        kind = body.get("type")
        if not isinstance(kind, str):
            raise bad_request("'type' is required")
        api.run_as(
            viewer,
            vhost,
            lambda channel: channel.declare_exchange(
                name,
                kind,
                passive=False,
                durable=_flag(body, "durable", True),
                auto_delete=_flag(body, "auto_delete", False),
                internal=_flag(body, "internal", False),
                arguments=_arguments(body),
            ),
        )
        api.context.audit.record(
            "exchange_declared", user=viewer.name, vhost=vhost.name, exchange=name, via="http"
        )
        return web.Response(status=201)

    async def delete_exchange(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost = api.vhost(viewer, _segment(request, "vhost"))
        name = _segment(request, "name")
        if name not in vhost.exchanges:
            raise not_found()
        api.run_as(
            viewer,
            vhost,
            lambda channel: channel.delete_exchange(
                name, if_unused=request.query.get("if-unused") == "true"
            ),
        )
        api.context.audit.record(
            "exchange_deleted", user=viewer.name, vhost=vhost.name, exchange=name, via="http"
        )
        return web.Response(status=204)

    async def publish(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost = api.vhost(viewer, _segment(request, "vhost"))
        name = _segment(request, "name")
        exchange = "" if name == "amq.default" else name
        body = await read_json(request)
        routing_key = body.get("routing_key", "")
        payload = body.get("payload", "")
        encoding = body.get("payload_encoding", "string")
        if not isinstance(routing_key, str) or not isinstance(payload, str):
            raise bad_request("'routing_key' and 'payload' must be strings")
        if encoding == "string":
            data = payload.encode()
        elif encoding == "base64":
            try:
                data = base64.b64decode(payload, validate=True)
            except binascii.Error:
                raise bad_request("'payload' is not base64") from None
        else:
            raise bad_request("'payload_encoding' must be string or base64")
        properties = _properties(body.get("properties") or {})
        try:
            routed = await operations.publish(
                vhost, api.access(viewer, vhost.name), exchange, routing_key, properties, data
            )
        except AMQPException as error:
            raise from_amqp(error) from None
        return json_response({"routed": routed})

    # -- queues

    async def queues(self, request: web.Request) -> web.Response:
        api = self.api
        vhost = request.match_info.get("vhost")
        items = [
            queue_json(queue, api.node, api.rates)
            for each in api.visible_vhosts(request[_VIEWER], unquote(vhost) if vhost else None)
            for queue in each.queues.values()
        ]
        return listing(request, items)

    def _queue(self, request: web.Request) -> tuple[VirtualHost, Queue]:
        vhost = self.api.vhost(request[_VIEWER], _segment(request, "vhost"))
        queue = vhost.queues.get(_segment(request, "name"))
        if queue is None:
            raise not_found()
        return vhost, queue

    async def queue(self, request: web.Request) -> web.Response:
        _, queue = self._queue(request)
        return json_response(queue_json(queue, self.api.node, self.api.rates))

    async def declare_queue(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost = api.vhost(viewer, _segment(request, "vhost"))
        name = _segment(request, "name")
        body = await read_json(request)
        api.run_as(
            viewer,
            vhost,
            lambda channel: channel.declare_queue(
                name,
                passive=False,
                durable=_flag(body, "durable", True),
                exclusive=False,
                auto_delete=_flag(body, "auto_delete", False),
                arguments=_arguments(body),
            ),
        )
        api.context.audit.record(
            "queue_declared", user=viewer.name, vhost=vhost.name, queue=name, via="http"
        )
        return web.Response(status=201)

    async def delete_queue(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost, queue = self._queue(request)
        api.run_as(
            viewer,
            vhost,
            lambda channel: channel.delete_queue(
                queue.name,
                if_unused=request.query.get("if-unused") == "true",
                if_empty=request.query.get("if-empty") == "true",
            ),
        )
        api.context.audit.record(
            "queue_deleted", user=viewer.name, vhost=vhost.name, queue=queue.name, via="http"
        )
        return web.Response(status=204)

    async def purge_queue(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost, queue = self._queue(request)
        purged = api.run_as(viewer, vhost, lambda channel: channel.purge(queue.name))
        api.context.audit.record(
            "queue_purged",
            user=viewer.name,
            vhost=vhost.name,
            queue=queue.name,
            messages=purged,
            via="http",
        )
        return web.Response(status=204)

    async def stream_groups(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost, queue = self._queue(request)
        stream = api.run_as(viewer, vhost, lambda channel: channel.stream(queue.name))
        end = stream.next_offset
        return json_response([group_json(group, end) for group in stream.groups.values()])

    async def reset_group(self, request: web.Request) -> web.Response:
        """PUT {"offset": first|last|next|<offset>|<interval>} or {"timestamp": <seconds>}:
        the operator's rewind of a stream's consumer group (made if new)."""
        api, viewer = self.api, request[_VIEWER]
        vhost, queue = self._queue(request)
        name = _segment(request, "group")
        body = await read_json(request)
        offset: FieldValue
        if "timestamp" in body:
            seconds = body["timestamp"]
            if isinstance(seconds, bool) or not isinstance(seconds, int):
                raise bad_request("timestamp must be a whole number of seconds")
            offset = Timestamp(seconds)
        else:
            value = body.get("offset")
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise bad_request('"offset" (first, last, next, a number or "1h") is needed')
            offset = value
        group = api.run_as(
            viewer, vhost, lambda channel: channel.reset_group(queue.name, name, offset)
        )
        api.context.audit.record(
            "group_reset",
            user=viewer.name,
            vhost=vhost.name,
            queue=queue.name,
            group=name,
            offset=group.committed,
            via="http",
        )
        assert isinstance(queue, StreamQueue)
        return json_response(group_json(group, queue.next_offset))

    async def delete_group(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost, queue = self._queue(request)
        name = _segment(request, "group")
        api.run_as(viewer, vhost, lambda channel: channel.delete_group(queue.name, name))
        api.context.audit.record(
            "group_deleted", user=viewer.name, vhost=vhost.name, queue=queue.name, group=name
        )
        return web.Response(status=204)

    async def get_messages(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost, queue = self._queue(request)
        body = await read_json(request)
        count = body.get("count", 1)
        ackmode = body.get("ackmode", "ack_requeue_true")
        encoding = body.get("encoding", "auto")
        truncate = body.get("truncate")
        limit = api.config().management.get_bytes_max
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if not isinstance(count, int) or count < 1:
            raise bad_request("'count' must be a positive integer")
        if ackmode not in operations.ACK_MODES:
            raise bad_request(f"'ackmode' must be one of {', '.join(operations.ACK_MODES)}")
        if encoding not in ("auto", "base64"):
            raise bad_request("'encoding' must be auto or base64")
        if isinstance(truncate, str) and truncate.isdigit():
            truncate = int(truncate)
        truncate_bytes = (
            min(truncate, limit) if isinstance(truncate, int) and truncate >= 0 else limit
        )
        messages = _run(
            partial(
                operations.get,
                vhost,
                api.access(viewer, vhost.name),
                queue.name,
                count,
                ackmode,
                encoding,
                truncate_bytes,
            )
        )
        return json_response(messages)

    # -- bindings

    def _bindings(self, viewer: Viewer, vhost: str | None) -> list[dict[str, Json]]:
        items = []
        for each in self.api.visible_vhosts(viewer, vhost):
            for queue in each.queues.values():
                # RabbitMQ lists every queue's implicit binding to the default exchange.
                items.append(
                    {
                        "source": "",
                        "vhost": each.name,
                        "destination": queue.name,
                        "destination_type": "queue",
                        "routing_key": queue.name,
                        "arguments": {},
                        "properties_key": quote_binding_key(queue.name),
                    }
                )
            items.extend(binding_json(each.name, binding) for binding in each.bindings())
        return items

    async def bindings(self, request: web.Request) -> web.Response:
        vhost = request.match_info.get("vhost")
        items = self._bindings(request[_VIEWER], unquote(vhost) if vhost else None)
        source = request.match_info.get("source")
        destination = request.match_info.get("destination")
        if source is not None:
            source_name = _segment(request, "source")
            items = [item for item in items if item["source"] == source_name]
        if destination is not None:
            kind = "queue" if request.match_info["kind"] == "q" else "exchange"
            destination_name = _segment(request, "destination")
            items = [
                item
                for item in items
                if item["destination"] == destination_name and item["destination_type"] == kind
            ]
        return listing(request, items)

    async def queue_bindings(self, request: web.Request) -> web.Response:
        vhost, queue = self._queue(request)
        items = [
            item
            for item in self._bindings(request[_VIEWER], vhost.name)
            if item["destination"] == queue.name and item["destination_type"] == "queue"
        ]
        return listing(request, items)

    async def bind(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost = api.vhost(viewer, _segment(request, "vhost"))
        source = _segment(request, "source")
        destination = _segment(request, "destination")
        to_queue = request.match_info["kind"] == "q"
        body = await read_json(request)
        routing_key = body.get("routing_key", "")
        if not isinstance(routing_key, str):
            raise bad_request("'routing_key' must be a string")
        arguments = _arguments(body)
        if to_queue:
            api.run_as(
                viewer,
                vhost,
                lambda channel: channel.bind_queue(destination, source, routing_key, arguments),
            )
        else:
            api.run_as(
                viewer,
                vhost,
                lambda channel: channel.bind_exchange(source, destination, routing_key, arguments),
            )
        api.context.audit.record(
            "binding_created",
            user=viewer.name,
            vhost=vhost.name,
            source=source,
            destination=destination,
            routing_key=routing_key,
            via="http",
        )
        key = quote_binding_key(routing_key) if not arguments else ""
        response = web.Response(status=201)
        if key:
            response.headers["Location"] = key
        return response

    async def unbind(self, request: web.Request) -> web.Response:
        api, viewer = self.api, request[_VIEWER]
        vhost = api.vhost(viewer, _segment(request, "vhost"))
        source = _segment(request, "source")
        destination = _segment(request, "destination")
        to_queue = request.match_info["kind"] == "q"
        wanted = _segment(request, "props")
        exchange = vhost.exchanges.get(source)
        found = None
        if exchange is not None:
            for binding in exchange.bindings.values():
                if (
                    binding.destination.name == destination
                    and binding.destination.kind == ("queue" if to_queue else "exchange")
                    and properties_key(binding) == wanted
                ):
                    found = binding
                    break
        if found is None:
            raise not_found()
        key, arguments = found.routing_key, found.arguments
        if to_queue:
            api.run_as(
                viewer,
                vhost,
                lambda channel: channel.unbind_queue(destination, source, key, arguments),
            )
        else:
            api.run_as(
                viewer,
                vhost,
                lambda channel: channel.unbind_exchange(source, destination, key, arguments),
            )
        api.context.audit.record(
            "binding_deleted",
            user=viewer.name,
            vhost=vhost.name,
            source=source,
            destination=destination,
            routing_key=found.routing_key,
            via="http",
        )
        return web.Response(status=204)

    # -- connections, channels, consumers

    def _sessions(self, viewer: Viewer, vhost: str | None = None) -> list[ClientSession]:
        return [
            session
            for session in self.api.open_sessions()
            if viewer.sees_connection_of(session.username)
            and (vhost is None or session.broker_connection.vhost.name == vhost)  # type: ignore[union-attr]
        ]

    async def connections(self, request: web.Request) -> web.Response:
        vhost = request.match_info.get("vhost")
        sessions = self._sessions(request[_VIEWER], unquote(vhost) if vhost else None)
        return listing(request, [connection_json(session, self.api.node) for session in sessions])

    def _session(self, request: web.Request) -> ClientSession:
        name = _segment(request, "name")
        for session in self._sessions(request[_VIEWER]):
            if session.name == name:
                return session
        raise not_found()

    async def connection(self, request: web.Request) -> web.Response:
        return json_response(connection_json(self._session(request), self.api.node))

    async def close_connection(self, request: web.Request) -> web.Response:
        viewer = request[_VIEWER]
        session = self._session(request)
        if not viewer.may_close_connection_of(session.username):
            raise not_authorised("Not administrator user")
        reason = request.headers.get("X-Reason", "Closed via management plugin")
        session.force_close(reason)
        self.api.context.audit.record(
            "connection_closed",
            user=viewer.name,
            connection=session.name,
            reason=reason,
            via="http",
        )
        return web.Response(status=204)

    async def connection_channels(self, request: web.Request) -> web.Response:
        session = self._session(request)
        api = self.api
        return listing(
            request,
            [
                channel_json(session, handler, api.node, api.rates)
                for handler in session.handlers.values()
            ],
        )

    async def channels(self, request: web.Request) -> web.Response:
        api = self.api
        vhost = request.match_info.get("vhost")
        items = [
            channel_json(session, handler, api.node, api.rates)
            for session in self._sessions(request[_VIEWER], unquote(vhost) if vhost else None)
            for handler in session.handlers.values()
        ]
        return listing(request, items)

    async def channel(self, request: web.Request) -> web.Response:
        name = _segment(request, "name")
        api = self.api
        for session in self._sessions(request[_VIEWER]):
            for handler in session.handlers.values():
                if channel_name(session, handler.number) == name:
                    return json_response(channel_json(session, handler, api.node, api.rates))
        raise not_found()

    async def consumers(self, request: web.Request) -> web.Response:
        viewer = request[_VIEWER]
        vhost = request.match_info.get("vhost")
        only = unquote(vhost) if vhost else None
        if only is not None:
            self.api.vhost(viewer, only)
        items = []
        for session in self.api.open_sessions():
            connection = session.broker_connection
            assert connection is not None
            if not viewer.sees_vhost(connection.vhost.name) or (
                only is not None and connection.vhost.name != only
            ):
                continue
            for handler in session.handlers.values():
                for consumer in handler.channel.consumers.values():
                    items.append(consumer_json(session, handler, consumer))
        return listing(request, items)

    # -- definitions

    async def definitions(self, request: web.Request) -> web.Response:
        self._require_administrator(request)
        vhost = request.match_info.get("vhost")
        exported = export_definitions(self.api, unquote(vhost) if vhost else None)
        response = json_response(exported)
        if request.query.get("download"):
            response.headers["Content-Disposition"] = (
                f'attachment; filename="{request.query["download"]}"'
            )
        return response

    async def refuse_definitions_import(self, request: web.Request) -> web.Response:
        raise ApiError(
            405,
            "method_not_allowed",
            "definitions are imported at start: name the export with --definitions (or the "
            "definitions_file key) and restart, or add its entries to the config files",
        )

    # -- health checks

    def _alarms_check(self, reason: str) -> web.Response:
        alarms = self.api.context.alarms.active()
        if not alarms:
            return json_response({"status": "ok"})
        return json_response(
            {
                "status": "failed",
                "reason": reason,
                "alarms": [{"node": self.api.node, "resource": name} for name in alarms],
            },
            status=503,
        )

    async def health_alarms(self, request: web.Request) -> web.Response:
        return self._alarms_check("resource alarm(s) in effect in the cluster")

    async def health_local_alarms(self, request: web.Request) -> web.Response:
        return self._alarms_check("resource alarm(s) in effect on the node")

    async def health_ok(self, request: web.Request) -> web.Response:
        # A single node holds no replicas another node depends on.
        return json_response({"status": "ok"})

    async def health_virtual_hosts(self, request: web.Request) -> web.Response:
        configured = set(self.api.config().vhost_names)
        running = set(self.api.context.broker.vhosts)
        down = sorted(configured - running)
        if down:
            return json_response(
                {"status": "failed", "reason": "Some virtual hosts are down", "missing": down},
                status=503,
            )
        return json_response({"status": "ok"})

    async def health_port_listener(self, request: web.Request) -> web.Response:
        try:
            port = int(request.match_info["port"])
        except ValueError:
            raise bad_request("the port must be a number") from None
        ports = self._listener_ports()
        if any(port in values for values in ports.values()):
            return json_response({"status": "ok", "port": port})
        return json_response(
            {"status": "failed", "reason": f"No active listener on port {port}", "missing": port},
            status=503,
        )

    def _listener_ports(self) -> dict[str, set[int]]:
        api = self.api
        ports: dict[str, set[int]] = {}
        for _, port, tls in api.amqp_addresses():
            ports.setdefault("amqp/ssl" if tls else "amqp", set()).add(port)
        if api.management_address is not None:
            ports.setdefault("http", set()).add(api.management_address[1])
        return ports

    async def health_protocol_listener(self, request: web.Request) -> web.Response:
        protocol = request.match_info["protocol"].lower()
        protocol = {
            "amqp091": "amqp",
            "amqp0-9-1": "amqp",
            "amqps": "amqp/ssl",
            "https": "http",
        }.get(protocol, protocol)
        if protocol in self._listener_ports():
            return json_response({"status": "ok", "protocol": protocol})
        return json_response(
            {
                "status": "failed",
                "reason": f"No active listener for protocol {protocol}",
                "missing": protocol,
            },
            status=503,
        )

    async def aliveness(self, request: web.Request) -> web.Response:
        self.api.vhost(request[_VIEWER], _segment(request, "vhost"))
        return json_response({"status": "ok"})


# ------------------------------------------------------------------- helpers


def _run(operation: Callable[[], Any]) -> Any:
    """A broker operation as the user: AMQP refusals become the API's errors."""
    try:
        return operation()
    except AMQPException as error:
        raise from_amqp(error) from None


def _flag(body: Mapping[str, Json], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if isinstance(value, str):
        value = value.lower() == "true"
    if not isinstance(value, bool):
        raise bad_request(f"'{key}' must be true or false")
    return value


def _arguments(body: Mapping[str, Json]) -> dict[str, Any]:
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise bad_request("'arguments' must be an object")
    return arguments


_PROPERTY_TYPES: Final = {
    "content_type": str,
    "content_encoding": str,
    "delivery_mode": int,
    "priority": int,
    "correlation_id": str,
    "reply_to": str,
    "expiration": str,
    "message_id": str,
    "timestamp": int,
    "type": str,
    "user_id": str,
    "app_id": str,
    "cluster_id": str,
}


def _properties(raw: Json) -> BasicProperties:
    if not isinstance(raw, dict):
        raise bad_request("'properties' must be an object")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "headers":
            if not isinstance(value, dict):
                raise bad_request("'properties.headers' must be an object")
            values["headers"] = value
            continue
        kind = _PROPERTY_TYPES.get(key)
        if kind is None:
            raise bad_request(f"unknown property '{key}'")
        if kind is int and isinstance(value, str) and value.isdigit():
            value = int(value)
        if kind is str and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad_request(f"'properties.{key}' must be a {kind.__name__}")
        values[key] = value
    return BasicProperties(**values)


def _present_limits(limits: Mapping[str, int | None]) -> dict[str, int]:
    return {name: value for name, value in limits.items() if value is not None}


def _hashing_algorithm_name(password_hash: str, configured: str | None) -> str:
    short = hash_algorithm(password_hash, configured)
    return ALGORITHM_NAMES.get(short, short)


def _policy_json(policy: ConfigPolicy) -> dict[str, Json]:
    return {
        "vhost": policy.vhost,
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to,
        "definition": dict(policy.definition),
        "priority": policy.priority,
    }


def export_definitions(api: ManagementApi, only_vhost: str | None = None) -> dict[str, Json]:
    """RabbitMQ's definitions export: what `--definitions` (and RabbitMQ) can import."""
    config = api.config()
    broker = api.context.broker
    vhosts = [vhost for name, vhost in sorted(broker.vhosts.items()) if only_vhost in (None, name)]
    queues, exchanges, bindings = [], [], []
    for vhost in vhosts:
        for queue in vhost.queues.values():
            if queue.exclusive:
                continue
            queues.append(
                {
                    "name": queue.name,
                    "vhost": vhost.name,
                    "durable": queue.durable,
                    "auto_delete": queue.auto_delete,
                    "arguments": _json_arguments(queue.arguments),
                    "type": "classic",
                }
            )
        for exchange in vhost.exchanges.values():
            if exchange.name == "" or exchange.name.startswith("amq."):
                continue
            exchanges.append(
                {
                    "name": exchange.name,
                    "vhost": vhost.name,
                    "type": exchange.type_name,
                    "durable": exchange.durable,
                    "auto_delete": exchange.auto_delete,
                    "internal": exchange.internal,
                    "arguments": _json_arguments(exchange.arguments),
                }
            )
        for binding in vhost.bindings():
            shown = binding_json(vhost.name, binding)
            del shown["properties_key"]
            bindings.append(shown)
    exported: dict[str, Json] = {
        "rabbit_version": MANAGEMENT_VERSION,
        "rabbitmq_version": MANAGEMENT_VERSION,
        "product_name": "amqpd",
        "product_version": __version__,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
        "policies": [
            _policy_json(policy) for policy in config.policies if only_vhost in (None, policy.vhost)
        ],
        "parameters": [],
    }
    if only_vhost is not None:
        return exported
    exported.update(
        {
            "users": api.users(),
            "vhosts": [
                {
                    "name": vhost.name,
                    "limits": _present_limits(
                        {
                            "max-connections": vhost.limits.connections_max,
                            "max-queues": vhost.limits.queues_max,
                        }
                    ),
                    "metadata": {"description": vhost.description, "tags": []},
                }
                for vhost in config.vhosts
            ],
            "permissions": api.permissions(),
            "topic_permissions": api.topic_permissions(),
            "global_parameters": [],
        }
    )
    return exported


def _json_arguments(arguments: Mapping[str, Any]) -> dict[str, Json]:
    return table_json(dict(arguments))
