"""Resource alarms that block publishers: resident memory above its watermark, free disk
space below its limit (RabbitMQ's vm_memory_high_watermark and disk_free_limit).

While an alarm is on, every connection that has published stops being read (TCP pushes
back on the publisher) and, if the client declared the `connection.blocked` capability,
hears `connection.blocked` with RabbitMQ's reason ("low on memory", "low on disk", "low on
memory & disk"); when every alarm has cleared, `connection.unblocked` and reading resumes.
Connections that only consume are never blocked, so backlogs keep draining. Under the
memory alarm the queues also keep new messages in their logs instead of in memory
(MemoryBudget.conserve), and freed memory is handed back to the OS (malloc_trim), so
that draining brings the resident size down.

The latest readings stay on `Alarms` (memory used and its watermark, disk free and its
limit) for the management API and metrics to read without I/O.

Imports anyio and amqpd.broker.memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

import anyio

from amqpd.broker.memory import MemoryBudget

log = logging.getLogger("amqpd.alarms")

# RabbitMQ's resource names (its alarms list and the management API's) and its
# connection.blocked text: "low on " and the resources joined with " & ".
MEMORY: Final = "memory"
DISK: Final = "disk"
DISK_ALARM_REASON: Final = "low on disk"
MEMORY_ALARM_REASON: Final = "low on memory"

CGROUP_V2_MEMORY_MAX: Final = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_MEMORY_LIMIT: Final = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
STATM: Final = Path("/proc/self/statm")
PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")


class Alarms:
    def __init__(self) -> None:
        self.memory = False
        self.disk = False
        # The latest readings (0 until the first check).
        self.memory_used_bytes = 0
        self.memory_limit_bytes = 0  # the watermark
        self.disk_free_bytes = 0
        self.disk_free_limit_bytes = 0
        self._cleared = anyio.Event()
        self._cleared.set()

    @property
    def blocking(self) -> bool:
        return self.memory or self.disk

    def active(self) -> list[str]:
        """RabbitMQ's names of the resources in alarm: "memory", "disk"."""
        return [name for name, on in ((MEMORY, self.memory), (DISK, self.disk)) if on]

    @property
    def reason(self) -> str:
        """connection.blocked's reason, in RabbitMQ's words."""
        return "low on " + " & ".join(self.active())

    def set_memory(self, on: bool, used_bytes: int, limit_bytes: int) -> None:
        self.memory_used_bytes = used_bytes
        self.memory_limit_bytes = limit_bytes
        if on == self.memory:
            return
        self.memory = on
        if on:
            log.warning(
                "memory alarm: %d bytes resident, above the watermark of %d; "
                "publishers are blocked",
                used_bytes,
                limit_bytes,
                extra={"alarm": MEMORY, "alarm_on": True},
            )
        else:
            log.warning(
                "memory alarm cleared: %d bytes resident, under the watermark of %d; %s",
                used_bytes,
                limit_bytes,
                self._after_clearing(),
                extra={"alarm": MEMORY, "alarm_on": False},
            )
        self._update()

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
                extra={"alarm": DISK, "alarm_on": True},
            )
        else:
            log.warning(
                "disk alarm cleared: %d bytes free; %s",
                free_bytes,
                self._after_clearing(),
                extra={"alarm": DISK, "alarm_on": False},
            )
        self._update()

    def _after_clearing(self) -> str:
        if self.blocking:
            return f"publishers stay blocked ({self.reason})"
        return "publishers resume"

    def _update(self) -> None:
        if not self.blocking:
            self._cleared.set()
        elif self._cleared.is_set():
            self._cleared = anyio.Event()

    async def wait_cleared(self) -> None:
        """Until no alarm is on."""
        while self.blocking:
            await self._cleared.wait()


# ------------------------------------------------------------------------ disk


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


async def watch_disk(alarms: Alarms, path: Path, limit_bytes: int, interval_s: float) -> None:
    """Check free space where the data lives, for ever."""
    while True:
        free = await anyio.to_thread.run_sync(free_bytes, path)
        alarms.set_disk(free < limit_bytes, free, limit_bytes)
        await anyio.sleep(interval_s)


# ---------------------------------------------------------------------- memory


def resident_bytes() -> int:
    """This process's resident set size: one small read of /proc/self/statm (a few
    microseconds, so it is read on the event loop)."""
    with open(STATM, "rb") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def total_memory_bytes() -> tuple[int, str]:
    """The memory the broker may use, and where that figure comes from: the machine's
    physical memory, or the cgroup's limit when one is set below it (a container)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in (CGROUP_V2_MEMORY_MAX, CGROUP_V1_MEMORY_LIMIT):
        limit = _read_limit(path)
        if limit is not None and limit < physical:
            return limit, f"the cgroup limit in {path}"
    return physical, "the machine's memory"


def memory_watermark_bytes(fraction: float, absolute: int | None) -> int:
    """The memory alarm's watermark: `absolute` when set, else `fraction` of what
    total_memory_bytes finds; logged once, at start."""
    if absolute is not None:
        log.info("memory watermark: %d bytes (memory_high_watermark_bytes)", absolute)
        return absolute
    total, source = total_memory_bytes()
    watermark = int(total * fraction)
    log.info("memory watermark: %d bytes, %g of %d bytes (%s)", watermark, fraction, total, source)
    return watermark


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0): hands free heap pages back to the OS. Python frees message
    bodies to malloc, which keeps most of them (heap fragments, arenas of other threads),
    so without it the resident size may never fall after a backlog drains. None where
    the C library has no malloc_trim (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


async def watch_memory(
    alarms: Alarms,
    budget: MemoryBudget,
    limit_bytes: int,
    interval_s: float,
) -> None:
    """Check the broker's resident memory against the watermark, for ever. Above it, the
    free memory malloc holds is handed back first (off the event loop), and the alarm
    goes on only if the size is still above; the queues page new messages to disk while
    it is on."""
    trim = _malloc_trim()
    while True:
        used = resident_bytes()
        if used > limit_bytes and trim is not None:
            await anyio.to_thread.run_sync(trim)
            used = resident_bytes()
        on = used > limit_bytes
        budget.conserve(on)
        alarms.set_memory(on, used, limit_bytes)
        await anyio.sleep(interval_s)
