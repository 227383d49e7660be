"""Access: RabbitMQ's reading of permission patterns, names and topic variables."""

from __future__ import annotations

import pytest

from amqpd.broker.access import CONFIGURE, READ, WRITE, Access
from amqpd.errors import AccessRefused


def test_a_pattern_is_searched_not_anchored_and_an_empty_one_matches_nothing() -> None:
    access = Access("u", "/", "orders", "", "^a$")
    assert access.allows(CONFIGURE, "new-orders-queue")
    assert not access.allows(WRITE, "anything")
    assert access.allows(READ, "a") and not access.allows(READ, "ab")


def test_the_default_exchange_is_checked_as_amq_default() -> None:
    access = Access("u", "v", "", "^amq\\.default$", "")
    access.check(WRITE, "exchange", "")
    with pytest.raises(AccessRefused) as refused:
        Access("u", "v", "", "", "").check(WRITE, "exchange", "")
    assert refused.value.reply_text == (
        "ACCESS_REFUSED - access to exchange 'amq.default' in vhost 'v' refused for user 'u'"
    )


def test_topic_patterns_expand_username_and_vhost() -> None:
    access = Access(
        "ann", "shop", ".*", ".*", ".*", topics={"t": ("^{username}\\.", "^{vhost}\\.")}
    )
    access.check_topic(WRITE, "t", "ann.orders")
    access.check_topic(READ, "t", "shop.#")
    access.check_topic(WRITE, "other", "bob.orders")  # no rule on that exchange
    with pytest.raises(AccessRefused) as refused:
        access.check_topic(WRITE, "t", "bob.orders")
    assert (
        "access to topic 'bob.orders' in exchange 't' in vhost 'shop'" in refused.value.reply_text
    )


def test_answers_stay_right_past_the_memo_size() -> None:
    access = Access("u", "/", "^keep", "", "")
    for number in range(10_000):
        assert access.allows(CONFIGURE, f"keep{number}")
        assert not access.allows(CONFIGURE, f"drop{number}")
