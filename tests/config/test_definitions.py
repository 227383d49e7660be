"""RabbitMQ definitions exports: read into tenancy values and declarations, with every
thing amqpd cannot apply reported by name; merged into the config without silent
overrides; errors naming the file and the JSON path.

FIXTURE is a real export. It was made on RabbitMQ 3.10.8 (Erlang 25): with rabbitmqctl,
the vhosts defs-shop (description and tags, vhost limits max-connections 50 and
max-queues 100), defs-ops (default queue type classic, max-queues 10) and defs-qq
(default queue type quorum); the users defs-alice (password alice-secret, tag
administrator, limits max-connections 10 and max-channels 20), defs-monitor
(monitor-secret, monitoring, max-channels 5), defs-imp (imp-secret, impersonator and
management) and defs-cert (password cleared); their permissions and topic permissions;
the policies shop-ttl (message-ttl, max-length, dead-letter-exchange, overflow), shop-ae
(alternate-exchange), shop-ha (ha-mode, ha-sync-mode), ops-lazy (queue-mode,
max-length-bytes), the operator policy shop-op-cap and the global parameter defs-note.
Then with pika as defs-alice: the exchanges, queues and bindings below (an exchange
declared internal, shop.internal, is not in the export: RabbitMQ leaves internal
exchanges out), among them a quorum queue and a stream queue, and a queue in defs-qq
declared without a type (a quorum queue by the vhost's default). Then
`rabbitmqctl export_definitions`, pretty-printed. The node was shared: the entries of
another user of it (the user probe, the vhost lim, and their permissions, policy,
limits and entities) were removed from the file; the user guest and the vhost "/",
which every export holds, were kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amqpd.auth.passwords import verify_password
from amqpd.broker.broker import Broker
from amqpd.cli import build_parser, configure, make_config
from amqpd.config.definitions import (
    BindingDeclaration,
    Definitions,
    ExchangeDeclaration,
    QueueDeclaration,
    definitions_report,
    merge_definitions,
    parse_definitions,
    read_definitions,
)
from amqpd.config.load import ConfigError, parse
from amqpd.config.model import (
    Permission,
    Policy,
    ServerConfig,
    TopicPermission,
    UserLimits,
    Vhost,
    VhostLimits,
)
from amqpd.node import apply_definitions, check_definitions

FIXTURE = Path(__file__).parent / "fixtures" / "rabbitmq-3.10-definitions.json"

# Everything in FIXTURE amqpd does not apply, or applies in part, by subject.
UNAPPLIED = {
    "operator policy 'shop-op-cap' in vhost 'defs-shop'",
    "global parameter 'defs-note'",
    "vhost 'defs-qq'",  # default queue type quorum
    "vhost 'defs-shop'",  # tags
    "policy 'shop-ha' in vhost 'defs-shop'",
    "policy 'ops-lazy' in vhost 'defs-ops'",  # queue-mode dropped, max-length-bytes kept
    "queue 'jobs' in vhost 'defs-qq'",
    "queue 'shop.quorum' in vhost 'defs-shop'",
    "queue 'shop.stream' in vhost 'defs-shop'",
    "binding from exchange 'shop.direct' to queue 'shop.quorum' (routing key "
    "'orders.quorum') in vhost 'defs-shop'",
    "binding from exchange 'shop.fanout' to queue 'shop.stream' (routing key '') "
    "in vhost 'defs-shop'",
}


@pytest.fixture(scope="module")
def export() -> Definitions:
    return read_definitions(FIXTURE)


def by_name(values: Any) -> dict[str, Any]:
    return {value.name: value for value in values}


def test_the_users_come_through_with_their_hashes_tags_and_limits(export: Definitions) -> None:
    users = by_name(export.users)
    assert set(users) == {"guest", "defs-alice", "defs-monitor", "defs-imp", "defs-cert"}
    alice = users["defs-alice"]
    assert alice.hashing_algorithm == "rabbit_password_hashing_sha256"
    assert alice.tags == ("administrator",)
    assert alice.limits == UserLimits(connections_max=10, channels_max=20)
    # The hash RabbitMQ made checks the password it was made from, and nothing else.
    for name, password in [
        ("defs-alice", "alice-secret"),
        ("defs-monitor", "monitor-secret"),
        ("defs-imp", "imp-secret"),
        ("guest", "guest"),
    ]:
        user = users[name]
        assert verify_password(password, user.password_hash, user.hashing_algorithm), name
        assert not verify_password("wrong", user.password_hash, user.hashing_algorithm)
    assert users["defs-monitor"].tags == ("monitoring",)
    assert users["defs-monitor"].limits == UserLimits(channels_max=5)
    assert users["defs-imp"].tags == ("impersonator", "management")
    assert users["defs-imp"].limits == UserLimits()
    assert users["defs-cert"].password_hash == ""  # cleared: a client certificate only


def test_the_vhosts_come_through_with_their_limits(export: Definitions) -> None:
    assert by_name(export.vhosts) == {
        "/": Vhost("/", "Default virtual host"),
        "defs-shop": Vhost("defs-shop", "Shop orders", VhostLimits(50, 100)),
        "defs-ops": Vhost("defs-ops", "Operations", VhostLimits(queues_max=10)),
        "defs-qq": Vhost("defs-qq"),
    }


def test_permissions_and_topic_permissions_come_through(export: Definitions) -> None:
    assert set(export.permissions) == {
        Permission("guest", ".*", ".*", ".*", "/"),
        Permission("defs-alice", ".*", ".*", ".*", "defs-shop"),
        Permission("defs-alice", "^ops-", "^ops-", "^ops-", "defs-ops"),
        Permission("defs-alice", ".*", ".*", ".*", "defs-qq"),
        Permission("defs-monitor", "", "", ".*", "defs-shop"),
        Permission("defs-imp", "^imp-.*", "", "^imp-.*", "defs-ops"),
        Permission("defs-cert", ".*", ".*", ".*", "defs-qq"),
    }
    assert set(export.topic_permissions) == {
        TopicPermission("defs-alice", "shop.topic", r"^orders\.", ".*", "defs-shop"),
        TopicPermission(
            "defs-monitor", "amq.topic", r"^{username}\.", r"^{username}\.", "defs-shop"
        ),
    }


def test_policies_keep_the_keys_amqpd_supports(export: Definitions) -> None:
    assert set(map(repr, export.policies)) == set(
        map(
            repr,
            [
                Policy(
                    "shop-ttl",
                    r"^orders\.",
                    {
                        "dead-letter-exchange": "shop.dlx",
                        "max-length": 1000,
                        "message-ttl": 60000,
                        "overflow": "reject-publish",
                    },
                    "defs-shop",
                    "queues",
                    1,
                ),
                Policy(
                    "shop-ae",
                    r"^shop\.direct$",
                    {"alternate-exchange": "shop.unrouted"},
                    "defs-shop",
                    "exchanges",
                ),
                Policy("ops-lazy", "^ops-", {"max-length-bytes": 1048576}, "defs-ops", "queues", 2),
            ],
        )
    )


def test_exchanges_queues_and_bindings_become_declarations(export: Definitions) -> None:
    exchanges = by_name(export.exchanges)
    assert set(exchanges) == {
        "shop.direct",
        "shop.topic",
        "shop.fanout",
        "shop.headers",
        "shop.unrouted",
        "shop.dlx",
        "shop.main",
        "shop.temp",
        "ops-events",
    }
    assert exchanges["shop.main"] == ExchangeDeclaration(
        "defs-shop", "shop.main", "direct", arguments={"alternate-exchange": "shop.unrouted"}
    )
    assert exchanges["shop.temp"].auto_delete
    assert exchanges["shop.headers"].type == "headers"
    queues = by_name(export.queues)
    assert set(queues) == {
        "orders.new",
        "orders.dead",
        "shop.ttl",
        "shop.priority",
        "shop.unrouted",
        "shop.invoices",
        "ops-alerts",
    }
    assert queues["shop.ttl"] == QueueDeclaration(
        "defs-shop",
        "shop.ttl",
        arguments={
            "x-dead-letter-exchange": "shop.dlx",
            "x-dead-letter-routing-key": "expired",
            "x-message-ttl": 30000,
        },
    )
    assert queues["shop.priority"].arguments == {"x-max-priority": 10}
    assert queues["ops-alerts"].vhost == "defs-ops"
    for binding in [
        BindingDeclaration("defs-shop", "shop.main", "shop.topic", "exchange", "orders.paid"),
        BindingDeclaration("defs-shop", "shop.topic", "shop.fanout", "exchange", "orders.*"),
        BindingDeclaration("defs-shop", "shop.direct", "orders.new", "queue", "orders.new"),
    ]:
        assert binding in export.bindings
    (headers,) = [b for b in export.bindings if b.source == "shop.headers"]
    assert headers.arguments == {"x-match": "all", "format": "pdf", "type": "invoice"}
    assert len(export.bindings) == 9
    assert export.version == "3.10.8"


def test_what_amqpd_cannot_apply_is_reported_by_name(export: Definitions) -> None:
    problems = {problem.subject: problem.reason for problem in export.problems}
    assert set(problems) == UNAPPLIED
    assert problems["policy 'shop-ha' in vhost 'defs-shop'"] == (
        "not applied: amqpd has none of its keys (ha-mode, ha-sync-mode)"
    )
    assert "key queue-mode not applied" in problems["policy 'ops-lazy' in vhost 'defs-ops'"]
    assert "quorum" in problems["queue 'shop.quorum' in vhost 'defs-shop'"]
    assert "stream" in problems["queue 'shop.stream' in vhost 'defs-shop'"]
    assert "default queue type 'quorum'" in problems["vhost 'defs-qq'"]
    assert "tags shop, prod" in problems["vhost 'defs-shop'"]
    report = definitions_report(export)
    assert report.summary() == (
        f"definitions {FIXTURE}: 5 users, 4 vhosts, 7 permissions, 2 topic permissions, "
        "3 policies, 9 exchanges, 7 queues, 9 bindings applied; 11 not applied"
    )


def test_older_and_other_shapes_and_plugin_parameters(tmp_path: Path) -> None:
    """Tags as a comma-separated string and no hashing_algorithm (RabbitMQ before 3.9),
    limits as a mapping; federation and shovel parameters, the source cluster's name, an
    unknown hash algorithm (and the permissions of that user), an apply-to amqpd lacks."""
    export = parse_definitions(
        {
            "rabbit_version": "3.8.9",
            "users": [
                {
                    "name": "old",
                    "password_hash": "oZsbwQW+6dGi4HdwtE7WYqlhHZX384AbA2YbGdl78Q4MRNXx",
                    "tags": "administrator, monitoring",
                },
                {"name": "ldap", "password_hash": "x", "hashing_algorithm": "my_ldap_hash"},
                {"name": "lim", "password_hash": "", "tags": [], "limits": {"max-bytes": 1}},
            ],
            "vhosts": [{"name": "v", "limits": {"max-queues": -1, "max-connections": 3}}],
            "permissions": [
                {"user": "ldap", "vhost": "v", "configure": "", "write": "", "read": ""},
                {"user": "old", "vhost": "v", "configure": ".*", "write": ".*", "read": ".*"},
            ],
            "parameters": [
                {"component": "federation-upstream", "name": "up", "vhost": "v", "value": {}},
                {"component": "shovel", "name": "move", "vhost": "v", "value": {}},
            ],
            "global_parameters": [{"name": "cluster_name", "value": "rabbit@old"}],
            "policies": [
                {
                    "name": "cq",
                    "vhost": "v",
                    "pattern": ".",
                    "apply-to": "classic_queues",
                    "definition": {"max-length": 1},
                }
            ],
            "streams": [],
        },
        "old.json",
    )
    users = by_name(export.users)
    assert set(users) == {"old", "lim"}
    assert users["old"].tags == ("administrator", "monitoring")
    assert users["old"].hashing_algorithm is None  # read as RabbitMQ's default, SHA-256
    assert verify_password("guest", users["old"].password_hash, users["old"].hashing_algorithm)
    assert export.vhosts == (Vhost("v", limits=VhostLimits(connections_max=3)),)
    assert [p.user for p in export.permissions] == ["old"]
    assert [str(problem) for problem in export.problems] == [
        "top-level key 'streams': not a definitions key amqpd knows",
        "parameter 'up' (federation-upstream) in vhost 'v': not applied: amqpd has no "
        "federation-upstream (a RabbitMQ plugin's parameter)",
        "parameter 'move' (shovel) in vhost 'v': not applied: amqpd has no shovel "
        "(a RabbitMQ plugin's parameter)",
        "user 'ldap': not applied: its password is hashed with 'my_ldap_hash', which amqpd "
        "cannot check",
        "user 'lim': limit 'max-bytes' not applied: amqpd has no such limit",
        "the permissions of user 'ldap' in vhost 'v': not applied: user 'ldap' is not",
        "policy 'cq' in vhost 'v': not applied: amqpd has no apply-to 'classic_queues'",
    ]
    assert export.notes == ("global parameter 'cluster_name' ignored: it names the source cluster",)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("[]", "x.json: (top level): expected an object, got an array"),
        ('{"users": {}}', "x.json: users: expected an array, got an object"),
        ('{"users": [{"password_hash": ""}]}', "x.json: users[0]: 'name' is missing"),
        (
            '{"users": [{"name": "u", "tags": ["a", 1]}]}',
            "x.json: users[0].tags[1]: expected a string, got a number",
        ),
        (
            '{"users": [{"name": "u", "password_hash": "abc="}]}',
            "x.json: users[0]: user 'u': password_hash has 2 bytes, not the 36 of "
            "rabbit_password_hashing_sha256",
        ),
        (
            '{"users": [{"name": "u", "limits": {"max-channels": "5"}}]}',
            "x.json: users[0].limits.max-channels: expected an integer, got a string",
        ),
        (
            '{"vhosts": [{"name": "v", "limits": [["max-queues"]]}]}',
            "x.json: vhosts[0].limits[0]: expected a [name, value] pair",
        ),
        (
            '{"queues": [{"name": "q", "vhost": "/", "durable": "yes"}]}',
            "x.json: queues[0].durable: expected true or false, got a string",
        ),
        (
            '{"exchanges": [{"name": "x", "vhost": "/"}]}',
            "x.json: exchanges[0]: 'type' is missing",
        ),
        (
            '{"bindings": [{"source": "x", "vhost": "/", "destination": "q", '
            '"destination_type": "stream"}]}',
            "x.json: bindings[0].destination_type: expected queue or exchange: 'stream'",
        ),
        (
            '{"policies": [{"name": "p", "vhost": "/", "pattern": "x", '
            '"definition": {"message-ttl": "5"}}]}',
            "x.json: policies[0]: definition 'message-ttl' must be an integer >= 0: '5'",
        ),
        (
            '{"permissions": [{"user": "u", "vhost": "/", "configure": "(", "write": "", '
            '"read": ""}]}',
            "x.json: permissions[0]: 'configure' is not a valid regular expression",
        ),
        (
            '{"vhosts": [], "parameters": [{"component": "vhost-limits", "name": "limits", '
            '"vhost": "gone", "value": {"max-queues": 1}}]}',
            "x.json: parameters: vhost-limits for vhost 'gone', not in 'vhosts'",
        ),
    ],
)
def test_an_invalid_entry_names_the_file_and_the_json_path(data: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_definitions(json.loads(data), "x.json")
    assert str(raised.value).startswith(error)


def test_malformed_json_and_a_missing_file_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"users": [\n  {"name": "a",}\n]}')
    with pytest.raises(ConfigError, match=rf"^{broken}: not valid JSON: .*line 2, column"):
        read_definitions(broken)
    with pytest.raises(ConfigError, match=r"cannot read the definitions file"):
        read_definitions(tmp_path / "nope.json")


# ------------------------------------------------------------------ merging


def test_the_export_replaces_the_embedded_default_user_and_restates_slash(
    export: Definitions,
) -> None:
    config = merge_definitions(ServerConfig(), export, "the default config")
    guest = by_name(config.users)["guest"]
    assert guest.hashing_algorithm == "rabbit_password_hashing_sha256"  # the export's guest
    assert guest.vhosts == ()  # its permission on / comes from the export's permissions
    assert len(config.users) == 5
    assert by_name(config.vhosts)["/"].description == "Default virtual host"
    assert len(config.vhosts) == 4
    assert len(config.permissions) == 7 and len(config.policies) == 3
    assert config.loopback_users == ("guest",)


def test_the_export_joins_a_configured_tenancy(export: Definitions) -> None:
    config = parse(
        {
            "vhosts": ["tenant"],
            "users": [{"name": "app"}],
            "permissions": [
                {"user": "app", "vhost": "tenant", "configure": "", "write": "", "read": ".*"}
            ],
            "policies": [
                {
                    "name": "shop-ttl",
                    "vhost": "tenant",
                    "pattern": ".",
                    "definition": {"max-length": 1},
                }
            ],
        },
        "amqpd.yaml",
    )
    merged = merge_definitions(config, export, "amqpd.yaml")
    assert merged.vhost_names[0] == "tenant" and "defs-shop" in merged.vhost_names
    assert merged.users[0].name == "app"
    assert len(merged.users) == 6 and len(merged.permissions) == 8
    assert len(merged.policies) == 4  # shop-ttl in tenant and shop-ttl in defs-shop


def clash(tenancy: dict[str, Any], export: Definitions) -> str:
    config = parse({"vhosts": ["/", "tenant"], **tenancy}, "amqpd.yaml")
    with pytest.raises(ConfigError) as raised:
        merge_definitions(config, export, "amqpd.yaml")
    return str(raised.value)


def test_a_vhost_in_both_places_names_both_files(export: Definitions) -> None:
    message = clash({}, export)
    assert message == (
        f"{FIXTURE}: vhosts: vhost '/': also defined in amqpd.yaml; define it in one place"
    )
    config = parse({"vhosts": ["defs-ops"], "users": []}, "amqpd.yaml")
    with pytest.raises(ConfigError, match=r"vhost 'defs-ops': also defined in amqpd.yaml"):
        merge_definitions(config, export, "amqpd.yaml")


def test_a_user_in_both_places_names_both_files(export: Definitions) -> None:
    config = parse({"users": [{"name": "defs-alice"}]}, "amqpd.yaml")
    with pytest.raises(ConfigError) as raised:
        merge_definitions(config, export, "amqpd.yaml")
    assert str(raised.value) == (
        f"{FIXTURE}: users: user 'defs-alice': also defined in amqpd.yaml; define it in one place"
    )


@pytest.mark.parametrize(
    "tenancy",
    [
        {"users": [{"name": "guest", "password_hash": "", "vhosts": ["/"]}]},
        {
            "users": [{"name": "guest", "password_hash": ""}],
            "permissions": [
                {"user": "guest", "vhost": "/", "configure": "", "write": "", "read": ""}
            ],
        },
    ],
)
def test_a_permission_in_both_places_names_both_files(tenancy: dict[str, Any]) -> None:
    """guest's permissions on / are in the export; here the config grants them too (by
    the vhosts shorthand or an entry), with the user itself only in the config."""
    export = parse_definitions(
        {
            "permissions": [
                {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
            ]
        },
        "defs.json",
    )
    config = parse(tenancy, "amqpd.yaml")
    with pytest.raises(ConfigError) as raised:
        merge_definitions(config, export, "amqpd.yaml")
    assert str(raised.value) == (
        "defs.json: permissions: the permissions of user 'guest' in vhost '/': also defined "
        "in amqpd.yaml; define it in one place"
    )


def test_topic_permissions_and_policies_in_both_places_name_both_files() -> None:
    export = parse_definitions(
        {
            "topic_permissions": [
                {"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": "", "read": ""}
            ],
            "policies": [
                {"name": "p", "vhost": "/", "pattern": ".", "definition": {"max-length": 1}}
            ],
        },
        "defs.json",
    )
    config = parse(
        {
            "topic_permissions": [
                {"user": "guest", "exchange": "amq.topic", "write": ".*", "read": ".*"}
            ]
        },
        "amqpd.yaml",
    )
    with pytest.raises(
        ConfigError,
        match=r"^defs.json: topic_permissions: the topic "
        r"permission of user 'guest' on exchange 'amq.topic' in vhost '/':"
        r" also defined in amqpd.yaml",
    ):
        merge_definitions(config, export, "amqpd.yaml")
    config = parse(
        {"policies": [{"name": "p", "pattern": "x", "definition": {"max-length": 2}}]},
        "amqpd.yaml",
    )
    with pytest.raises(
        ConfigError,
        match=r"^defs.json: policies: policy 'p' in vhost '/':"
        r" also defined in amqpd.yaml",
    ):
        merge_definitions(config, export, "amqpd.yaml")


def test_a_reference_to_a_user_defined_nowhere_names_the_file() -> None:
    export = parse_definitions(
        {
            "permissions": [
                {"user": "ghost", "vhost": "/", "configure": "", "write": "", "read": ""}
            ]
        },
        "defs.json",
    )
    with pytest.raises(ConfigError) as raised:
        merge_definitions(ServerConfig(), export, "the default config")
    assert str(raised.value) == (
        "defs.json with the default config: user 'ghost' is not in 'users'"
    )


# --------------------------------------------------------- command line, node


@pytest.mark.parametrize("how", ["flag", "key"])
def test_the_config_may_grant_rights_in_a_vhost_only_the_export_defines(
    tmp_path: Path, how: str
) -> None:
    """An operator adds a user of their own with rights in a migrated vhost; names are
    checked once the export has joined the config."""
    (tmp_path / "export.json").write_text(FIXTURE.read_text())
    config_text = (
        "users:\n"
        "  - {name: watcher, password_hash: ''}\n"
        "permissions:\n"
        "  - {user: watcher, vhost: defs-shop, configure: '', write: '', read: '^shop\\.'}\n"
        "  - {user: defs-monitor, vhost: /, configure: '', write: '', read: '.*'}\n"
    )
    arguments = ["--config", str(tmp_path / "amqpd.yaml")]
    if how == "flag":
        arguments += ["--definitions", str(tmp_path / "export.json")]
    else:
        config_text += "definitions_file: export.json\n"
    (tmp_path / "amqpd.yaml").write_text(config_text)
    config = make_config(build_parser().parse_args(arguments))
    granted = {(permission.user, permission.vhost) for permission in config.permissions}
    assert {("watcher", "defs-shop"), ("defs-monitor", "/")} <= granted

    # A name defined in neither place is still an error, once both are read.
    (tmp_path / "amqpd.yaml").write_text(config_text.replace("defs-shop", "defs-nowhere"))
    with pytest.raises(ConfigError, match="vhost 'defs-nowhere' is not in 'vhosts'"):
        make_config(build_parser().parse_args(arguments))


def test_definitions_flag_overrides_the_key_and_is_read_again_each_time(tmp_path: Path) -> None:
    (tmp_path / "amqpd.yaml").write_text("definitions_file: nothing-here.json\n")
    copy = tmp_path / "export.json"
    copy.write_text(FIXTURE.read_text())
    args = build_parser().parse_args(
        ["--config", str(tmp_path / "amqpd.yaml"), "--definitions", str(copy)]
    )
    config, definitions = configure(args)
    assert config.definitions_file == copy
    assert definitions is not None and definitions.source == str(copy)
    assert len(config.policies) == 3
    # What SIGHUP calls reads the file again.
    data = json.loads(copy.read_text())
    data["policies"].append(
        {
            "name": "new",
            "vhost": "/",
            "pattern": ".",
            "apply-to": "all",
            "priority": 0,
            "definition": {"max-length": 7},
        }
    )
    copy.write_text(json.dumps(data))
    assert len(make_config(args).policies) == 4
    # Without the flag, the key names the file, relative to the config file.
    args = build_parser().parse_args(["--config", str(tmp_path / "amqpd.yaml")])
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'nothing-here.json'}: cannot read"):
        make_config(args)


def test_the_report_a_start_would_log_is_available_without_starting(
    export: Definitions,
) -> None:
    config = merge_definitions(ServerConfig(), export, "the default config")
    report = check_definitions(config, export)
    assert report == definitions_report(export)
    assert report.applied["queues"] == 7


def test_an_inequivalent_existing_entity_is_reported_and_the_rest_declared(
    export: Definitions,
) -> None:
    config = merge_definitions(ServerConfig(), export, "the default config")
    broker = Broker(config.vhost_names)
    shop = broker.vhosts["defs-shop"]
    shop.declare_queue("shop.priority", owner=None, durable=True)  # no x-max-priority
    shop.declare_exchange("shop.topic", "fanout", durable=True)
    shop.declare_queue("orders.new", owner=None, durable=True)  # equivalent: left alone
    refused = apply_definitions(broker, export)
    assert [str(problem) for problem in refused] == [
        "exchange 'shop.topic' in vhost 'defs-shop': not declared: inequivalent arg 'type' "
        "for exchange 'shop.topic' in vhost 'defs-shop': received 'topic' but current is "
        "'fanout'",
        "queue 'shop.priority' in vhost 'defs-shop': not declared: inequivalent arg "
        "'x-max-priority' for queue 'shop.priority' in vhost 'defs-shop': received the value "
        "'10' of type 'long' but current is none",
    ]
    assert set(shop.queues) == {
        "orders.new",
        "orders.dead",
        "shop.ttl",
        "shop.priority",
        "shop.unrouted",
        "shop.invoices",
    }
    report = definitions_report(export, refused)
    assert report.applied["exchanges"] == 8 and report.applied["queues"] == 6
    assert report.summary().endswith("; 13 not applied")
    # Declaring again changes nothing and refuses the same two.
    assert apply_definitions(broker, export) == refused
    assert definitions_report(export, apply_definitions(broker, export)) == report


def test_an_entity_of_a_vhost_that_is_not_configured_is_reported() -> None:
    export = parse_definitions(
        {
            "queues": [
                {
                    "name": "q",
                    "vhost": "elsewhere",
                    "durable": True,
                    "auto_delete": False,
                    "arguments": {},
                }
            ]
        },
        "defs.json",
    )
    (problem,) = apply_definitions(Broker(["/"]), export)
    assert str(problem) == (
        "queue 'q' in vhost 'elsewhere': not declared: vhost 'elsewhere' is not configured"
    )
