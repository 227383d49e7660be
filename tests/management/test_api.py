"""The management HTTP API against a real broker, driven by a real HTTP client (httpx)
and real AMQP clients (pika): what each user's tags let them see and do, RabbitMQ's
JSON shapes and status codes, publish and get over HTTP, closing connections, purging
and deleting, health checks, the definitions export, and refusals of changes the
config files own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pika.exceptions
import pytest

from amqpd.auth.passwords import hash_password
from amqpd.config.definitions import parse_definitions
from amqpd.config.model import (
    Listener,
    Management,
    Permission,
    ServerConfig,
    User,
    Vhost,
)
from amqpd.node import Node
from interop.system import free_port
from tests.support.broker_process import BrokerProcess
from tests.support.in_process import running_node

PASSWORD = "secret"
HASH = hash_password(PASSWORD, algorithm="sha256")


def tenancy(data_dir: Path) -> ServerConfig:
    """guest (administrator, on both vhosts); mon (monitoring, rights on /); mgr
    (management, rights on `team` only); app (no tags, rights on /)."""
    return ServerConfig(
        listeners=(Listener("127.0.0.1", 0),),
        data_dir=data_dir,
        management=Management(port=free_port(), sample_interval_s=0.2),
        vhosts=(Vhost("/"), Vhost("team", description="the team's vhost")),
        users=(
            User("guest", HASH, tags=("administrator",), vhosts=("/", "team")),
            User("mon", HASH, tags=("monitoring",), vhosts=("/",)),
            User("mgr", HASH, tags=("management",)),
            User("app", HASH, vhosts=("/",)),
        ),
        permissions=(Permission("mgr", ".*", ".*", "^mgr-", vhost="team"),),
        loopback_users=(),
    )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running_node(tmp_path, tenancy(tmp_path)) as running:
        yield running


Client = Callable[..., httpx.Client]


@pytest.fixture
def http(node: Node) -> Iterator[Client]:
    opened: list[httpx.Client] = []
    address = node.management_address
    assert address is not None

    def client(user: str = "guest", password: str = PASSWORD) -> httpx.Client:
        made = httpx.Client(
            base_url=f"http://{address[0]}:{address[1]}", auth=(user, password), timeout=10
        )
        opened.append(made)
        return made

    yield client
    for made in opened:
        made.close()


def amqp(node: Node, user: str = "guest", vhost: str = "/") -> pika.BlockingConnection:
    host, port = node.addresses[0]
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            host, port, vhost, pika.PlainCredentials(user, PASSWORD), heartbeat=0
        )
    )


def wait_until(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Poll `check` until it returns something true (the API reflects state at once; rates
    need a sample or two)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_queues_show_rabbitmqs_figures_and_rates(node: Node, http: Client) -> None:
    api = http()
    connection = amqp(node)
    channel = connection.channel()
    channel.queue_declare("work", durable=True)
    for number in range(10):
        channel.basic_publish("", "work", f"m{number}".encode())
    channel.basic_qos(prefetch_count=4)
    got = [channel.basic_get("work") for _ in range(3)]
    assert all(method is not None for method, _, _ in got)
    channel.basic_ack(got[0][0].delivery_tag)  # type: ignore[union-attr]

    queue = api.get("/api/queues/%2F/work").json()
    assert queue["name"] == "work" and queue["vhost"] == "/" and queue["durable"] is True
    assert (queue["messages"], queue["messages_ready"], queue["messages_unacknowledged"]) == (
        9,
        7,
        2,
    )
    assert queue["consumers"] == 0
    stats = queue["message_stats"]
    assert (stats["publish"], stats["get"], stats["ack"], stats["deliver_get"]) == (10, 3, 1, 3)
    assert "rate" in stats["publish_details"]

    # Rates come from samples: keep publishing until one shows a publish rate.
    def publish_rate() -> float:
        channel.basic_publish("", "work", b"more")
        return float(
            api.get("/api/queues/%2F/work").json()["message_stats"]["publish_details"]["rate"]
        )

    assert wait_until(publish_rate) > 0
    listed = api.get("/api/queues").json()
    assert [item["name"] for item in listed] == ["work"]
    connection.close()


def test_overview_counts_objects_and_messages(node: Node, http: Client) -> None:
    connection = amqp(node)
    channel = connection.channel()
    channel.queue_declare("a")
    channel.basic_consume("a", lambda *_: None)
    channel.basic_publish("", "a", b"x")
    overview = http().get("/api/overview").json()
    totals = overview["object_totals"]
    assert totals["connections"] == 1 and totals["channels"] == 1
    assert totals["queues"] == 1 and totals["consumers"] == 1
    assert overview["message_stats"]["publish"] == 1  # the channel's count, not the queue's too
    assert {"protocol": "amqp", "port": node.addresses[0][1]}.items() <= overview["listeners"][
        0
    ].items()
    assert overview["product_name"] == "amqpd" and overview["alarms"] == []
    connection.close()


def test_tags_decide_what_each_user_sees(node: Node, http: Client) -> None:
    guest_connection = amqp(node)
    guest_connection.channel().queue_declare("on-root")
    mgr_connection = amqp(node, "mgr", "team")
    mgr_connection.channel().queue_declare("mgr-q")

    admin, mon, mgr = http(), http("mon"), http("mgr")
    assert [v["name"] for v in admin.get("/api/vhosts").json()] == ["/", "team"]
    assert [v["name"] for v in mon.get("/api/vhosts").json()] == ["/", "team"]
    assert [v["name"] for v in mgr.get("/api/vhosts").json()] == ["team"]
    assert [q["name"] for q in mgr.get("/api/queues").json()] == ["mgr-q"]
    assert mgr.get("/api/queues/%2F/on-root").status_code == 404

    # Connections: monitoring and administrators see all, management users their own.
    assert len(mon.get("/api/connections").json()) == 2
    assert [c["user"] for c in mgr.get("/api/connections").json()] == ["mgr"]

    # Users and permissions are for administrators.
    refused = mon.get("/api/users")
    assert refused.status_code == 401
    assert refused.json() == {"error": "not_authorised", "reason": "Not administrator user"}
    assert {u["name"] for u in admin.get("/api/users").json()} == {"guest", "mon", "mgr", "app"}
    permission = admin.get("/api/permissions/team/mgr").json()
    assert (permission["configure"], permission["read"]) == (".*", "^mgr-")

    # No management tag: no API at all; a wrong password: the same 401 as RabbitMQ.
    assert http("app").get("/api/overview").json()["reason"] == "Not management user"
    wrong = http("guest", "wrong").get("/api/overview")
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert httpx.get(admin.base_url.join("/api/overview")).status_code == 401
    guest_connection.close()
    mgr_connection.close()


def test_publish_over_http_reaches_a_consumer_and_confirms_like_amqp(
    node: Node, http: Client
) -> None:
    api = http()
    connection = amqp(node)
    channel = connection.channel()
    channel.queue_declare("inbox", durable=True)
    reply = api.post(
        "/api/exchanges/%2F/amq.default/publish",
        json={
            "routing_key": "inbox",
            "payload": "aGVsbG8=",
            "payload_encoding": "base64",
            "properties": {"delivery_mode": 2, "headers": {"k": "v"}, "message_id": "m-1"},
        },
    )
    assert reply.status_code == 200 and reply.json() == {"routed": True}
    method, properties, body = channel.basic_get("inbox", auto_ack=True)
    assert method is not None and body == b"hello"
    assert properties.message_id == "m-1" and properties.headers == {"k": "v"}
    assert properties.delivery_mode == 2

    unrouted = api.post(
        "/api/exchanges/%2F/amq.default/publish", json={"routing_key": "nowhere", "payload": "x"}
    )
    assert unrouted.json() == {"routed": False}
    missing = api.post(
        "/api/exchanges/%2F/no-such/publish", json={"routing_key": "", "payload": ""}
    )
    assert missing.status_code == 404
    assert missing.json()["reason"] == "NOT_FOUND - no exchange 'no-such' in vhost '/'"
    # mgr may not write in vhost "/" at all; in `team` it may.
    refused = http("mgr").post(
        "/api/exchanges/%2F/amq.default/publish", json={"routing_key": "inbox", "payload": "x"}
    )
    assert refused.status_code == 404  # the vhost is not visible to mgr
    bad = api.post("/api/exchanges/%2F/amq.default/publish", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    connection.close()


def test_get_over_http_requeues_or_takes_per_ackmode(node: Node, http: Client) -> None:
    api = http()
    connection = amqp(node)
    channel = connection.channel()
    channel.queue_declare("peek")
    for body in (b"one", b"two", b"\xff\xfe"):
        channel.basic_publish("", "peek", body, pika.BasicProperties(content_type="text/plain"))

    peeked = api.post(
        "/api/queues/%2F/peek/get",
        json={"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"},
    ).json()
    assert [m["payload"] for m in peeked] == ["one", "two"]
    assert peeked[0]["properties"] == {"content_type": "text/plain"}
    assert [m["redelivered"] for m in peeked] == [False, False]
    assert peeked[1]["message_count"] == 1
    again = api.post(
        "/api/queues/%2F/peek/get", json={"count": 5, "ackmode": "ack_requeue_true"}
    ).json()
    assert [m["redelivered"] for m in again] == [True, True, False]
    assert again[2]["payload_encoding"] == "base64"
    assert api.get("/api/queues/%2F/peek").json()["messages"] == 3

    taken = api.post(
        "/api/queues/%2F/peek/get", json={"count": 1, "ackmode": "ack_requeue_false", "truncate": 2}
    ).json()
    assert taken[0]["payload"] == "on" and taken[0]["payload_bytes"] == 3
    assert api.get("/api/queues/%2F/peek").json()["messages"] == 2
    bad = api.post("/api/queues/%2F/peek/get", json={"count": 1, "ackmode": "later"})
    assert bad.status_code == 400
    connection.close()


def test_purge_delete_and_bindings_run_with_the_users_rights(node: Node, http: Client) -> None:
    api, mgr = http(), http("mgr")
    assert api.put("/api/queues/%2F/jobs", json={"durable": False}).status_code == 201
    assert api.put("/api/exchanges/%2F/events", json={"type": "topic"}).status_code == 201
    assert (
        api.post("/api/bindings/%2F/e/events/q/jobs", json={"routing_key": "job.*"}).status_code
        == 201
    )
    reply = api.post(
        "/api/exchanges/%2F/events/publish", json={"routing_key": "job.1", "payload": "j"}
    )
    assert reply.json() == {"routed": True}
    bindings = api.get("/api/bindings/%2F/e/events/q/jobs").json()
    assert [(b["routing_key"], b["properties_key"]) for b in bindings] == [("job.*", "job.*")]
    assert api.delete("/api/queues/%2F/jobs/contents").status_code == 204
    assert api.get("/api/queues/%2F/jobs").json()["messages"] == 0
    assert api.delete("/api/bindings/%2F/e/events/q/jobs/job.*").status_code == 204
    assert api.get("/api/bindings/%2F/e/events/q/jobs").json() == []

    # mgr may configure only in `team`, and read only mgr-* there.
    assert mgr.put("/api/queues/team/mgr-jobs", json={}).status_code == 201
    assert mgr.put("/api/queues/team/other", json={}).status_code == 201
    refused = mgr.delete("/api/queues/team/other/contents")
    assert refused.status_code == 401
    assert (
        "access to queue 'other' in vhost 'team' refused for user 'mgr'" in refused.json()["reason"]
    )
    assert api.delete("/api/queues/%2F/jobs").status_code == 204
    assert api.get("/api/queues/%2F/jobs").status_code == 404
    inequivalent = api.put("/api/queues/team/other", json={"durable": False})
    assert inequivalent.status_code == 400
    assert "PRECONDITION_FAILED - inequivalent arg 'durable'" in inequivalent.json()["reason"]


def test_closing_a_connection_over_http_sends_320_with_the_reason(node: Node, http: Client) -> None:
    connection = amqp(node)
    api = http()
    [listed] = api.get("/api/connections").json()
    assert (
        listed["user"] == "guest" and listed["vhost"] == "/" and listed["protocol"] == "AMQP 0-9-1"
    )
    assert listed["auth_mechanism"] == "PLAIN" and listed["channels"] == 0
    name = listed["name"]
    # mgr may not close guest's connection (it does not even see it).
    assert http("mgr").delete(f"/api/connections/{httpx.URL(path=name).path}").status_code == 404
    reply = api.delete(f"/api/connections/{name}", headers={"X-Reason": "maintenance"})
    assert reply.status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.process_data_events(time_limit=5)
        connection.channel()
    assert closed.value.reply_code == 320
    assert closed.value.reply_text == "CONNECTION_FORCED - maintenance"
    wait_until(lambda: api.get("/api/connections").json() == [])


def test_channels_and_consumers_list_what_clients_opened(node: Node, http: Client) -> None:
    connection = amqp(node)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("c")
    channel.basic_qos(prefetch_count=7)
    channel.basic_consume("c", lambda *_: None, consumer_tag="tag-1")
    channel.basic_publish("", "c", b"x")
    api = http()
    [listed] = api.get("/api/channels").json()
    assert listed["number"] == 1 and listed["confirm"] is True and listed["consumer_count"] == 1
    assert listed["message_stats"]["publish"] == 1 and listed["message_stats"]["confirm"] == 1
    [consumer] = api.get("/api/consumers").json()
    assert consumer["consumer_tag"] == "tag-1" and consumer["queue"] == {"name": "c", "vhost": "/"}
    assert consumer["ack_required"] is True and consumer["prefetch_count"] == 7
    connection.close()


def test_lists_take_rabbitmqs_columns_sort_and_pages(node: Node, http: Client) -> None:
    api = http()
    for name in ("q3", "q1", "q2", "x1"):
        api.put(f"/api/queues/%2F/{name}", json={})
    names = api.get("/api/queues?sort=name&sort_reverse=true&columns=name,vhost").json()
    assert names == [{"name": n, "vhost": "/"} for n in ("x1", "q3", "q2", "q1")]
    page = api.get("/api/queues?page=2&page_size=2&name=^q&use_regex=true&sort=name").json()
    assert page["items"][0]["name"] == "q3" and page["page_count"] == 2
    assert (page["filtered_count"], page["page"], page["page_size"]) == (3, 2, 2)
    assert api.get("/api/queues?page=0").status_code == 400


def test_users_vhosts_and_permissions_belong_to_the_config_files(node: Node, http: Client) -> None:
    api = http()
    for method, path in (
        ("PUT", "/api/users/new"),
        ("DELETE", "/api/users/mon"),
        ("PUT", "/api/vhosts/new"),
        ("PUT", "/api/permissions/%2F/mon"),
        ("PUT", "/api/policies/%2F/p"),
        ("POST", "/api/definitions"),
    ):
        reply = api.request(method, path, json={})
        assert reply.status_code == 405, path
        assert "config" in reply.json()["reason"]


def test_the_definitions_export_loads_back(node: Node, http: Client, tmp_path: Path) -> None:
    api = http()
    api.put("/api/exchanges/team/orders", json={"type": "direct", "durable": True})
    api.put(
        "/api/queues/team/orders.new", json={"durable": True, "arguments": {"x-max-length": 10}}
    )
    api.post("/api/bindings/team/e/orders/q/orders.new", json={"routing_key": "new"})
    exported = api.get("/api/definitions").json()
    assert http("mon").get("/api/definitions").status_code == 401
    definitions = parse_definitions(exported, "export")
    assert {(q.vhost, q.name) for q in definitions.queues} == {("team", "orders.new")}
    assert [dict(q.arguments) for q in definitions.queues] == [{"x-max-length": 10}]
    assert [(b.source, b.destination, b.routing_key) for b in definitions.bindings] == [
        ("orders", "orders.new", "new")
    ]
    assert {e.name for e in definitions.exchanges} == {"orders"}
    assert {u["name"]: u["tags"] for u in exported["users"]}["mon"] == ["monitoring"]
    assert {p["user"] for p in exported["permissions"]} >= {"mgr", "guest"}


def test_health_checks_answer_like_rabbitmqs(node: Node, http: Client) -> None:
    api = http()
    assert api.get("/api/health/checks/alarms").json() == {"status": "ok"}
    assert api.get("/api/health/checks/local-alarms").status_code == 200
    assert api.get("/api/health/checks/virtual-hosts").json() == {"status": "ok"}
    port = node.addresses[0][1]
    assert api.get(f"/api/health/checks/port-listener/{port}").json()["status"] == "ok"
    closed = api.get(f"/api/health/checks/port-listener/{free_port()}")
    assert closed.status_code == 503 and closed.json()["status"] == "failed"
    assert api.get("/api/health/checks/protocol-listener/amqp").status_code == 200
    assert api.get("/api/health/checks/protocol-listener/amqps").status_code == 503
    node.context.alarms.set_disk(True, 1, 2)
    try:
        failed = api.get("/api/health/checks/alarms")
        assert failed.status_code == 503
        assert failed.json()["alarms"] == [{"node": node.management.node, "resource": "disk"}]  # type: ignore[union-attr]
    finally:
        node.context.alarms.set_disk(False, 3, 2)


def test_management_port_zero_serves_nothing(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        assert node.management_address is None and node.management is None


def test_an_http_publish_answered_200_survives_kill_9(tmp_path: Path) -> None:
    """A 200 for a persistent message to a durable queue means what a confirm means."""
    port = free_port()
    broker = BrokerProcess(tmp_path, ["--management-port", str(port)]).start()
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("guest", "guest"))
        assert api.put("/api/queues/%2F/kept", json={"durable": True}).status_code == 201
        for number in range(20):
            reply = api.post(
                "/api/exchanges/%2F/amq.default/publish",
                json={
                    "routing_key": "kept",
                    "payload": f"m{number}",
                    "properties": {"delivery_mode": 2},
                },
            )
            assert reply.json() == {"routed": True}
        api.close()
        broker.restart(how=9)
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = connection.channel()
        bodies = []
        while (got := channel.basic_get("kept", auto_ack=True))[0] is not None:
            bodies.append(got[2])
        assert bodies == [f"m{number}".encode() for number in range(20)]
        connection.close()
    finally:
        broker.stop()


def test_the_consistent_hash_exchange_type_is_listed_and_declared(node: Node, http: Client) -> None:
    api = http()
    types = [kind["name"] for kind in api.get("/api/overview").json()["exchange_types"]]
    assert "x-consistent-hash" in types
    declared = api.put(
        "/api/exchanges/%2F/shards",
        json={"type": "x-consistent-hash", "arguments": {"hash-property": "message_id"}},
    )
    assert declared.status_code == 201
    assert api.get("/api/exchanges/%2F/shards").json()["type"] == "x-consistent-hash"
    assert api.put("/api/queues/%2F/shard-1", json={}).status_code == 201
    bad = api.post("/api/bindings/%2F/e/shards/q/shard-1", json={"routing_key": "heavy"})
    assert bad.status_code == 400
    assert "The binding key must be an integer" in bad.json()["reason"]
    good = api.post("/api/bindings/%2F/e/shards/q/shard-1", json={"routing_key": "3"})
    assert good.status_code == 201
