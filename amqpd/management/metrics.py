"""Prometheus metrics in the text exposition format 0.0.4, with rabbitmq_prometheus's
(RabbitMQ 3.10) metric names, types and HELP texts, plus the store's own `amqpd_store_*`.

Three paths, as RabbitMQ's plugin serves them:
- `/metrics`: aggregated (RabbitMQ's default): node totals, queue depths summed over all
  queues, no per-object labels; its size does not grow with the number of queues.
- `/metrics/per-object`: the same, with the queue series once per queue, labelled
  `vhost` and `queue` (depths, consumers and the channel_queue counters: delivered,
  fetched, redelivered, acked; published per queue is `queue_vhost`/`queue`, as
  RabbitMQ labels it).
- `/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count[&vhost=V]`:
  only the queue families asked for, per queue, named `rabbitmq_detailed_*`.

Counters never fall: node totals include deleted queues and closed channels
(`VirtualHost.retired_queue_counts` and `retired_channel_counts`). RabbitMQ's `protocol`
and `queue_type` labels are kept on the global counters (always `amqp091` and
`rabbit_classic_queue`).

The text is formatted by hand, in one pass over the queues into a list of strings and
one join, with no object per sample: prometheus_client's custom collectors build a
Sample tuple per series and format each one, which measured about 30 times slower
(660 ms against 21 ms for 10,000 queues x 11 families; tools/scrape_bench.py
--prometheus-client), most of the one-second budget on its own. A scrape runs on the
event loop (it reads the broker's state there): about 50 ms for 10,000 queues per object.

Imports amqpd.management.api, amqpd.broker.stats, amqpd.store.metrics and the standard
library.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Final

import attrs

from amqpd import __version__
from amqpd.broker.stats import MessageCounts
from amqpd.management.api import MANAGEMENT_VERSION, ManagementApi
from amqpd.management.present import ready_count
from amqpd.store.metrics import SYNC_BUCKETS_S, StoreMetrics

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# The families /metrics/detailed knows (RabbitMQ's names); others are ignored, as there.
QUEUE_COARSE: Final = "queue_coarse_metrics"
QUEUE_CONSUMER_COUNT: Final = "queue_consumer_count"
DETAILED_FAMILIES: Final = frozenset({QUEUE_COARSE, QUEUE_CONSUMER_COUNT})

_PROTOCOL: Final = '{protocol="amqp091"}'
_CLASSIC: Final = '{protocol="amqp091",queue_type="rabbit_classic_queue"}'
_DEATH_REASONS: Final = ("rejected", "expired", "maxlen", "delivery_limit")
_STATM: Final = Path("/proc/self/statm")
_FDS: Final = Path("/proc/self/fd")
_PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")

# Queue-side counters (MessageCounts fields) and their rabbitmq_prometheus names. Per
# object, RabbitMQ labels these by channel and queue; here by queue (all channels).
_QUEUE_COUNTERS: Final = (
    (
        "deliver",
        "rabbitmq_channel_messages_delivered_ack_total",
        "Total number of messages delivered to consumers in manual acknowledgement mode",
    ),
    (
        "deliver_no_ack",
        "rabbitmq_channel_messages_delivered_total",
        "Total number of messages delivered to consumers in automatic acknowledgement mode",
    ),
    (
        "get",
        "rabbitmq_channel_get_ack_total",
        "Total number of messages fetched with basic.get in manual acknowledgement mode",
    ),
    (
        "get_no_ack",
        "rabbitmq_channel_get_total",
        "Total number of messages fetched with basic.get in automatic acknowledgement mode",
    ),
    (
        "redeliver",
        "rabbitmq_channel_messages_redelivered_total",
        "Total number of messages redelivered to consumers",
    ),
    (
        "ack",
        "rabbitmq_channel_messages_acked_total",
        "Total number of messages acknowledged by consumers",
    ),
)
# Channel-side counters, node-wide only.
_CHANNEL_COUNTERS: Final = (
    (
        "publish",
        "rabbitmq_channel_messages_published_total",
        "Total number of messages published into an exchange on a channel",
    ),
    (
        "confirm",
        "rabbitmq_channel_messages_confirmed_total",
        "Total number of messages published into an exchange and confirmed on the channel",
    ),
    (
        "return_unroutable",
        "rabbitmq_channel_messages_unroutable_returned_total",
        "Total number of messages published as mandatory into an exchange and returned to "
        "the publisher as unroutable",
    ),
)
# rabbitmq_global_* counters: (field or fields summed, name, labels, help).
_GLOBAL_COUNTERS: Final[tuple[tuple[tuple[str, ...], str, str, str], ...]] = (
    (
        ("publish",),
        "rabbitmq_global_messages_received_total",
        _PROTOCOL,
        "Total number of messages received from publishers",
    ),
    (
        ("confirm",),
        "rabbitmq_global_messages_confirmed_total",
        _PROTOCOL,
        "Total number of messages confirmed to publishers",
    ),
    (
        ("return_unroutable",),
        "rabbitmq_global_messages_unroutable_returned_total",
        _PROTOCOL,
        "Total number of messages published as mandatory into an exchange and returned to "
        "the publisher as unroutable",
    ),
    (
        ("deliver", "deliver_no_ack", "get", "get_no_ack"),
        "rabbitmq_global_messages_delivered_total",
        _CLASSIC,
        "Total number of messages delivered to consumers",
    ),
    (
        ("deliver_no_ack",),
        "rabbitmq_global_messages_delivered_consume_auto_ack_total",
        _CLASSIC,
        "Total number of messages delivered to consumers using basic.consume with automatic "
        "acknowledgment",
    ),
    (
        ("deliver",),
        "rabbitmq_global_messages_delivered_consume_manual_ack_total",
        _CLASSIC,
        "Total number of messages delivered to consumers using basic.consume with manual "
        "acknowledgment",
    ),
    (
        ("get_no_ack",),
        "rabbitmq_global_messages_delivered_get_auto_ack_total",
        _CLASSIC,
        "Total number of messages delivered to consumers using basic.get with automatic "
        "acknowledgment",
    ),
    (
        ("get",),
        "rabbitmq_global_messages_delivered_get_manual_ack_total",
        _CLASSIC,
        "Total number of messages delivered to consumers using basic.get with manual "
        "acknowledgment",
    ),
    (
        ("redeliver",),
        "rabbitmq_global_messages_redelivered_total",
        _CLASSIC,
        "Total number of messages redelivered to consumers",
    ),
    (
        ("ack",),
        "rabbitmq_global_messages_acknowledged_total",
        _CLASSIC,
        "Total number of messages acknowledged by consumers",
    ),
)
_DEATH_HELP: Final = {
    "rejected": "Total number of messages dead-lettered due to basic.reject or basic.nack",
    "expired": "Total number of messages dead-lettered due to message TTL exceeded",
    "maxlen": "Total number of messages dead-lettered due to overflow drop-head or "
    "reject-publish-dlx",
    "delivery_limit": "Total number of messages dead-lettered due to delivery-limit exceeded",
}

COUNT_FIELDS: Final = tuple(field.name for field in attrs.fields(MessageCounts))
_COUNTS_OF: Final = attrgetter(*COUNT_FIELDS)
_INDEX: Final = {name: index for index, name in enumerate(COUNT_FIELDS)}
_CHANNEL_FIELDS: Final = frozenset({"publish", "confirm", "return_unroutable"})


def _plus(totals: list[int], more: Sequence[int]) -> list[int]:
    return [a + b for a, b in zip(totals, more, strict=True)]


def label_value(value: str) -> str:
    """A label value escaped as the exposition format requires."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# TYPE {name} {kind}\n# HELP {name} {help_text}\n")


def _one(
    out: list[str], name: str, kind: str, help_text: str, value: float, labels: str = ""
) -> None:
    out.append(f"# TYPE {name} {kind}\n# HELP {name} {help_text}\n{name}{labels} {number(value)}\n")


def _series(
    out: list[str],
    name: str,
    kind: str,
    help_text: str,
    labels: Sequence[str],
    values: Iterable[int],
) -> None:
    """One family with a sample per object: `labels[i]` is `{...}` for `values[i]`."""
    _header(out, name, kind, help_text)
    out.append(
        "".join([f"{name}{label} {value}\n" for label, value in zip(labels, values, strict=True)])
    )


class Scrape:
    """One pass over the broker's queues, then the text for one of the three paths."""

    def __init__(
        self, api: ManagementApi, *, per_queue: bool, vhosts: frozenset[str] | None = None
    ) -> None:
        self.api = api
        broker = api.context.broker
        queue_totals = [0] * len(COUNT_FIELDS)
        channel_totals = [0] * len(COUNT_FIELDS)
        labels: list[str] = []
        ready: list[int] = []
        unacked: list[int] = []
        consumers: list[int] = []
        counts: list[tuple[int, ...]] = []
        queue_count = 0
        for vhost in broker.vhosts.values():
            queue_totals = _plus(queue_totals, _COUNTS_OF(vhost.retired_queue_counts))
            channel_totals = _plus(channel_totals, _COUNTS_OF(vhost.retired_channel_counts))
            if vhosts is not None and vhost.name not in vhosts:
                continue
            vhost_label = label_value(vhost.name)
            for queue in vhost.queues.values():
                queue_count += 1
                ready.append(ready_count(queue))
                unacked.append(queue.unacked_count)
                consumers.append(len(queue.consumers))
                counts.append(_COUNTS_OF(queue.counts))
                if per_queue:
                    labels.append(f'{{vhost="{vhost_label}",queue="{label_value(queue.name)}"}}')
        if counts:
            # Column sums: one zip over all queues rather than a list per queue.
            queue_totals = _plus(
                queue_totals, [sum(column) for column in zip(*counts, strict=True)]
            )
        channels = 0
        for session in api.context.sessions:
            for handler in session.handlers.values():
                channels += 1
                channel_totals = _plus(channel_totals, _COUNTS_OF(handler.channel.counts))
        self.channels = channels
        self.queue_totals = queue_totals
        self.channel_totals = channel_totals
        self.queue_count = queue_count
        self.labels = labels
        self.ready = ready
        self.unacked = unacked
        self.consumers = consumers
        self.counts = counts

    def total(self, *fields: str) -> int:
        """Node totals: what channels counted (published, confirmed, returned) or, for
        every other field, what queues counted."""
        return sum(
            (self.channel_totals if field in _CHANNEL_FIELDS else self.queue_totals)[_INDEX[field]]
            for field in fields
        )

    def queue_total(self, field: str) -> int:
        return self.queue_totals[_INDEX[field]]

    def column(self, field: str) -> list[int]:
        index = _INDEX[field]
        return [queue_counts[index] for queue_counts in self.counts]

    # ------------------------------------------------------------------ paths

    def metrics(self, *, per_object: bool) -> str:
        out: list[str] = []
        self._node(out)
        if per_object:
            self._queues_per_object(out, "rabbitmq_")
        else:
            self._queues_aggregated(out)
        self._global(out)
        store = self.api.store_metrics
        if store is not None:
            store_series(out, store)
        return "".join(out)

    def detailed(self, families: frozenset[str]) -> str:
        out: list[str] = []
        self._identity(out)
        self._queues_per_object(out, "rabbitmq_detailed_", families=families, counters=False)
        return "".join(out)

    # ------------------------------------------------------------------ parts

    def _identity(self, out: list[str]) -> None:
        api = self.api
        _one(
            out,
            "rabbitmq_build_info",
            "untyped",
            "RabbitMQ & Erlang/OTP version info",
            1,
            f'{{rabbitmq_version="{MANAGEMENT_VERSION}",prometheus_plugin_version='
            f'"{MANAGEMENT_VERSION}",amqpd_version="{label_value(__version__)}"}}',
        )
        cluster = str(api.context.server_properties.get("cluster_name", api.node))
        _one(
            out,
            "rabbitmq_identity_info",
            "untyped",
            "RabbitMQ node & cluster identity info",
            1,
            f'{{rabbitmq_node="{label_value(api.node)}",rabbitmq_cluster="{label_value(cluster)}"}}',
        )

    def _node(self, out: list[str]) -> None:
        api = self.api
        alarms = api.context.alarms
        self._identity(out)
        _one(
            out,
            "rabbitmq_connections",
            "gauge",
            "Connections currently open",
            len(api.open_sessions()),
        )
        _one(out, "rabbitmq_channels", "gauge", "Channels currently open", self.channels)
        consumers = sum(self.consumers)
        _one(out, "rabbitmq_consumers", "gauge", "Consumers currently connected", consumers)
        _one(out, "rabbitmq_queues", "gauge", "Queues available", self.queue_count)
        _one(
            out,
            "rabbitmq_alarms_memory_used_watermark",
            "untyped",
            "is 1 if VM memory watermark alarm is in effect",
            int(alarms.memory),
        )
        _one(
            out,
            "rabbitmq_alarms_free_disk_space_watermark",
            "untyped",
            "is 1 if free disk space watermark alarm is in effect",
            int(alarms.disk),
        )
        _one(
            out,
            "rabbitmq_process_resident_memory_bytes",
            "gauge",
            "Memory used in bytes",
            resident_bytes() or alarms.memory_used_bytes,
        )
        _one(
            out,
            "rabbitmq_resident_memory_limit_bytes",
            "gauge",
            "Memory high watermark in bytes",
            alarms.memory_limit_bytes,
        )
        _one(
            out,
            "rabbitmq_disk_space_available_bytes",
            "gauge",
            "Disk space available in bytes",
            alarms.disk_free_bytes,
        )
        _one(
            out,
            "rabbitmq_disk_space_available_limit_bytes",
            "gauge",
            "Free disk space low watermark in bytes",
            alarms.disk_free_limit_bytes,
        )
        open_fds = open_fd_count()
        if open_fds is not None:
            _one(out, "rabbitmq_process_open_fds", "gauge", "Open file descriptors", open_fds)
        _one(
            out,
            "rabbitmq_process_max_fds",
            "gauge",
            "Open file descriptors limit",
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        _one(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            int(api.started_at_s),
        )
        for field, name, help_text in _CHANNEL_COUNTERS:
            _one(out, name, "counter", help_text, self.total(field))

    def _queues_aggregated(self, out: list[str]) -> None:
        ready, unacked = sum(self.ready), sum(self.unacked)
        _one(out, "rabbitmq_queue_messages_ready", "gauge", _HELP_READY, ready)
        _one(out, "rabbitmq_queue_messages_unacked", "gauge", _HELP_UNACKED, unacked)
        _one(out, "rabbitmq_queue_messages", "gauge", _HELP_MESSAGES, ready + unacked)
        _one(out, "rabbitmq_queue_consumers", "gauge", _HELP_CONSUMERS, sum(self.consumers))
        _one(
            out,
            "rabbitmq_queue_messages_published_total",
            "counter",
            _HELP_PUBLISHED,
            self.queue_total("publish"),
        )
        for field, name, help_text in _QUEUE_COUNTERS:
            _one(out, name, "counter", help_text, self.total(field))

    def _queues_per_object(
        self,
        out: list[str],
        prefix: str,
        *,
        families: frozenset[str] = DETAILED_FAMILIES,
        counters: bool = True,
    ) -> None:
        labels = self.labels
        if QUEUE_COARSE in families:
            _series(out, prefix + "queue_messages_ready", "gauge", _HELP_READY, labels, self.ready)
            _series(
                out, prefix + "queue_messages_unacked", "gauge", _HELP_UNACKED, labels, self.unacked
            )
            _series(
                out,
                prefix + "queue_messages",
                "gauge",
                _HELP_MESSAGES,
                labels,
                [r + u for r, u in zip(self.ready, self.unacked, strict=True)],
            )
        if QUEUE_CONSUMER_COUNT in families:
            _series(
                out, prefix + "queue_consumers", "gauge", _HELP_CONSUMERS, labels, self.consumers
            )
        if not counters:
            return
        published_labels = [label.replace('{vhost="', '{queue_vhost="', 1) for label in labels]
        _series(
            out,
            "rabbitmq_queue_messages_published_total",
            "counter",
            _HELP_PUBLISHED,
            published_labels,
            self.column("publish"),
        )
        for field, name, help_text in _QUEUE_COUNTERS:
            _series(out, name, "counter", help_text, labels, self.column(field))

    def _global(self, out: list[str]) -> None:
        _one(
            out,
            "rabbitmq_global_consumers",
            "gauge",
            "Current number of consumers",
            sum(self.consumers),
            _PROTOCOL,
        )
        for fields, name, labels, help_text in _GLOBAL_COUNTERS:
            _one(out, name, "counter", help_text, self.total(*fields), labels)
        for reason in _DEATH_REASONS:
            name = f"rabbitmq_global_messages_dead_lettered_{reason}_total"
            _header(out, name, "counter", _DEATH_HELP[reason])
            out.append(
                f'{name}{{queue_type="rabbit_classic_queue",dead_letter_strategy="at_most_once"}} '
                f"{self.total('dead_lettered_' + reason)}\n"
                f'{name}{{queue_type="rabbit_classic_queue",dead_letter_strategy="disabled"}} '
                f"{self.total('dropped_' + reason)}\n"
            )


_HELP_READY: Final = "Messages ready to be delivered to consumers"
_HELP_UNACKED: Final = "Messages delivered to consumers but not yet acknowledged"
_HELP_MESSAGES: Final = "Sum of ready and unacknowledged messages - total queue depth"
_HELP_CONSUMERS: Final = "Consumers on a queue"
_HELP_PUBLISHED: Final = "Total number of messages published to queues"


def store_series(out: list[str], metrics: StoreMetrics) -> None:
    """The store's own series, `amqpd_store_*`."""
    _one(out, "amqpd_store_segments", "gauge", "Segment files that exist", metrics.segments)
    _one(
        out,
        "amqpd_store_stored_bytes",
        "gauge",
        "Bytes in segment files that exist",
        metrics.stored_bytes,
    )
    _one(
        out,
        "amqpd_store_quarantined_records_total",
        "counter",
        "Offsets lost to damaged segment data since start (an upper bound)",
        metrics.quarantined_records,
    )
    _one(
        out,
        "amqpd_store_quarantined_bytes_total",
        "counter",
        "Damaged bytes moved or copied to quarantine since start",
        metrics.quarantined_bytes,
    )
    _one(
        out,
        "amqpd_store_write_errors_total",
        "counter",
        "Failed store writes (each dropped batch or journal write)",
        metrics.write_errors,
    )
    _one(
        out,
        "amqpd_store_fsyncs_total",
        "counter",
        "fsync calls on files and directories",
        metrics.fsync_count,
    )
    _one(
        out,
        "amqpd_store_last_sync_seconds",
        "gauge",
        "How long the latest group commit's fsyncs took",
        metrics.last_fsync_seconds,
    )
    name = "amqpd_store_sync_seconds"
    _header(out, name, "histogram", "How long each group commit's fsyncs took")
    buckets = list(metrics.sync_buckets)  # copied: the sync thread may be adding to it
    cumulative = 0
    for bound, count in zip(SYNC_BUCKETS_S, buckets, strict=False):
        cumulative += count
        out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}\n')
    cumulative += buckets[-1]
    out.append(
        f'{name}_bucket{{le="+Inf"}} {cumulative}\n'
        f"{name}_sum {number(metrics.fsync_seconds_total)}\n{name}_count {cumulative}\n"
    )


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is not there)."""
    try:
        return int(_STATM.read_bytes().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def open_fd_count() -> int | None:
    try:
        return len(os.listdir(_FDS))
    except OSError:
        return None


def render(api: ManagementApi, *, per_object: bool) -> str:
    return Scrape(api, per_queue=per_object).metrics(per_object=per_object)


def render_detailed(api: ManagementApi, families: Iterable[str], vhosts: Iterable[str]) -> str:
    wanted = frozenset(families) & DETAILED_FAMILIES
    only = frozenset(vhosts) or None
    return Scrape(api, per_queue=bool(wanted), vhosts=only).detailed(wanted)
