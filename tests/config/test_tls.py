"""TLS settings on a listener: what is accepted, how the files are found, and what stops
start-up with the file, the key and the reason."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization

from amqpd.config.load import ConfigError, load, parse
from amqpd.config.model import Listener, Tls
from amqpd.config.tls import server_context, verifies_peers


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> Path:
    """server.pem, server.key and ca.pem in a folder of their own."""
    folder = tmp_path / "tls"
    folder.mkdir()
    server = ca.issue_cert("localhost")
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return folder


def write(tmp_path: Path, tls: str) -> Path:
    config = tmp_path / "amqpd.yaml"
    config.write_text(f"listeners:\n  - {{port: 5671, tls: {{{tls}}}}}\n")
    return config


def test_relative_files_are_found_from_the_config_files_folder(tmp_path: Path, files: Path) -> None:
    config = load(
        write(
            tmp_path,
            "cert_file: tls/server.pem, key_file: tls/server.key, ca_file: tls/ca.pem, "
            "verify_peer: true, fail_if_no_peer_cert: true",
        )
    )
    assert config.listeners == (
        Listener(
            "127.0.0.1",
            5671,
            Tls(
                files / "server.pem",
                files / "server.key",
                files / "ca.pem",
                verify_peer=True,
                fail_if_no_peer_cert=True,
            ),
        ),
    )


@pytest.mark.parametrize(
    ("verify_peer", "fail_if_no_peer_cert", "mode"),
    [
        (False, False, ssl.CERT_NONE),
        (True, False, ssl.CERT_OPTIONAL),
        (True, True, ssl.CERT_REQUIRED),
    ],
)
def test_the_server_context(
    files: Path, verify_peer: bool, fail_if_no_peer_cert: bool, mode: ssl.VerifyMode
) -> None:
    tls = Tls(
        files / "server.pem",
        files / "server.key",
        files / "ca.pem",
        verify_peer=verify_peer,
        fail_if_no_peer_cert=fail_if_no_peer_cert,
    )
    context = server_context(tls)
    assert context.verify_mode == mode
    assert verifies_peers(context) is verify_peer
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("tls", "reason"),
    [
        ("cert_file: a.pem", "listeners[0].tls.key_file: required field missing"),
        (
            "cert_file: a.pem, key_file: a.key, fail_if_no_peer_cert: true",
            "listeners[0].tls: 'fail_if_no_peer_cert' needs 'verify_peer: true'",
        ),
        (
            "cert_file: a.pem, key_file: a.key, verify_peer: true",
            "listeners[0].tls: 'verify_peer' needs a 'ca_file' to verify client certificates",
        ),
        (
            "cert_file: a.pem, key_file: a.key, verify: true",
            "listeners[0].tls: extra fields found (verify)",
        ),
        (
            "cert_file: a.pem, key_file: a.key, verify_peer: 1",
            "listeners[0].tls.verify_peer: expected bool, got int 1",
        ),
    ],
)
def test_settings_that_stop_start_up(tls: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(yaml.safe_load(f"listeners: [{{port: 5671, tls: {{{tls}}}}}]"), "amqpd.yaml")
    assert str(caught.value).startswith(f"amqpd.yaml: {reason}")


def test_a_missing_file_is_named_by_its_key(tmp_path: Path, files: Path) -> None:
    config = write(tmp_path, "cert_file: tls/server.pem, key_file: tls/nope.key")
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert str(caught.value) == (
        f"{config}: listeners[0].tls.key_file: cannot read {files / 'nope.key'}: "
        "No such file or directory"
    )


def test_files_that_do_not_hold_what_their_key_says(
    tmp_path: Path, files: Path, ca: trustme.CA
) -> None:
    (files / "junk.pem").write_text("not a certificate\n")
    other_key = ca.issue_cert("localhost").private_key_pem
    other_key.write_to_path(str(files / "other.key"))
    cases = {
        "cert_file: tls/junk.pem, key_file: tls/server.key": "tls.cert_file: ",
        "cert_file: tls/server.pem, key_file: tls/junk.pem": "tls.key_file: ",
        "cert_file: tls/server.pem, key_file: tls/other.key": "tls.key_file: ",
        "cert_file: tls/server.pem, key_file: tls/server.key, ca_file: tls/junk.pem": (
            "tls.ca_file: "
        ),
    }
    for tls, key in cases.items():
        with pytest.raises(ConfigError, match=f"listeners\\[0\\].{key}") as caught:
            load(write(tmp_path, tls))
        assert "holds no" in str(caught.value)


def test_an_encrypted_key_is_refused_without_asking_for_a_passphrase(
    tmp_path: Path, files: Path
) -> None:
    key = serialization.load_pem_private_key((files / "server.key").read_bytes(), None)
    (files / "locked.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "cert_file: tls/server.pem, key_file: tls/locked.key"))
    assert str(caught.value).endswith("is encrypted; amqpd needs a key without a passphrase")
