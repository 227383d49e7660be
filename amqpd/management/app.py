"""The management port's aiohttp application: routes, basic auth, JSON errors, and
serving it on the node's event loop.

Imports aiohttp, anyio and amqpd.management.*.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
from aiohttp import web

from amqpd.management.api import _VIEWER, ApiError, Handlers, ManagementApi, json_response
from amqpd.management.console import console_routes
from amqpd.management.metrics import CONTENT_TYPE, render, render_detailed

log = logging.getLogger("amqpd.management")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Requests slower than this are logged as slow operations.
SLOW_REQUEST_S = 1.0


def build_app(api: ManagementApi) -> web.Application:
    handlers = Handlers(api)

    @web.middleware
    async def errors_and_auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.monotonic()
        try:
            if (
                request.path.startswith("/api/") and not request.path.startswith("/api/health/")
            ) or request.path.startswith("/api/health/"):
                request[_VIEWER] = await api.authenticate(request)
            response = await handler(request)
        except ApiError as error:
            response = json_response({"error": error.error, "reason": error.reason}, error.status)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="amqpd management"'
        except web.HTTPException as error:
            if error.status >= 400 and request.path.startswith("/api/"):
                response = json_response(
                    {"error": error.reason.lower().replace(" ", "_"), "reason": error.reason},
                    error.status,
                )
            else:
                raise
        elapsed_s = time.monotonic() - started
        if elapsed_s > SLOW_REQUEST_S:
            log.warning(
                "slow management request: %s %s took %.2f s",
                request.method,
                request.path,
                elapsed_s,
            )
        return response

    app = web.Application(middlewares=[errors_and_auth], client_max_size=16 * 1024 * 1024)
    h = handlers
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("GET", "/api/overview", h.overview),
        ("GET", "/api/whoami", h.whoami),
        ("GET", "/api/vhosts", h.vhosts),
        ("GET", "/api/vhosts/{vhost}", h.vhost),
        ("PUT", "/api/vhosts/{vhost}", h.refuse_vhosts),
        ("DELETE", "/api/vhosts/{vhost}", h.refuse_vhosts),
        ("GET", "/api/users", h.users),
        ("GET", "/api/users/{user}", h.user),
        ("PUT", "/api/users/{user}", h.refuse_users),
        ("DELETE", "/api/users/{user}", h.refuse_users),
        ("POST", "/api/users/bulk-delete", h.refuse_users),
        ("GET", "/api/permissions", h.permissions),
        ("GET", "/api/permissions/{vhost}/{user}", h.permissions),
        ("PUT", "/api/permissions/{vhost}/{user}", h.refuse_permissions),
        ("DELETE", "/api/permissions/{vhost}/{user}", h.refuse_permissions),
        ("GET", "/api/vhosts/{vhost}/permissions", h.permissions),
        ("GET", "/api/topic-permissions", h.topic_permissions),
        ("GET", "/api/policies", h.policies),
        ("GET", "/api/policies/{vhost}", h.policies),
        ("PUT", "/api/policies/{vhost}/{name}", h.refuse_policies),
        ("DELETE", "/api/policies/{vhost}/{name}", h.refuse_policies),
        ("GET", "/api/exchanges", h.exchanges),
        ("GET", "/api/exchanges/{vhost}", h.exchanges),
        ("GET", "/api/exchanges/{vhost}/{name}", h.exchange),
        ("PUT", "/api/exchanges/{vhost}/{name}", h.declare_exchange),
        ("DELETE", "/api/exchanges/{vhost}/{name}", h.delete_exchange),
        ("POST", "/api/exchanges/{vhost}/{name}/publish", h.publish),
        ("GET", "/api/queues", h.queues),
        ("GET", "/api/queues/{vhost}", h.queues),
        ("GET", "/api/queues/{vhost}/{name}", h.queue),
        ("PUT", "/api/queues/{vhost}/{name}", h.declare_queue),
        ("DELETE", "/api/queues/{vhost}/{name}", h.delete_queue),
        ("DELETE", "/api/queues/{vhost}/{name}/contents", h.purge_queue),
        ("POST", "/api/queues/{vhost}/{name}/get", h.get_messages),
        ("GET", "/api/queues/{vhost}/{name}/bindings", h.queue_bindings),
        ("GET", "/api/queues/{vhost}/{name}/groups", h.stream_groups),
        ("PUT", "/api/queues/{vhost}/{name}/groups/{group}", h.reset_group),
        ("DELETE", "/api/queues/{vhost}/{name}/groups/{group}", h.delete_group),
        ("GET", "/api/bindings", h.bindings),
        ("GET", "/api/bindings/{vhost}", h.bindings),
        ("GET", "/api/bindings/{vhost}/e/{source}/{kind:[qe]}/{destination}", h.bindings),
        ("POST", "/api/bindings/{vhost}/e/{source}/{kind:[qe]}/{destination}", h.bind),
        ("DELETE", "/api/bindings/{vhost}/e/{source}/{kind:[qe]}/{destination}/{props}", h.unbind),
        ("GET", "/api/connections", h.connections),
        ("GET", "/api/vhosts/{vhost}/connections", h.connections),
        ("GET", "/api/connections/{name}", h.connection),
        ("DELETE", "/api/connections/{name}", h.close_connection),
        ("GET", "/api/connections/{name}/channels", h.connection_channels),
        ("GET", "/api/channels", h.channels),
        ("GET", "/api/vhosts/{vhost}/channels", h.channels),
        ("GET", "/api/channels/{name}", h.channel),
        ("GET", "/api/consumers", h.consumers),
        ("GET", "/api/consumers/{vhost}", h.consumers),
        ("GET", "/api/definitions", h.definitions),
        ("GET", "/api/definitions/{vhost}", h.definitions),
        ("POST", "/api/definitions", h.refuse_definitions_import),
        ("POST", "/api/definitions/{vhost}", h.refuse_definitions_import),
        ("GET", "/api/aliveness-test/{vhost}", h.aliveness),
        ("GET", "/api/health/checks/alarms", h.health_alarms),
        ("GET", "/api/health/checks/local-alarms", h.health_local_alarms),
        ("GET", "/api/health/checks/virtual-hosts", h.health_virtual_hosts),
        ("GET", "/api/health/checks/port-listener/{port}", h.health_port_listener),
        ("GET", "/api/health/checks/protocol-listener/{protocol}", h.health_protocol_listener),
        ("GET", "/api/health/checks/node-is-quorum-critical", h.health_ok),
        ("GET", "/api/health/checks/node-is-mirror-sync-critical", h.health_ok),
    ]
    routes += console_routes()  # the web console's page and assets: no login
    for method, path, handler in [*routes, *metrics_routes(api)]:
        app.router.add_route(method, path, handler)
    return app


def metrics_routes(api: ManagementApi) -> list[tuple[str, str, Handler]]:
    """Prometheus's paths, served without a login (as RabbitMQ's plugin does)."""

    def text(request: web.Request, body: str) -> web.Response:
        response = web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def metrics(request: web.Request) -> web.Response:
        return text(request, render(api, per_object=False))

    async def per_object(request: web.Request) -> web.Response:
        return text(request, render(api, per_object=True))

    async def detailed(request: web.Request) -> web.Response:
        query = request.query
        return text(
            request, render_detailed(api, query.getall("family", []), query.getall("vhost", []))
        )

    return [
        ("GET", "/metrics", metrics),
        ("GET", "/metrics/per-object", per_object),
        ("GET", "/metrics/detailed", detailed),
    ]


def build_metrics_app(api: ManagementApi) -> web.Application:
    """The Prometheus listener's app: the metrics paths only."""
    app = web.Application()
    for method, path, handler in metrics_routes(api):
        app.router.add_route(method, path, handler)
    return app


async def serve_management(
    api: ManagementApi,
    bind: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the management app on bind:port until cancelled; reports the bound address."""
    await _serve(build_app(api), bind, port, "management API and web console", api, task_status)


async def serve_prometheus(
    api: ManagementApi,
    bind: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve only the metrics paths on bind:port (RabbitMQ's 15692) until cancelled."""
    await _serve(build_metrics_app(api), bind, port, "Prometheus metrics", None, task_status)


async def _serve(
    app: web.Application,
    bind: str,
    port: int,
    what: str,
    api: ManagementApi | None,
    task_status: anyio.abc.TaskStatus[tuple[str, int]],
) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, bind, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        host, bound_port = server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]
        if api is not None:
            api.management_address = (str(host), int(bound_port))
        log.info("%s on http://%s:%d/", what, host, bound_port)
        task_status.started((str(host), int(bound_port)))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
