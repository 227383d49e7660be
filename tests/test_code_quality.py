"""The code checks CI enforces: lint, strict types, and the layering contracts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "amqpd", "tests", "tools"],
        [sys.executable, "-m", "ruff", "format", "--check", "amqpd", "tests", "tools"],
        [sys.executable, "-m", "mypy"],
        [str(Path(sys.executable).parent / "lint-imports")],
    ],
    ids=["ruff", "ruff-format", "mypy", "import-linter"],
)
def test_check_passes(command: list[str]) -> None:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
