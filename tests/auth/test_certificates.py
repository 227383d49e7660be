"""The user a verified client certificate logs in as (SASL EXTERNAL), and the checks an
EXTERNAL login still goes through."""

from __future__ import annotations

import pytest

from amqpd.auth.users import Authenticator, CertificateSubject, certificate_user_name
from amqpd.config.model import User
from amqpd.errors import LoginRefused


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ((), None),
        (((("organizationName", "acme"),),), None),
        (
            ((("organizationName", "acme"),), (("commonName", "orders"),)),
            "orders",
        ),
        # Several CNs are joined, as RabbitMQ does (in one RDN or in several).
        (((("commonName", "a"),), (("commonName", "b"),)), "a,b"),
        (((("commonName", "a"), ("commonName", "b")),), "a,b"),
    ],
)
def test_the_user_is_the_subjects_common_name(
    subject: CertificateSubject, name: str | None
) -> None:
    assert certificate_user_name(subject) == name


def test_external_needs_a_known_user_allowed_from_the_address() -> None:
    authenticator = Authenticator([User("orders"), User("guest")], loopback_users=["guest"])
    assert authenticator.authenticate_external("orders", "10.0.0.1").name == "orders"
    with pytest.raises(LoginRefused, match="mechanism EXTERNAL"):
        authenticator.authenticate_external("nobody", "10.0.0.1")
    with pytest.raises(LoginRefused):
        authenticator.authenticate_external("guest", "10.0.0.1")
    assert authenticator.authenticate_external("guest", "127.0.0.1").name == "guest"
