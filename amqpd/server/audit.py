"""The audit log: an append-only file of JSON lines, one per security-relevant event
(logins that succeed or fail, permission refusals, config reloads, and the declare,
delete, bind and unbind of exchanges and queues), each with its time, user, vhost and
source address.

Lines are handed to a logging QueueListener, whose thread does the writing: the event
loop never waits for the disk. Without a file configured, nothing is recorded.

Imports the standard library only.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import queue
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._logger: logging.Logger | None = None
        self._listener: logging.handlers.QueueListener | None = None
        self._file: logging.FileHandler | None = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._file = handler
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(lines, handler)
        self._listener.start()
        logger = logging.Logger(f"amqpd.audit.{id(self)}")  # not in the logging tree
        logger.addHandler(logging.handlers.QueueHandler(lines))
        logger.propagate = False
        self._logger = logger

    @property
    def enabled(self) -> bool:
        return self._logger is not None

    def record(self, event: str, **fields: Any) -> None:
        """Append one event; fields with the value None are left out."""
        logger = self._logger
        if logger is None:
            return
        entry = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "event": event,
        }
        entry.update({key: value for key, value in fields.items() if value is not None})
        logger.info(json.dumps(entry, ensure_ascii=False, default=str))

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._logger = None
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._file is not None:
            self._file.close()
            self._file = None
