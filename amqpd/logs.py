"""How the broker's log records are written: plain text lines, or JSON lines.

JSON lines carry `time` (ISO 8601, UTC), `level`, `logger` and `message`, and every
field a record was given with `extra=` (connection, user, vhost, peer, alarm,
operation, duration_ms, ...), so that log collectors need no parsing. Records keep
their plain message text in both formats.

Imports python-json-logger; imported by cli.py only.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

from pythonjsonlogger.json import JsonFormatter

PLAIN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    return logging.Formatter(PLAIN_FORMAT)


def configure(level: str, log_format: str) -> None:
    """Log to standard error at `level` ("debug" .. "error") in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
