"""The memory watermark: from the machine's memory, a cgroup's limit, or bytes; the
settings are validated; the log format and slow-operation keys come from file and flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amqpd.cli import build_parser, make_config
from amqpd.config.load import ConfigError, load
from amqpd.server import alarms


def physical_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_the_watermark_is_a_fraction_of_the_machine_without_a_cgroup_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    monkeypatch.setattr(alarms, "CGROUP_V2_MEMORY_MAX", tmp_path / "memory.max")
    monkeypatch.setattr(alarms, "CGROUP_V1_MEMORY_LIMIT", tmp_path / "absent")
    assert alarms.total_memory_bytes() == (physical_bytes(), "the machine's memory")
    assert alarms.memory_watermark_bytes(0.4, None) == int(physical_bytes() * 0.4)


def test_a_cgroup_limit_below_the_machine_is_what_the_fraction_applies_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "memory.max").write_text("536870912\n")
    monkeypatch.setattr(alarms, "CGROUP_V2_MEMORY_MAX", tmp_path / "memory.max")
    total, source = alarms.total_memory_bytes()
    assert total == 536_870_912
    assert "memory.max" in source
    assert alarms.memory_watermark_bytes(0.5, None) == 268_435_456
    assert alarms.memory_watermark_bytes(0.5, 1000) == 1000  # bytes win over the fraction


def test_the_resident_size_is_read_from_proc() -> None:
    used = alarms.resident_bytes()
    assert 1_000_000 < used < physical_bytes()


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("memory_high_watermark_fraction: 0", "memory_high_watermark_fraction"),
        ("memory_high_watermark_fraction: 1.5", "memory_high_watermark_fraction"),
        ("memory_high_watermark_bytes: 0", "memory_high_watermark_bytes"),
        ("memory_high_watermark_bytes: 1.5", "memory_high_watermark_bytes"),
        ("memory_check_interval_s: 0", "memory_check_interval_s"),
    ],
)
def test_bad_memory_settings_are_refused(tmp_path: Path, setting: str, error: str) -> None:
    config = tmp_path / "amqpd.yaml"
    config.write_text(f"limits:\n  {setting}\n")
    with pytest.raises(ConfigError, match=error):
        load(config)


def test_log_settings_from_the_file_and_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "amqpd.yaml"
    config.write_text("log_format: json\nslow_operation_ms: 250\n")
    loaded = load(config)
    assert (loaded.log_format, loaded.slow_operation_ms) == ("json", 250)
    args = build_parser().parse_args(["--config", str(config), "--log-format", "plain"])
    assert make_config(args).log_format == "plain"
    config.write_text("log_format: xml\n")
    with pytest.raises(ConfigError, match="log_format"):
        load(config)
