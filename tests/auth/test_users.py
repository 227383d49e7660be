"""The authenticator, the password formats and the failed-login throttle, without a
network: who may log in from where, and what a refusal costs."""

from __future__ import annotations

import pytest

import amqpd.auth.passwords as passwords
from amqpd.auth.passwords import hash_password, verify_password
from amqpd.auth.users import Authenticator, FailureThrottle
from amqpd.config.model import Permission, TopicPermission, User
from amqpd.errors import LoginRefused


@pytest.fixture
def argon2_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes argon2 verifies against from now on (hashing itself is not counted)."""
    checks: list[str] = []
    real = passwords._ARGON2

    class Counted:
        def hash(self, password: str) -> str:
            return real.hash(password)

        def verify(self, password_hash: str, password: str) -> bool:
            checks.append(password_hash)
            return real.verify(password_hash, password)

    monkeypatch.setattr(passwords, "_ARGON2", Counted())
    return checks


@pytest.mark.parametrize("algorithm", ["argon2", "sha256", "sha512", "md5"])
def test_every_format_verifies_its_password_and_nothing_else(algorithm: str) -> None:
    made = hash_password("right", algorithm=algorithm)
    assert verify_password("right", made, passwords.ALGORITHM_NAMES[algorithm])
    assert not verify_password("wrong", made, passwords.ALGORITHM_NAMES[algorithm])
    assert not verify_password("right", "", None)


def test_a_rabbitmq_sha256_hash_from_a_definitions_export_verifies() -> None:
    # RabbitMQ's own documentation example: salt 908DC60A, password "test12".
    assert verify_password("test12", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR")
    assert not verify_password("test13", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR")


def test_an_unknown_user_and_a_wrong_password_cost_the_same_one_argon2_check(
    argon2_checks: list[str],
) -> None:
    checks = argon2_checks
    users = [
        User("new", hash_password("pw"), vhosts=("/",)),
        User("migrated", hash_password("pw", algorithm="sha256"), vhosts=("/",)),
    ]
    authenticator = Authenticator(users, ())
    for name in ("new", "migrated", "nobody"):
        checks.clear()
        with pytest.raises(LoginRefused) as refused:
            authenticator.authenticate("PLAIN", name, "wrong", "127.0.0.1")
        assert len(checks) == 1, name
        assert refused.value.reply_text == (
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
            "For details see the broker logfile."
        )
    assert authenticator.authenticate("PLAIN", "migrated", "pw", "127.0.0.1").name == "migrated"

    # RabbitMQ's formats only (the default config): no argon2 check, unknown or not.
    checks.clear()
    rabbit_only = Authenticator(users[1:], ())
    for name in ("migrated", "nobody"):
        with pytest.raises(LoginRefused):
            rabbit_only.authenticate("PLAIN", name, "wrong", "127.0.0.1")
    assert checks == []


def test_loopback_users_log_in_only_from_loopback() -> None:
    authenticator = Authenticator([User("guest", hash_password("guest"), vhosts=("/",))], ["guest"])
    assert authenticator.authenticate("PLAIN", "guest", "guest", "::1").name == "guest"
    with pytest.raises(LoginRefused):
        authenticator.authenticate("PLAIN", "guest", "guest", "10.1.2.3")
    open_to_all = Authenticator([User("guest", hash_password("guest"), vhosts=("/",))], [])
    assert open_to_all.authenticate("PLAIN", "guest", "guest", "10.1.2.3").name == "guest"


def test_a_user_without_a_password_logs_in_only_by_certificate() -> None:
    authenticator = Authenticator([User("device-7")], ())
    with pytest.raises(LoginRefused):
        authenticator.authenticate("PLAIN", "device-7", "", "127.0.0.1")
    assert authenticator.authenticate_external("device-7", "127.0.0.1").name == "device-7"
    with pytest.raises(LoginRefused):
        authenticator.authenticate_external("device-8", "127.0.0.1")


def test_grants_come_from_the_vhosts_shorthand_and_from_permissions() -> None:
    authenticator = Authenticator(
        [User("a", vhosts=("/",)), User("b")],
        (),
        [Permission("b", "", "^x$", ".*", vhost="t")],
        [TopicPermission("b", "amq.topic", "^b\\.", ".*", vhost="t")],
    )
    full = authenticator.grant("a", "/")
    assert full is not None and (full.configure, full.write, full.read) == (".*", ".*", ".*")
    narrow = authenticator.grant("b", "t")
    assert narrow is not None and narrow.write == "^x$"
    assert narrow.topics == {"amq.topic": ("^b\\.", ".*")}
    assert authenticator.grant("b", "/") is None


def test_the_throttle_delays_after_the_allowed_failures_and_forgets_after_the_window() -> None:
    throttle = FailureThrottle(window_s=60, allowed=2, delay_s=0.5, delay_s_max=2)
    for now in (0.0, 1.0):
        assert throttle.delay_s("10.0.0.1", now) == 0
        throttle.failed("10.0.0.1", now)
    assert throttle.delay_s("10.0.0.1", 2.0) == 0.5
    throttle.failed("10.0.0.1", 2.0)
    assert throttle.delay_s("10.0.0.1", 3.0) == 1.0
    throttle.failed("10.0.0.1", 3.0)
    throttle.failed("10.0.0.1", 3.0)
    assert throttle.delay_s("10.0.0.1", 4.0) == 2.0  # capped
    assert throttle.delay_s("10.0.0.2", 4.0) == 0  # per address
    assert throttle.delay_s("10.0.0.1", 70.0) == 0  # the window passed


def test_a_password_that_checked_out_is_not_checked_again_within_the_cache_period(
    argon2_checks: list[str],
) -> None:
    checks = argon2_checks
    user = User("app", hash_password("pw"), vhosts=("/",))
    authenticator = Authenticator([user], (), login_cache_s=60)
    authenticator.authenticate("PLAIN", "app", "pw", "127.0.0.1", now=0.0)
    assert len(checks) == 1
    authenticator.authenticate("PLAIN", "app", "pw", "127.0.0.1", now=30.0)
    assert len(checks) == 1  # remembered
    with pytest.raises(LoginRefused):
        authenticator.authenticate("PLAIN", "app", "wrong", "127.0.0.1", now=31.0)
    assert len(checks) == 2  # a wrong password always pays the full check
    authenticator.authenticate("PLAIN", "app", "pw", "127.0.0.1", now=61.0)
    assert len(checks) == 3  # the period is over
    # A reload builds a new authenticator: a changed password is never answered from memory.
    changed = Authenticator(
        [User("app", hash_password("new"), vhosts=("/",))], (), login_cache_s=60
    )
    with pytest.raises(LoginRefused):
        changed.authenticate("PLAIN", "app", "pw", "127.0.0.1", now=62.0)
