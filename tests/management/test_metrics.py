"""Prometheus metrics against a real broker: pika publishes, consumes, acks, rejects and
returns; httpx scrapes /metrics, /metrics/per-object and /metrics/detailed as Prometheus
would, and the figures follow. The text parses with prometheus_client's parser, and every
`rabbitmq_*` family has the name, type and HELP text that RabbitMQ 3.10's plugin gives it
(tests/management/rabbitmq-3.10.8-metric-families.tsv, captured from a real node)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pika
import pika.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqpd.config.model import Limits, Management
from amqpd.node import Node
from interop.system import free_port
from tests.support.in_process import running_node, url_of

FIXTURE = Path(__file__).with_name("rabbitmq-3.10.8-metric-families.tsv")
WAIT_S = 10.0
PATHS = ("/metrics", "/metrics/per-object", "/metrics/detailed?family=queue_coarse_metrics")


def rabbitmq_families() -> dict[str, tuple[str, str]]:
    """RabbitMQ's family name -> (type, HELP)."""
    families: dict[str, tuple[str, str]] = {}
    for line in FIXTURE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, kind, help_text = line.split("\t")
            families[name] = (kind, help_text)
    return families


def declared(text: str) -> dict[str, tuple[str, str]]:
    """The exposition's own family name -> (type, HELP), from its TYPE and HELP lines."""
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE))
    assert kinds.keys() == helps.keys()
    return {name: (kind, helps[name]) for name, kind in kinds.items()}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample, keyed by (sample name, labels), through prometheus_client's parser."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"duplicate sample {key}"
            found[key] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running_node(tmp_path, management=Management(port=free_port())) as running:
        yield running


@pytest.fixture
def scrape(node: Node) -> Iterator[Callable[[str], str]]:
    address = node.management_address
    assert address is not None
    with httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=10) as client:

        def get(path: str) -> str:
            response = client.get(path)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            return response.text

        yield get


@pytest.fixture
def channel(node: Node) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url_of(node)))
    try:
        opened = connection.channel()
        opened.confirm_delivery()
        yield opened
    finally:
        if connection.is_open:
            connection.close()


def eventually(
    scrape: Callable[[str], str], path: str, check: Callable[[Samples], bool]
) -> Samples:
    """Scrape until `check` holds (acks travel without a reply), for WAIT_S at most."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = samples(scrape(path))
        if check(found):
            return found
        assert time.monotonic() < deadline, f"{path} never showed what was expected"
        time.sleep(0.02)


def test_queue_depths_and_totals_follow_what_clients_do(
    scrape: Callable[[str], str],
    channel: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare("work", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    channel.queue_declare("plain")
    persistent = pika.BasicProperties(delivery_mode=2)
    for _ in range(5):
        channel.basic_publish("", "work", b"job", persistent)

    found = samples(scrape("/metrics/per-object"))
    assert value(found, "rabbitmq_queue_messages_ready", vhost="/", queue="work") == 5
    assert value(found, "rabbitmq_queue_messages_unacked", vhost="/", queue="work") == 0
    assert value(found, "rabbitmq_queue_messages", vhost="/", queue="work") == 5
    assert value(found, "rabbitmq_queue_messages_ready", vhost="/", queue="dead") == 0
    assert (
        value(found, "rabbitmq_queue_messages_published_total", queue_vhost="/", queue="work") == 5
    )
    assert value(found, "rabbitmq_global_messages_received_total", protocol="amqp091") == 5
    assert value(found, "rabbitmq_global_messages_confirmed_total", protocol="amqp091") == 5
    assert value(found, "rabbitmq_queues") == 3
    assert value(found, "rabbitmq_connections") == 1
    assert value(found, "rabbitmq_channels") == 1
    assert value(found, "amqpd_store_sync_seconds_count") > 0
    assert value(found, "amqpd_store_segments") >= 1

    # Consume all five with manual acks: unacked while held, then acked.
    taken: list[int] = []
    consumer_tag = channel.basic_consume(
        "work", lambda _ch, method, _props, _body: taken.append(method.delivery_tag)
    )
    deadline = time.monotonic() + WAIT_S
    while len(taken) < 5:
        assert time.monotonic() < deadline, "the five messages were not delivered"
        channel.connection.process_data_events(time_limit=0.05)
    found = samples(scrape("/metrics/per-object"))
    assert value(found, "rabbitmq_queue_messages_unacked", vhost="/", queue="work") == 5
    assert value(found, "rabbitmq_queue_messages_ready", vhost="/", queue="work") == 0
    assert value(found, "rabbitmq_queue_consumers", vhost="/", queue="work") == 1
    assert value(found, "rabbitmq_consumers") == 1
    assert value(found, "rabbitmq_global_consumers", protocol="amqp091") == 1
    for tag in taken:
        channel.basic_ack(tag)
    classic = {"protocol": "amqp091", "queue_type": "rabbit_classic_queue"}
    found = eventually(
        scrape,
        "/metrics",
        lambda found: value(found, "rabbitmq_global_messages_acknowledged_total", **classic) == 5,
    )
    assert (
        value(found, "rabbitmq_global_messages_delivered_consume_manual_ack_total", **classic) == 5
    )
    assert value(found, "rabbitmq_global_messages_delivered_total", **classic) == 5
    assert value(found, "rabbitmq_channel_messages_acked_total") == 5
    assert value(found, "rabbitmq_queue_messages_unacked") == 0
    channel.basic_cancel(consumer_tag)

    # A nack to the dead-letter exchange; a reject on a queue without one (dropped);
    # a requeue then a redelivery; a mandatory message nobody takes.
    channel.basic_publish("", "work", b"bad")
    method, _, _ = channel.basic_get("work")
    assert method is not None
    channel.basic_nack(method.delivery_tag, requeue=False)
    channel.basic_publish("", "plain", b"dropped")
    method, _, _ = channel.basic_get("plain")
    assert method is not None
    channel.basic_reject(method.delivery_tag, requeue=False)
    channel.basic_publish("", "plain", b"again")
    method, _, _ = channel.basic_get("plain")
    assert method is not None
    channel.basic_reject(method.delivery_tag, requeue=True)
    method, _, _ = channel.basic_get("plain", auto_ack=True)
    assert method is not None and method.redelivered
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("", "nowhere", b"lost", mandatory=True)

    rejected = "rabbitmq_global_messages_dead_lettered_rejected_total"
    classic_dl = {"queue_type": "rabbit_classic_queue"}
    found = eventually(
        scrape,
        "/metrics/per-object",
        lambda found: (
            value(found, rejected, **classic_dl, dead_letter_strategy="at_most_once") == 1
            and value(found, rejected, **classic_dl, dead_letter_strategy="disabled") == 1
        ),
    )
    assert value(found, "rabbitmq_queue_messages_ready", vhost="/", queue="dead") == 1
    assert value(found, "rabbitmq_global_messages_redelivered_total", **classic) == 1
    assert (
        value(found, "rabbitmq_channel_messages_redelivered_total", vhost="/", queue="plain") == 1
    )
    assert value(found, "rabbitmq_channel_get_ack_total", vhost="/", queue="plain") == 2
    assert value(found, "rabbitmq_channel_get_total", vhost="/", queue="plain") == 1
    assert value(found, "rabbitmq_global_messages_delivered_get_auto_ack_total", **classic) == 1
    assert (
        value(found, "rabbitmq_global_messages_unroutable_returned_total", protocol="amqp091") == 1
    )
    assert value(found, "rabbitmq_channel_messages_unroutable_returned_total") == 1
    assert value(found, "rabbitmq_global_messages_received_total", protocol="amqp091") == 9

    # Totals never fall: deleting a queue and closing the channel keep them.
    channel.queue_delete("work")
    channel.connection.close()
    found = eventually(scrape, "/metrics", lambda found: value(found, "rabbitmq_channels") == 0)
    assert value(found, "rabbitmq_global_messages_acknowledged_total", **classic) == 5
    assert value(found, "rabbitmq_global_messages_received_total", protocol="amqp091") == 9
    # Enqueued: 8 of the 9 received (one was returned), and the dead-lettered copy.
    assert value(found, "rabbitmq_queue_messages_published_total") == 9
    assert value(found, "rabbitmq_queues") == 2


def test_every_path_parses_and_uses_rabbitmqs_names_types_and_help(
    scrape: Callable[[str], str],
    channel: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    channel.queue_declare('odd "name" \\ with\nnewline')
    channel.basic_publish("", 'odd "name" \\ with\nnewline', b"x")
    channel.queue_declare("other")
    reference = rabbitmq_families()
    for path in PATHS:
        text = scrape(path)
        samples(text)  # parses; no sample twice
        families = declared(text)
        for name, (kind, help_text) in families.items():
            if name.startswith("rabbitmq_"):
                assert name in reference, f"{path}: {name} is not one of RabbitMQ 3.10's"
                assert (kind, help_text) == reference[name], f"{path}: {name}"
            else:
                assert name.startswith("amqpd_store_") or name == "process_start_time_seconds"
    per_object = samples(scrape("/metrics/per-object"))
    assert (
        value(
            per_object,
            "rabbitmq_queue_messages_ready",
            vhost="/",
            queue='odd "name" \\ with\nnewline',
        )
        == 1
    )
    assert value(per_object, "rabbitmq_queue_messages_ready", vhost="/", queue="other") == 0
    aggregated = samples(scrape("/metrics"))
    assert value(aggregated, "rabbitmq_queue_messages_ready") == 1
    assert not any(
        name == "rabbitmq_queue_messages_ready" and labels for name, labels in aggregated
    )


def test_detailed_gives_only_the_families_and_vhosts_asked_for(
    scrape: Callable[[str], str],
    channel: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    channel.queue_declare("q")
    channel.basic_publish("", "q", b"x")
    text = scrape("/metrics/detailed?family=queue_consumer_count&vhost=/")
    assert set(declared(text)) == {
        "rabbitmq_build_info",
        "rabbitmq_identity_info",
        "rabbitmq_detailed_queue_consumers",
    }
    coarse = samples(scrape("/metrics/detailed?family=queue_coarse_metrics"))
    assert value(coarse, "rabbitmq_detailed_queue_messages_ready", vhost="/", queue="q") == 1
    other_vhost = scrape("/metrics/detailed?family=queue_coarse_metrics&vhost=elsewhere")
    assert 'queue="q"' not in other_vhost
    assert set(declared(scrape("/metrics/detailed"))) == {
        "rabbitmq_build_info",
        "rabbitmq_identity_info",
    }


def test_the_prometheus_port_serves_the_metrics_paths_only(tmp_path: Path) -> None:
    management = Management(port=0, prometheus_port=free_port())
    with running_node(tmp_path, management=management) as node:
        assert node.management_address is None
        address = node.prometheus_address
        assert address is not None
        with httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=10) as client:
            for path in PATHS:
                response = client.get(path)
                assert response.status_code == 200
                samples(response.text)
            assert client.get("/api/overview", auth=("guest", "guest")).status_code == 404
            assert client.get("/").status_code == 404


def test_a_disk_alarm_shows_with_the_free_space_and_its_limit(tmp_path: Path) -> None:
    limits = Limits(disk_free_bytes_min=1 << 60, disk_check_interval_s=0.05)
    with running_node(tmp_path, management=Management(port=free_port()), limits=limits) as node:
        address = node.management_address
        assert address is not None
        with httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=10) as client:
            found = eventually(
                lambda path: client.get(path).text,
                "/metrics",
                lambda found: value(found, "rabbitmq_alarms_free_disk_space_watermark") == 1,
            )
    assert value(found, "rabbitmq_alarms_memory_used_watermark") == 0
    assert value(found, "rabbitmq_disk_space_available_limit_bytes") == 1 << 60
    assert 0 < value(found, "rabbitmq_disk_space_available_bytes") < 1 << 60
    assert value(found, "rabbitmq_process_resident_memory_bytes") > 10_000_000
