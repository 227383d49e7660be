"""The `amqpd` command as operators run it: defaults, flags, config, signals, exit codes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import pika
import pika.exceptions
import pytest

from amqpd.cli import build_parser, make_config
from amqpd.config.load import load
from amqpd.config.model import (
    DEFAULT_DATA_DIR,
    Authentication,
    Limits,
    Listener,
    Management,
    ServerConfig,
    Tls,
)
from tests.support.broker_process import READY, BrokerProcess


def run_amqpd(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amqpd", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_no_arguments_mean_the_embedded_default() -> None:
    config = make_config(build_parser().parse_args([]))
    assert config.listeners == (Listener("127.0.0.1", 5672),)
    assert config.data_dir == DEFAULT_DATA_DIR == Path("amqpd-data")
    assert [user.name for user in config.users] == ["guest"]
    assert config.loopback_users == ("guest",)
    assert config.vhost_names == ("/",)


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "amqpd.yaml"
    config_file.write_text(
        "listeners:\n  - bind: 0.0.0.0\n    port: 5000\ndata_dir: /somewhere\n"
        "limits:\n  channel_max: 10\n"
    )
    args = ["--config", str(config_file), "--port", "6000", "--data-dir", str(tmp_path)]
    config = make_config(build_parser().parse_args(args))
    assert config.listeners == (Listener("0.0.0.0", 6000),)
    assert config.data_dir == tmp_path
    assert config.limits.channel_max == 10
    config = make_config(build_parser().parse_args([*args, "--bind", "::1"]))
    assert config.listeners == (Listener("::1", 6000),)


def test_serves_logs_ready_once_and_stops_on_sigterm_with_320(
    broker_process: BrokerProcess,
) -> None:
    broker_process.start()
    assert sum(bool(READY.search(line)) for line in broker_process.lines) == 1
    assert broker_process.data_dir.is_dir()
    connection = pika.BlockingConnection(pika.URLParameters(broker_process.url))
    channel = connection.channel()
    channel.queue_declare("", exclusive=True)
    broker_process.signal(signal.SIGTERM)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.process_data_events(time_limit=10)
        connection.process_data_events(time_limit=10)
    assert closed.value.reply_code == 320
    assert closed.value.reply_text == (
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    )
    assert broker_process.stop() == 0
    broker_process.wait_for("amqpd stopped")


def test_sigint_stops_gracefully_too(broker_process: BrokerProcess) -> None:
    broker_process.start()
    broker_process.signal(signal.SIGINT)
    assert broker_process.stop() == 0


def test_config_file_is_used(broker_process: BrokerProcess, tmp_path: Path) -> None:
    config_file = tmp_path / "amqpd.yaml"
    config_file.write_text("listeners:\n  - bind: 127.0.0.1\n    port: 0\nvhosts: [/, other]\n")
    broker_process.extra_args = ["--config", str(config_file)]
    broker_process.start()
    url = f"amqp://guest:guest@127.0.0.1:{broker_process.port}/%2f"
    pika.BlockingConnection(pika.URLParameters(url)).close()


def test_bad_config_stops_startup_naming_file_and_key(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("limits:\n  frame_max: 100\n  bogus: 1\n")
    result = run_amqpd("--config", str(config_file), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 78
    assert f"{config_file}: limits: extra fields found (bogus)" in result.stderr
    assert not (tmp_path / "d").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_amqpd("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 78
    assert "cannot read the config file" in result.stderr


def test_bad_port_is_a_usage_error() -> None:
    result = run_amqpd("--port", "70000")
    assert result.returncode == 2
    assert "is not a TCP port" in result.stderr


def test_port_in_use_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_amqpd("--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_a_data_dir_serves_one_broker_at_a_time(broker_process: BrokerProcess) -> None:
    broker_process.start()
    result = run_amqpd("--port", "0", "--data-dir", str(broker_process.data_dir))
    assert result.returncode == 1
    assert "is in use by another broker" in result.stderr


def test_python_dash_m_and_version() -> None:
    result = run_amqpd("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("amqpd ")


def test_the_example_config_documents_every_default() -> None:
    """conf/amqpd.yaml lists every key with its default value: loading it changes nothing."""
    example = Path(__file__).resolve().parents[2] / "conf" / "amqpd.yaml"
    assert load(example) == ServerConfig()
    text = example.read_text()
    for model in (ServerConfig, Listener, Tls, Limits, Authentication, Management):
        for field in attrs.fields(model):
            assert f"{field.name}:" in text, f"{field.name} is not in {example.name}"
