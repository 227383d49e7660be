"""SASL responses carried by connection.start-ok: PLAIN, AMQPLAIN and EXTERNAL.

Turns a mechanism name and its response bytes into a username and password; checking
them is auth/'s job. A malformed response is a login failure, not a protocol error, so
the peer hears 403 ACCESS_REFUSED as RabbitMQ answers it. EXTERNAL carries no
credentials: the identity is the client certificate the TLS layer verified, which the
server knows and this module does not.

Sans-IO; imports amqpd.codec and amqpd.errors only.
"""

from __future__ import annotations

from typing import Final

import attrs

from amqpd.codec.fields import decode_value
from amqpd.errors import AMQPSyntaxError, LoginRefused

MECHANISMS: Final = ("PLAIN", "AMQPLAIN")
EXTERNAL: Final = "EXTERNAL"
# What a TLS listener that verifies client certificates offers: EXTERNAL first, as
# RabbitMQ with rabbitmq_auth_mechanism_ssl lists it.
MECHANISMS_WITH_EXTERNAL: Final = (EXTERNAL, *MECHANISMS)


@attrs.frozen
class Credentials:
    username: str
    password: str = attrs.field(repr=False)


def decode_response(mechanism: str, response: bytes) -> Credentials:
    """Credentials from a SASL response; LoginRefused if the mechanism or response is bad."""
    if mechanism == "PLAIN":
        return _plain(response)
    if mechanism == "AMQPLAIN":
        return _amqplain(response)
    if mechanism == EXTERNAL:
        # The response may name an authorization identity; RabbitMQ ignores it, and so
        # do we: the user is the one the certificate names.
        return Credentials("", "")
    raise LoginRefused(f"unsupported authentication mechanism '{mechanism}'")


def _plain(response: bytes) -> Credentials:
    # RFC 4616: [authzid] NUL authcid NUL passwd
    parts = response.split(b"\x00")
    if len(parts) != 3:
        raise LoginRefused("PLAIN login refused: malformed response")
    _authzid, username, password = parts
    return Credentials(
        username.decode("utf-8", "surrogateescape"), password.decode("utf-8", "surrogateescape")
    )


def _amqplain(response: bytes) -> Credentials:
    # A field table without its length prefix: LOGIN and PASSWORD, long strings.
    values: dict[str, object] = {}
    offset = 0
    try:
        while offset < len(response):
            length = response[offset]
            key = response[offset + 1 : offset + 1 + length].decode("utf-8", "surrogateescape")
            values[key], offset = decode_value(response, offset + 1 + length)
    except (AMQPSyntaxError, IndexError) as error:
        raise LoginRefused("AMQPLAIN login refused: malformed response") from error
    username, password = values.get("LOGIN"), values.get("PASSWORD")
    if not isinstance(username, str) or not isinstance(password, str):
        raise LoginRefused("AMQPLAIN login refused: LOGIN and PASSWORD are required")
    return Credentials(username, password)
