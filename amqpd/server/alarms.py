"""Resource alarms that block publishers: free disk space below its limit.

While an alarm is on, every connection that has published stops being read (TCP pushes
back on the publisher) and, if the client declared the `connection.blocked` capability,
hears `connection.blocked`; when the alarm clears, `connection.unblocked` and reading
resumes. Connections that only consume are never blocked, so backlogs keep draining.

Imports anyio.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import anyio

log = logging.getLogger("amqpd.alarms")

DISK_ALARM_REASON = "low on disk"


class Alarms:
    def __init__(self) -> None:
        self.disk = False
        self.memory = False  # no memory alarm yet: never on
        # The latest readings, for the API and metrics (0 until the first check).
        self.memory_used_bytes = 0
        self.memory_limit_bytes = 0
        self.disk_free_bytes = 0
        self.disk_free_limit_bytes = 0
        self._cleared = anyio.Event()
        self._cleared.set()

    @property
    def blocking(self) -> bool:
        return self.disk

    def active(self) -> list[str]:
        """RabbitMQ's names of the resource alarms in effect."""
        return ["disk"] if self.disk else []

    @property
    def reason(self) -> str:
        return DISK_ALARM_REASON

    def set_disk(self, on: bool, free_bytes: int, limit_bytes: int) -> None:
        self.disk_free_bytes = free_bytes
        self.disk_free_limit_bytes = limit_bytes
        if on == self.disk:
            return
        self.disk = on
        if on:
            log.warning(
                "disk alarm: %d bytes free, below the limit of %d; publishers are blocked",
                free_bytes,
                limit_bytes,
            )
            self._cleared = anyio.Event()
        else:
            log.warning("disk alarm cleared: %d bytes free; publishers resume", free_bytes)
            self._cleared.set()

    async def wait_cleared(self) -> None:
        await self._cleared.wait()


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


async def watch_disk(alarms: Alarms, path: Path, limit_bytes: int, interval_s: float) -> None:
    """Check free space where the data lives, for ever."""
    while True:
        free = await anyio.to_thread.run_sync(free_bytes, path)
        alarms.set_disk(free < limit_bytes, free, limit_bytes)
        await anyio.sleep(interval_s)
