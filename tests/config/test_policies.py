"""Policies in the config file: what is accepted, and what stops start-up (or a reload)
with the file, the key and the reason."""

from __future__ import annotations

import pytest
import yaml

from amqpd.broker.policies import POLICY_KEYS
from amqpd.config.load import ConfigError, parse
from amqpd.config.model import POLICY_CHOICE_KEYS, POLICY_INTEGER_KEYS, POLICY_STRING_KEYS
from amqpd.node import broker_policies


def test_a_policy_is_read_with_its_defaults_and_given_to_the_broker_by_vhost() -> None:
    config = parse(
        yaml.safe_load(
            "vhosts: [/, tenant]\n"
            "policies:\n"
            "  - {name: a, pattern: ^orders, definition: {message-ttl: 1000}}\n"
            "  - name: b\n"
            "    vhost: tenant\n"
            "    pattern: .\n"
            "    apply_to: exchanges\n"
            "    priority: 3\n"
            "    definition: {alternate-exchange: ae}\n"
        ),
        "amqpd.yaml",
    )
    first, _ = config.policies
    assert (first.vhost, first.apply_to, first.priority) == ("/", "all", 0)
    by_vhost = broker_policies(config)
    assert [policy.name for policy in by_vhost["/"]] == ["a"]
    (tenant,) = by_vhost["tenant"]
    assert tenant.covers("exchange", "x") and not tenant.covers("queue", "x")
    assert tenant.definition == {"alternate-exchange": "ae"}


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (
            "{name: a, pattern: '(', definition: {max-length: 1}}",
            "policies[0]: 'pattern' is not a valid regular expression",
        ),
        (
            "{name: a, pattern: x, definition: {max-length: -1}}",
            "policies[0]: definition 'max-length' must be an integer >= 0: -1",
        ),
        (
            "{name: a, pattern: x, definition: {expires: 0}}",
            "policies[0]: definition 'expires' must be an integer >= 1: 0",
        ),
        (
            "{name: a, pattern: x, definition: {message-ttl: '5'}}",
            "policies[0]: definition 'message-ttl' must be an integer >= 0: '5'",
        ),
        (
            "{name: a, pattern: x, definition: {max-priority: 3}}",
            "policies[0]: definition 'max-priority' is not a policy key",
        ),
        (
            "{name: a, pattern: x, definition: {overflow: drop}}",
            "definition 'overflow' must be one of drop-head, reject-publish, reject-publish-dlx",
        ),
        (
            "{name: a, pattern: x, definition: {dead-letter-exchange: 5}}",
            "definition 'dead-letter-exchange' must be a string: 5",
        ),
        ("{name: a, pattern: x, definition: {}}", "policies[0]: 'definition' sets nothing"),
        (
            "{name: a, pattern: x, apply_to: queue, definition: {expires: 5}}",
            "policies[0]: 'apply_to' must be in ('queues', 'exchanges', 'all') (got 'queue')",
        ),
        (
            "{name: a, pattern: x, vhost: other, definition: {expires: 5}}",
            "policies[0] ('a'): vhost 'other' is not in 'vhosts'",
        ),
        ("{name: a, pattern: x, definition: {expires: 5}, extra: 1}", "extra fields found"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_file_the_policy_and_the_reason(
    policy: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse(yaml.safe_load(f"policies: [{policy}]"), "amqpd.yaml")
    assert str(error.value).startswith("amqpd.yaml: ")
    assert reason in str(error.value)


def test_two_policies_of_one_name_in_a_vhost_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"policies\[1\] \('a'\): a second policy"):
        parse(
            yaml.safe_load(
                "policies: [{name: a, pattern: x, definition: {expires: 5}},"
                " {name: a, pattern: y, definition: {expires: 6}}]"
            ),
            "amqpd.yaml",
        )


def test_the_config_accepts_exactly_the_keys_the_broker_applies() -> None:
    accepted = {*POLICY_INTEGER_KEYS, *POLICY_CHOICE_KEYS, *POLICY_STRING_KEYS}
    assert accepted == POLICY_KEYS
