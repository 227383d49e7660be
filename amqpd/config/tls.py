"""A listener's TLS settings made into an ssl.SSLContext for the server side.

The loader builds one for every TLS listener when it reads the config, so that a missing
file, a certificate or key that does not load, or a key that does not match its
certificate is a config error naming the key, before anything starts; node.py builds the
ones it serves with.

Imports config.model and ssl only.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from amqpd.config.model import Tls


class TlsSettingsError(ValueError):
    """A TLS file that cannot be used: `key` names the setting, `reason` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def server_context(tls: Tls) -> ssl.SSLContext:
    """The context an amqps listener wraps accepted sockets with; TlsSettingsError if a
    file cannot be read or does not hold what its key says."""
    for key in ("cert_file", "key_file", "ca_file"):
        path = getattr(tls, key)
        if path is not None:
            _check_readable(key, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A TLS 1.2 renegotiation would make the write pump read from the socket while the
    # read loop does; nothing in AMQP needs one.
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        # A file of PEM certificates loads as trust anchors: this tells a certificate
        # file that holds none from a key that does not fit it.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=tls.cert_file)
    except ssl.SSLError as error:
        raise TlsSettingsError(
            "cert_file", f"{tls.cert_file} holds no PEM certificate ({_reason(error)})"
        ) from None
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except _EncryptedKey:
        raise TlsSettingsError(
            "key_file", f"{tls.key_file} is encrypted; amqpd needs a key without a passphrase"
        ) from None
    except ssl.SSLError as error:
        raise TlsSettingsError(
            "key_file",
            f"{tls.key_file} holds no private key that matches cert_file ({_reason(error)})",
        ) from None
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except ssl.SSLError as error:
            raise TlsSettingsError(
                "ca_file", f"{tls.ca_file} holds no PEM CA certificate ({_reason(error)})"
            ) from None
    if tls.verify_peer:
        # CERT_OPTIONAL still fails the handshake on a certificate that does not verify;
        # it only lets a client without one through, to log in with a password.
        context.verify_mode = ssl.CERT_REQUIRED if tls.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    return context


def verifies_peers(context: ssl.SSLContext) -> bool:
    """Whether a context asks clients for a certificate (and so may offer EXTERNAL)."""
    return context.verify_mode != ssl.CERT_NONE


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and block start-up.
    raise _EncryptedKey


def _check_readable(key: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise TlsSettingsError(key, f"cannot read {path}: {error.strerror}") from None


def _reason(error: ssl.SSLError) -> str:
    # OpenSSL names most failures; one it does not ("PEM lib") is a file that is not PEM.
    return str(error.reason) if error.reason else "not PEM"
