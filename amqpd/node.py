"""The composition root: config -> data dir -> store -> auth -> broker -> listeners.

The only module that wires the layers together. `Node.start` locks the data folder,
recovers the store (logging how long it took and what it found), rebuilds the durable
vhost contents, declares what a RabbitMQ definitions export adds (logging what it could
not apply) and binds every listener; `Node.serve` reports ready, serves until
`request_shutdown`, then sends every client 320 CONNECTION_FORCED, waits (bounded) for
them to leave, and writes and fsyncs what is left.

Imports everything below it; nothing imports it but cli.py and tests.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO

import anyio
import anyio.abc
import attrs

from amqpd.auth.users import Authenticator
from amqpd.broker.broker import Broker
from amqpd.broker.definitions import Definition, decode
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.policies import Policy
from amqpd.broker.queue import KIND_TRANSIENT
from amqpd.broker.vhost import BrokerServices, VirtualHost
from amqpd.codec.fields import FieldTable, FieldValue
from amqpd.config.definitions import (
    Arguments,
    BindingDeclaration,
    Definitions,
    DefinitionsReport,
    ExchangeDeclaration,
    JsonValue,
    Problem,
    QueueDeclaration,
    definitions_report,
)
from amqpd.config.load import ConfigError
from amqpd.config.model import TENANCY_KEYS, ServerConfig
from amqpd.config.tls import TlsSettingsError, server_context
from amqpd.errors import AMQPException
from amqpd.management.api import ManagementApi
from amqpd.management.app import serve_management, serve_prometheus
from amqpd.server.alarms import (
    memory_watermark_bytes,
    resident_bytes,
    watch_disk,
    watch_memory,
)
from amqpd.server.audit import AuditLog
from amqpd.server.context import ServerContext
from amqpd.server.listener import AmqpListener, Endpoint, bound_address, open_listeners, serve
from amqpd.server.storage import StoreDriver, StoreQueueStorage
from amqpd.server.timer_driver import TimerDriver
from amqpd.store import FileSystem, FsyncPolicy, Partition, Store, StoreSettings

log = logging.getLogger("amqpd")

LOCK_FILE_NAME = "amqpd.lock"
STORE_DIR_NAME = "store"


class DataDirInUse(Exception):
    """Another broker holds the data directory."""


class Node:
    def __init__(
        self,
        config: ServerConfig,
        fs: FileSystem | None = None,
        definitions: Definitions | None = None,
    ) -> None:
        self.config = config
        # A RabbitMQ definitions export already merged into `config`: its exchanges,
        # queues and bindings are declared at start, its problems logged then.
        self.definitions = definitions
        self.definitions_report: DefinitionsReport | None = None
        self._fs = fs  # the store's file-system seam (tests inject faults through it)
        self.addresses: list[tuple[str, int]] = []
        self.exit_code = 0
        self._stop = anyio.Event()
        self._lock_file: IO[str] | None = None
        self._listeners: list[AmqpListener] = []
        self.store: Store | None = None
        self._driver: StoreDriver | None = None
        self._context: ServerContext | None = None
        self.management: ManagementApi | None = None
        # Where the management API listens, once serving (None: it is off).
        self.management_address: tuple[str, int] | None = None
        # Where the Prometheus-only listener listens (None: it is off).
        self.prometheus_address: tuple[str, int] | None = None

    @property
    def context(self) -> ServerContext:
        assert self._context is not None, "the node has not started"
        return self._context

    @property
    def shutdown_requested(self) -> bool:
        return self._stop.is_set()

    def request_shutdown(self) -> None:
        self._stop.set()

    def fail(self, error: BaseException) -> None:
        """Stop with a non-zero exit: the store can no longer be trusted."""
        self.exit_code = 1
        self._stop.set()

    def reload(self, config: ServerConfig) -> None:
        """Apply a config read again (SIGHUP, `amqpd reload`): the tenancy (vhosts, users,
        permissions, limits) and policies at once; anything else that changed waits for a
        restart, and says so. The next method on an open channel is checked against the
        new permissions; connections of a user or vhost no longer configured are closed
        with 320 CONNECTION_FORCED."""
        running = self.config
        context = self.context
        broker = context.broker
        configure_vhosts(broker, config)
        context.apply_tenancy(
            Authenticator.from_config(config), {vhost.name: vhost for vhost in config.vhosts}
        )
        removed = set(running.vhost_names) - set(config.vhost_names)
        for name in sorted(removed):
            log.warning(
                "vhost '%s' is no longer configured: its connections were closed and it "
                "accepts none; its queues stay until the next restart, which deletes them "
                "unless the vhost is listed again",
                name,
            )
        self.config = attrs.evolve(running, **{key: getattr(config, key) for key in TENANCY_KEYS})
        log.info(
            "config reloaded: %d vhost(s), %d user(s), %d permission(s), %d policies in force",
            len(config.vhosts),
            len(config.users),
            len(config.permissions) + sum(len(user.vhosts) for user in config.users),
            len(config.policies),
        )
        context.audit.record(
            "config_reloaded",
            vhosts=len(config.vhosts),
            users=len(config.users),
            vhosts_removed=sorted(removed) or None,
        )
        waiting = [
            field.name
            for field in attrs.fields(ServerConfig)
            if field.name not in TENANCY_KEYS
            and getattr(running, field.name) != getattr(config, field.name)
        ]
        if waiting:
            log.warning(
                "config reloaded: %s changed; applied at the next restart", ", ".join(waiting)
            )

    def abort_connections(self) -> None:
        """Drop every connection now, without waiting for close-ok."""
        for session in list(self.context.sessions):
            session.abort()

    async def start(self) -> None:
        """Lock the data folder, recover, and bind every listener: failing here, nothing runs."""
        config = self.config
        self._lock_data_dir(config.data_dir)
        try:
            self._context = await self._recover()
            self._listeners = await open_listeners(endpoints(config))
        except BaseException:
            if self.store is not None:
                self.store.close()
            self._unlock_data_dir()
            raise
        self.addresses = [bound_address(listener) for listener in self._listeners]

    async def _recover(self) -> ServerContext:
        config = self.config
        started = time.monotonic()
        settings = StoreSettings(
            fsync=FsyncPolicy.parse(config.storage.fsync),
            segment_bytes_max=config.storage.segment_bytes_max,
        )
        root = config.data_dir / STORE_DIR_NAME
        store = self.store = await anyio.to_thread.run_sync(
            lambda: Store.open(root, settings, self._fs, discard_kinds=frozenset({KIND_TRANSIENT}))
        )
        limits = config.limits
        broker = Broker(
            config.vhost_names,
            BrokerServices(
                storage=StoreQueueStorage(store),
                definitions=store.definitions,
                memory=MemoryBudget(limits.queue_memory_bytes_max, limits.memory_bytes_max),
                consumer_timeout_ms=limits.consumer_timeout_ms or None,
                delay_ms_max=limits.delay_ms_max,
            ),
        )
        configure_vhosts(broker, config)
        definitions: list[Definition] = []
        for value in store.definitions.items().values():
            try:
                definitions.append(decode(value))
            except ValueError as error:
                log.error("definitions journal: an entry could not be read (%s); skipped", error)
        attached: set[str] = set()

        def recovered_log(key: str) -> list[Partition] | None:
            found = store.logs.get(key)
            if found is None or not found.durable:
                return None
            attached.add(key)
            return found.partitions

        for problem in broker.restore(definitions, recovered_log):
            log.warning("not restored: %s", problem)
        for name, stored in list(store.logs.items()):
            if stored.durable and name not in attached and not _belongs_to_a_queue(broker, name):
                log.warning("deleting the log of a queue that no longer exists: %r", name)
                store.delete_log(name)
        queues = sum(len(vhost.queues) for vhost in broker.vhosts.values())
        messages = sum(
            queue.message_count
            for vhost in broker.vhosts.values()
            for queue in vhost.queues.values()
        )
        log.info(
            "recovered %d durable queue(s) holding %d message(s) in %.2f s",
            queues,
            messages,
            time.monotonic() - started,
        )
        if self.definitions is not None:
            # After the durable state: what is already there (from an earlier start with
            # the same export) is left alone, as a redeclare would.
            self.definitions_report = report = definitions_report(
                self.definitions, apply_definitions(broker, self.definitions)
            )
            log_definitions_report(report, self.definitions.notes)
        _log_waiting(broker)
        slow_operation_s = slow_seconds(config.slow_operation_ms)
        self._driver = StoreDriver(store, broker, self.fail, slow_operation_s)
        return ServerContext(
            broker=broker,
            authenticator=Authenticator.from_config(config),
            limits=limits,
            authentication=config.authentication,
            vhost_settings={vhost.name: vhost for vhost in config.vhosts},
            audit=AuditLog(audit_log_path(config)),
            before_send=self._driver.write_now,
            slow_operation_s=slow_operation_s,
        )

    async def serve(self, on_ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
        """Serve until request_shutdown(), then close every connection gracefully."""
        listeners = self._listeners
        context = self.context
        driver = self._driver
        assert driver is not None
        limits = self.config.limits
        try:
            async with anyio.create_task_group() as services:
                services.start_soon(driver.run)
                services.start_soon(TimerDriver(context.broker.services.timers).run)
                services.start_soon(
                    watch_disk,
                    context.alarms,
                    self.config.data_dir,
                    limits.disk_free_bytes_min,
                    limits.disk_check_interval_s,
                )
                self._start_memory_watch(services)
                await self._start_management(services)
                async with anyio.create_task_group() as session_tasks:
                    async with anyio.create_task_group() as accepting:
                        accepting.start_soon(serve, listeners, context, session_tasks)
                        log.info(
                            "amqpd ready: accepting AMQP 0-9-1 connections on %s (data in %s)",
                            ", ".join(
                                f"{host}:{port}" + (" (TLS)" if listener.tls else "")
                                for (host, port), listener in zip(
                                    self.addresses, listeners, strict=True
                                )
                            ),
                            self.config.data_dir,
                        )
                        if on_ready is not None:
                            on_ready(self.addresses)
                        await self._stop.wait()
                        accepting.cancel_scope.cancel()
                    for listener in listeners:
                        await listener.socket.aclose()
                    log.info("shutting down: closing %d connection(s)", len(context.sessions))
                    await self._close_sessions()
                    session_tasks.cancel_scope.cancel()
                if self.exit_code == 0:
                    with anyio.CancelScope(shield=True):
                        await driver.close()
                services.cancel_scope.cancel()
        finally:
            if self.store is not None:
                self.store.close()
            context.audit.close()
            self._unlock_data_dir()
        log.info("amqpd stopped")

    async def _start_management(self, services: anyio.abc.TaskGroup) -> None:
        """The management API, console and metrics, unless the config turns them off."""
        settings = self.config.management
        if not settings.port and not settings.prometheus_port:
            return
        self.management = api = ManagementApi(
            self.context,
            lambda: self.config,
            lambda: [
                (host, port, listener.tls is not None)
                for (host, port), listener in zip(self.addresses, self._listeners, strict=True)
            ],
        )
        if self.store is not None:
            api.store_metrics = self.store.metrics
        if settings.port:
            self.management_address = await services.start(
                serve_management, api, settings.bind, settings.port
            )
            services.start_soon(api.sample_forever, settings.sample_interval_s)
        if settings.prometheus_port:
            self.prometheus_address = await services.start(
                serve_prometheus, api, settings.bind, settings.prometheus_port
            )

    def _start_memory_watch(self, services: anyio.abc.TaskGroup) -> None:
        limits = self.config.limits
        alarms = self.context.alarms
        alarms.disk_free_limit_bytes = limits.disk_free_bytes_min
        try:
            used = resident_bytes()
        except OSError as error:
            log.warning("no memory alarm: the resident size cannot be read here (%s)", error)
            return
        watermark = memory_watermark_bytes(
            limits.memory_high_watermark_fraction, limits.memory_high_watermark_bytes
        )
        alarms.memory_used_bytes, alarms.memory_limit_bytes = used, watermark
        services.start_soon(
            watch_memory,
            alarms,
            self.context.broker.services.memory,
            watermark,
            limits.memory_check_interval_s,
        )

    async def run(self, on_ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
        await self.start()
        await self.serve(on_ready)

    async def _close_sessions(self) -> None:
        context = self.context
        for session in list(context.sessions):
            session.shutdown()
        with anyio.move_on_after(self.config.limits.shutdown_timeout_s):
            await context.all_sessions_ended()
        self.abort_connections()

    def _lock_data_dir(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(data_dir / LOCK_FILE_NAME, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise DataDirInUse(f"data directory {data_dir} is in use by another broker") from None
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file

    def _unlock_data_dir(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def endpoints(config: ServerConfig) -> list[Endpoint]:
    """Where to listen, with a TLS context for each amqps listener. The loader checked
    the TLS files; one that changed since is still a config error."""
    found: list[Endpoint] = []
    for index, listener in enumerate(config.listeners):
        tls = None
        if listener.tls is not None:
            try:
                tls = server_context(listener.tls)
            except TlsSettingsError as error:
                raise ConfigError(f"listeners[{index}].tls.{error.key}: {error.reason}") from None
        found.append(Endpoint(listener.bind, listener.port, tls))
    return found


def slow_seconds(slow_operation_ms: int) -> float:
    """The slow-operation threshold in seconds; 0 (off) is never reached."""
    return slow_operation_ms / 1000 if slow_operation_ms else float("inf")


def audit_log_path(config: ServerConfig) -> Path | None:
    """The audit log's file: a relative path is under the data folder."""
    if config.audit_log is None:
        return None
    return config.data_dir / config.audit_log


def configure_vhosts(broker: Broker, config: ServerConfig) -> None:
    """The config's vhosts (added where missing), their queue limits and policies, as at
    start and on every reload."""
    for vhost in config.vhosts:
        broker.add_vhost(vhost.name).queues_max = vhost.limits.queues_max
    broker.set_policies(broker_policies(config))


def broker_policies(config: ServerConfig) -> dict[str, list[Policy]]:
    """The config's policies as the broker takes them, by vhost."""
    policies: dict[str, list[Policy]] = {}
    for policy in config.policies:
        policies.setdefault(policy.vhost, []).append(
            Policy(
                policy.name,
                re.compile(policy.pattern),
                dict(policy.definition),
                policy.apply_to,
                policy.priority,
            )
        )
    return policies


def apply_definitions(broker: Broker, definitions: Definitions) -> list[Problem]:
    """Declare the export's exchanges, queues and bindings where they are missing, as a
    client's declare would (an equivalent one already there is left alone); returns each
    the broker refused (inequivalent, unknown type, missing vhost or end), by name."""
    refused: list[Problem] = []

    def declare(vhost_name: str, subject: str, action: Callable[[VirtualHost], object]) -> None:
        vhost = broker.vhost(vhost_name)
        try:
            if vhost is None:
                raise LookupError(f"vhost '{vhost_name}' is not configured")
            action(vhost)
        except (AMQPException, LookupError) as error:
            refused.append(Problem(subject, f"not declared: {error}"))

    for exchange in definitions.exchanges:
        declare(exchange.vhost, exchange.subject, partial(_declare_exchange, exchange))
    for queue in definitions.queues:
        declare(queue.vhost, queue.subject, partial(_declare_queue, queue))
    for binding in definitions.bindings:
        declare(binding.vhost, binding.subject, partial(_bind, binding))
    return refused


def _declare_exchange(exchange: ExchangeDeclaration, vhost: VirtualHost) -> None:
    vhost.declare_exchange(
        exchange.name,
        exchange.type,
        durable=exchange.durable,
        auto_delete=exchange.auto_delete,
        internal=exchange.internal,
        arguments=_field_table(exchange.arguments),
    )


def _declare_queue(queue: QueueDeclaration, vhost: VirtualHost) -> None:
    vhost.declare_queue(
        queue.name,
        owner=None,
        durable=queue.durable,
        auto_delete=queue.auto_delete,
        arguments=_field_table(queue.arguments),
    )


def _bind(binding: BindingDeclaration, vhost: VirtualHost) -> None:
    arguments = _field_table(binding.arguments)
    if binding.destination_type == "exchange":
        vhost.bind_exchange(binding.source, binding.destination, binding.routing_key, arguments)
        return
    destination = vhost.queues.get(binding.destination)
    if destination is None:
        raise LookupError(f"no queue '{binding.destination}' in vhost '{binding.vhost}'")
    vhost.bind(binding.source, destination, binding.routing_key, arguments)


def check_definitions(config: ServerConfig, definitions: Definitions) -> DefinitionsReport:
    """The report a start with `config` (already merged with `definitions`) would log, made
    on a scratch broker with no storage: for `amqpd check-config`. It does not know what
    a data folder already holds (an inequivalent queue from an earlier run)."""
    broker = Broker(config.vhost_names)
    configure_vhosts(broker, config)
    return definitions_report(definitions, apply_definitions(broker, definitions))


def log_definitions_report(report: DefinitionsReport, notes: tuple[str, ...] = ()) -> None:
    """Every problem by name (a warning each), the notes, and the one-line summary."""
    for problem in report.problems:
        log.warning("definitions: %s", problem)
    for note in notes:
        log.info("definitions: %s", note)
    log.info("%s", report.summary())


def _field_table(arguments: Arguments) -> FieldTable:
    return {key: _field_value(value) for key, value in arguments.items()}


def _field_value(value: JsonValue) -> FieldValue:
    if isinstance(value, list):
        return [_field_value(item) for item in value]
    if isinstance(value, dict):
        return _field_table(value)
    return value


def _belongs_to_a_queue(broker: Broker, key: str) -> bool:
    return any(
        queue.key == key for vhost in broker.vhosts.values() for queue in vhost.queues.values()
    )


def _log_waiting(broker: Broker) -> None:
    """What waits for its time at start: held delayed messages, returns waiting to retry."""
    for vhost in broker.vhosts.values():
        for exchange in vhost.delayed_exchanges():
            pending = exchange.pending
            if pending is not None and pending.pending_count:
                log.info(
                    "delayed exchange %r in vhost %r: %d message(s) held, the next due %s",
                    exchange.name,
                    vhost.name,
                    pending.pending_count,
                    _due_in(pending.next_release_ms, broker.services.timers.clock_ms()),
                )
        for queue in vhost.queues.values():
            if queue.retrying_count:
                log.info(
                    "queue %r in vhost %r: %d message(s) waiting for a retry",
                    queue.name,
                    vhost.name,
                    queue.retrying_count,
                )


def _due_in(due_ms: int | None, now_ms: int) -> str:
    if due_ms is None or due_ms <= now_ms:
        return "now"
    return f"in {(due_ms - now_ms) / 1000:.1f} s"
