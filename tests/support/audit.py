"""Read the broker's audit log in tests. It is written by a thread of its own, so a test
waits for the entry it expects (with a deadline) rather than reading once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def wait_for_entry(
    path: Path, fields: dict[str, Any], timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """Every entry so far, once one has all of `fields`; AssertionError after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = (
            [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        )
        if any(all(entry.get(key) == value for key, value in fields.items()) for entry in entries):
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit entry {fields} in time:\n{entries}")
        time.sleep(0.05)
