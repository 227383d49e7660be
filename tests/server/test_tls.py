"""amqps listeners and SASL EXTERNAL, through pika and the real process, with a CA made
in the test (trustme): PLAIN over TLS, EXTERNAL as the certificate's CN, refusals at the
TLS handshake and at login, a plain client on the TLS port, a bad certificate path."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pika
import pika.credentials
import pika.exceptions
import pytest
import trustme
from pamqp import commands

from amqpd.config.model import GUEST_PASSWORD_HASH
from tests.support.audit import wait_for_entry
from tests.support.broker_process import BrokerProcess
from tests.support.raw_client import PROTOCOL_HEADER, RawClient

CERT_USER = "cert-user"  # has no password: it can only log in with its certificate
TLS_READY = re.compile(r"amqpd ready: .*:(\d+) \(TLS\)")


@attrs.frozen
class Pki:
    """A CA, the broker's certificate for 127.0.0.1 and localhost, and client
    certificates, written where the broker's config names them."""

    folder: Path
    ca: trustme.CA
    client: trustme.LeafCert  # CN = CERT_USER
    stranger: trustme.LeafCert  # CN = CERT_USER too, but signed by another CA

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"


def make_pki(folder: Path) -> Pki:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(folder / "server.pem"), append=True)
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    return Pki(
        folder,
        ca,
        ca.issue_cert(common_name=CERT_USER),
        trustme.CA().issue_cert(common_name=CERT_USER),
    )


def write_config(folder: Path, tls: str, limits: str = "") -> Path:
    """Two listeners, plain then TLS, both on free ports; TLS files relative to the
    config file, which is elsewhere than the broker's working folder."""
    config = folder / "amqpd.yaml"
    config.write_text(
        "listeners:\n"
        "  - {bind: 127.0.0.1, port: 0}\n"
        f"  - {{bind: 127.0.0.1, port: 0, tls: {{{tls}}}}}\n"
        "users:\n"
        f"  - {{name: guest, password_hash: {GUEST_PASSWORD_HASH}, vhosts: [/]}}\n"
        f"  - {{name: {CERT_USER}, vhosts: [/]}}\n"
        "audit_log: audit.jsonl\n"
        "limits: {handshake_error_delay_s: 0" + (f", {limits}" if limits else "") + "}\n"
    )
    return config


SERVER_FILES = "cert_file: server.pem, key_file: server.key"
VERIFYING = f"{SERVER_FILES}, ca_file: ca.pem, verify_peer: true"


class TlsBroker(BrokerProcess):
    tls_port = 0

    def start(self, timeout_s: float = 15.0) -> TlsBroker:
        super().start(timeout_s)
        self.tls_port = int(self.wait_for(TLS_READY).group(1))
        return self


def start_broker(folder: Path, tls: str, limits: str = "") -> TlsBroker:
    config = write_config(folder, tls, limits)
    return TlsBroker(folder / "data", ["--config", str(config)]).start()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(pki: Pki) -> Iterator[TlsBroker]:
    """TLS that verifies client certificates, but lets clients without one in."""
    process = start_broker(pki.folder, VERIFYING, "handshake_timeout_s: 1")
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def client_context(pki: Pki, certificate: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    if certificate is not None:
        certificate.configure_cert(context)
    return context


def connect(
    port: int,
    context: ssl.SSLContext | None,
    credentials: pika.credentials.PlainCredentials | pika.credentials.ExternalCredentials,
) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            port,
            credentials=credentials,
            ssl_options=pika.SSLOptions(context, "localhost") if context else None,
            connection_attempts=1,
            socket_timeout=5,
            blocked_connection_timeout=5,
        )
    )


GUEST = pika.credentials.PlainCredentials("guest", "guest")
EXTERNAL = pika.credentials.ExternalCredentials()


def round_trip(connection: pika.BlockingConnection) -> bytes:
    """Publish a message to a fresh queue and consume it back."""
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"over tls")
    for method, _, body in channel.consume(queue, inactivity_timeout=5):
        assert method is not None, "no delivery in time"
        channel.basic_ack(method.delivery_tag)
        channel.cancel()
        return body
    raise AssertionError("the consumer ended without a delivery")


def mechanisms_offered(port: int, context: ssl.SSLContext | None) -> str:
    with RawClient("127.0.0.1", port) as client:
        if context is not None:
            client.sock = context.wrap_socket(client.sock, server_hostname="localhost")
        client.send_raw(PROTOCOL_HEADER)
        start = client.expect(commands.Connection.Start)
        return str(start.mechanisms)


# ------------------------------------------------------------------- logins


def test_plain_login_over_tls_publishes_and_consumes(broker: TlsBroker, pki: Pki) -> None:
    connection = connect(broker.tls_port, client_context(pki), GUEST)
    try:
        assert round_trip(connection) == b"over tls"
    finally:
        connection.close()


def test_external_logs_in_as_the_certificate_cn_without_a_password(
    broker: TlsBroker, pki: Pki
) -> None:
    connection = connect(broker.tls_port, client_context(pki, pki.client), EXTERNAL)
    try:
        assert round_trip(connection) == b"over tls"
    finally:
        connection.close()
    broker.wait_for(f"user '{CERT_USER}' opened vhost '/'")
    audit = broker.data_dir / "audit.jsonl"
    wait_for_entry(audit, {"event": "login", "user": CERT_USER, "mechanism": "EXTERNAL"})


def test_the_certificate_user_has_no_password_to_log_in_with(broker: TlsBroker, pki: Pki) -> None:
    credentials = pika.credentials.PlainCredentials(CERT_USER, "")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        connect(broker.tls_port, client_context(pki, pki.client), credentials)
    assert "ACCESS_REFUSED" in str(refused.value)


def test_external_without_a_client_certificate_is_refused_with_403(
    broker: TlsBroker, pki: Pki
) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        connect(broker.tls_port, client_context(pki), EXTERNAL)
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL" in str(
        refused.value
    )
    broker.wait_for("EXTERNAL without a verified client certificate")


def test_external_is_offered_only_where_client_certificates_are_verified(
    broker: TlsBroker, pki: Pki, tmp_path: Path
) -> None:
    assert mechanisms_offered(broker.tls_port, client_context(pki)) == "EXTERNAL PLAIN AMQPLAIN"
    assert mechanisms_offered(broker.port, None) == "PLAIN AMQPLAIN"
    # pika will not choose a mechanism that is not offered; a client that does is
    # refused as for an unknown mechanism.
    with pytest.raises(pika.exceptions.AuthenticationError):
        connect(broker.port, None, EXTERNAL)
    with RawClient("127.0.0.1", broker.port) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(
            0,
            commands.Connection.StartOk(
                client_properties={"capabilities": {"authentication_failure_close": True}},
                mechanism="EXTERNAL",
                response="",
            ),
        )
        assert client.wait_closed() == []
    broker.wait_for("unsupported authentication mechanism 'EXTERNAL'")
    # A TLS listener that does not ask for certificates does not offer it either.
    for name in ("ca.pem", "server.pem", "server.key"):
        (tmp_path / name).write_bytes((pki.folder / name).read_bytes())
    unverifying = start_broker(tmp_path, SERVER_FILES)
    try:
        offered = mechanisms_offered(unverifying.tls_port, client_context(pki))
        assert offered == "PLAIN AMQPLAIN"
    finally:
        assert unverifying.stop() == 0, unverifying.log


# ---------------------------------------------------------- TLS handshake


def test_a_client_certificate_from_another_ca_fails_the_handshake(
    broker: TlsBroker, pki: Pki
) -> None:
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(broker.tls_port, client_context(pki, pki.stranger), EXTERNAL)
    broker.wait_for(r"TLS handshake failed: the client certificate does not verify")


def test_a_plain_client_on_the_tls_port_fails_and_others_are_still_served(
    broker: TlsBroker, pki: Pki
) -> None:
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(broker.tls_port, None, GUEST)
    with RawClient("127.0.0.1", broker.tls_port) as client:
        client_port = client.sock.getsockname()[1]
        client.send_raw(PROTOCOL_HEADER)
        # No AMQP reply (a TLS alert at most), and the socket is closed.
        assert not _read_until_closed(client.sock).startswith(b"AMQP")
    broker.wait_for(rf"connection 127\.0\.0\.1:{client_port} -> \S+: TLS handshake failed: ")
    for port, context in ((broker.tls_port, client_context(pki)), (broker.port, None)):
        connection = connect(port, context, GUEST)
        try:
            assert round_trip(connection) == b"over tls"
        finally:
            connection.close()


def test_a_client_silent_during_the_tls_handshake_is_dropped_in_time(
    broker: TlsBroker,
) -> None:
    with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the broker, not by our timeout
        assert time.monotonic() - started < 5
    broker.wait_for(r"TLS handshake failed: not finished within 1 s; closed")


def test_fail_if_no_peer_cert_refuses_clients_without_one(pki: Pki, tmp_path: Path) -> None:
    for name in ("ca.pem", "server.pem", "server.key"):
        (tmp_path / name).write_bytes((pki.folder / name).read_bytes())
    strict = start_broker(tmp_path, f"{VERIFYING}, fail_if_no_peer_cert: true")
    try:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connect(strict.tls_port, client_context(pki), GUEST)
        strict.wait_for(r"TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE")
        connection = connect(strict.tls_port, client_context(pki, pki.client), GUEST)
        connection.close()
    finally:
        assert strict.stop() == 0, strict.log


def _read_until_closed(sock: socket.socket) -> bytes:
    """Whatever the broker sends before it closes the socket."""
    sock.settimeout(10)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


# ------------------------------------------------------------------ config


def test_a_bad_certificate_path_stops_start_up_with_a_config_error(
    pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "server.key").write_bytes((pki.folder / "server.key").read_bytes())
    config = write_config(tmp_path, "cert_file: missing.pem, key_file: server.key")
    result = subprocess.run(
        [sys.executable, "-m", "amqpd", "--config", str(config), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert (
        f"{config}: listeners[1].tls.cert_file: cannot read {tmp_path / 'missing.pem'}: "
        "No such file or directory"
    ) in result.stderr
