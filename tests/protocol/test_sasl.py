"""SASL responses in connection.start-ok (amqpd.protocol.sasl): PLAIN, AMQPLAIN and
EXTERNAL.

Well-formed responses give the credentials back; malformed ones, and unknown mechanisms,
raise LoginRefused (403) and never anything else. EXTERNAL gives none: the server takes
the user from the client certificate.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pamqp.encode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.codec.fields import encode_table
from amqpd.errors import ACCESS_REFUSED, LoginRefused
from amqpd.protocol.sasl import (
    MECHANISMS,
    MECHANISMS_WITH_EXTERNAL,
    Credentials,
    decode_response,
)

# Anything but NUL, which PLAIN uses as its separator.
plain_text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40
)
# Any bytes but NUL, decoded the way amqpd decodes them.
plain_bytes = st.binary(max_size=40).filter(lambda raw: b"\x00" not in raw)


def test_mechanisms_offered() -> None:
    assert MECHANISMS == ("PLAIN", "AMQPLAIN")
    # As RabbitMQ with rabbitmq_auth_mechanism_ssl: EXTERNAL first.
    assert MECHANISMS_WITH_EXTERNAL == ("EXTERNAL", "PLAIN", "AMQPLAIN")


@pytest.mark.parametrize("response", [b"", b"someone", b"\x00\x01"])
def test_external_ignores_its_response(response: bytes) -> None:
    # An authorization identity in the response is ignored, as RabbitMQ does.
    assert decode_response("EXTERNAL", response) == Credentials("", "")


# ---------------------------------------------------------------- PLAIN


@given(authzid=plain_text, username=plain_text, password=plain_text)
def test_plain(authzid: str, username: str, password: str) -> None:
    response = f"{authzid}\x00{username}\x00{password}".encode()
    assert decode_response("PLAIN", response) == Credentials(username, password)


@given(username=plain_bytes, password=plain_bytes)
def test_plain_keeps_bytes_that_are_not_utf8(username: bytes, password: bytes) -> None:
    credentials = decode_response("PLAIN", b"\x00" + username + b"\x00" + password)
    assert credentials.username.encode("utf-8", "surrogateescape") == username
    assert credentials.password.encode("utf-8", "surrogateescape") == password


def test_password_is_not_in_the_repr() -> None:
    assert "secret" not in repr(decode_response("PLAIN", b"\x00guest\x00secret"))


@pytest.mark.parametrize(
    "response",
    [b"", b"guest", b"guest\x00guest", b"\x00guest", b"\x00a\x00b\x00c", b"\x00\x00\x00\x00"],
    ids=repr,
)
def test_plain_malformed(response: bytes) -> None:
    with pytest.raises(LoginRefused, match="PLAIN login refused"):
        decode_response("PLAIN", response)


@given(response=st.binary(max_size=64))
def test_plain_any_bytes_give_credentials_or_login_refused(response: bytes) -> None:
    try:
        decode_response("PLAIN", response)
    except LoginRefused:
        assert response.count(b"\x00") != 2


# ---------------------------------------------------------------- AMQPLAIN


def amqplain(table: dict[str, Any]) -> bytes:
    """A field table without its 4-byte length prefix, as AMQPLAIN clients send it."""
    return encode_table(table)[4:]


@given(username=st.text(max_size=40), password=st.text(max_size=40))
def test_amqplain(username: str, password: str) -> None:
    response = amqplain({"LOGIN": username, "PASSWORD": password})
    assert decode_response("AMQPLAIN", response) == Credentials(username, password)


@given(username=st.text(max_size=40), password=st.text(max_size=40))
def test_amqplain_as_pamqp_writes_it(username: str, password: str) -> None:
    # pamqp sorts the keys; order must not matter.
    response = pamqp.encode.field_table({"PASSWORD": password, "LOGIN": username})[4:]
    assert decode_response("AMQPLAIN", response) == Credentials(username, password)


def test_amqplain_ignores_other_keys() -> None:
    response = amqplain({"LOCALE": "en_US", "LOGIN": "guest", "x": 1, "PASSWORD": "pw"})
    assert decode_response("AMQPLAIN", response) == Credentials("guest", "pw")


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"LOGIN": "guest"},
        {"PASSWORD": "guest"},
        {"login": "guest", "password": "guest"},
        {"LOGIN": b"guest", "PASSWORD": "guest"},  # binary, not a long string
        {"LOGIN": "guest", "PASSWORD": 1},
        {"LOGIN": None, "PASSWORD": "guest"},
        {"LOGIN": ["guest"], "PASSWORD": "guest"},
    ],
    ids=repr,
)
def test_amqplain_without_string_login_and_password(table: dict[str, Any]) -> None:
    with pytest.raises(LoginRefused, match="LOGIN and PASSWORD are required"):
        decode_response("AMQPLAIN", amqplain(table))


@pytest.mark.parametrize(
    "response",
    [
        b"\x05LOGINS\x00\x00\x00\x05gue",  # long string runs past the end
        b"\x05LOGINS\x00\x00",  # length truncated
        b"\x05LOGIN",  # no value
        b"\x05LOG",  # key runs past the end
        b"\x05LOGINZ",  # unknown type
        struct.pack(">I", 30) + b"\x05LOGINS\x00\x00\x00\x01a",  # a length prefix after all
    ],
    ids=repr,
)
def test_amqplain_malformed(response: bytes) -> None:
    with pytest.raises(LoginRefused, match="malformed response"):
        decode_response("AMQPLAIN", response)


@given(username=st.text(max_size=20), password=st.text(max_size=20), data=st.data())
def test_amqplain_every_truncation_is_refused(
    username: str, password: str, data: st.DataObject
) -> None:
    response = amqplain({"LOGIN": username, "PASSWORD": password})
    cut = data.draw(st.integers(0, len(response) - 1))
    with pytest.raises(LoginRefused):
        decode_response("AMQPLAIN", response[:cut])


@given(response=st.binary(max_size=64))
def test_amqplain_any_bytes_give_credentials_or_login_refused(response: bytes) -> None:
    with contextlib.suppress(LoginRefused):
        decode_response("AMQPLAIN", response)


# ---------------------------------------------------------------- mechanisms


@pytest.mark.parametrize("mechanism", ["", "external", "CRAM-MD5", "SCRAM-SHA-256", "ANONYMOUS"])
def test_unknown_mechanism_is_refused(mechanism: str) -> None:
    with pytest.raises(LoginRefused, match="unsupported authentication mechanism") as caught:
        decode_response(mechanism, b"\x00guest\x00guest")
    assert caught.value.reply_code == ACCESS_REFUSED
