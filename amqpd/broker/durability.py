"""Who waits for the store to make what they wrote durable, and telling them when it has.

A channel in confirm mode waits for the logs its persistent messages went to; a
transaction's commit-ok and a durable declare's reply wait too, and so does the ack of a
dead-lettered message in its source log. The shell tells this
registry when durable offsets advance (after each fsync) or when writes were lost, and
each waiter releases whatever it can, in order.

Synchronous and pure; imports broker.ports only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from amqpd.broker.ports import MessageLog

# (log, offset): "durable once the log's durable_offset passes offset"
Waits = Iterable[tuple[MessageLog, int]]


def all_durable(waits: Waits) -> bool:
    return all(offset < log.durable_offset for log, offset in waits)


def any_lost(waits: Waits, lost_log: MessageLog, start: int, end: int) -> bool:
    """Whether a wait is on offsets [start, end) of `lost_log`, which will never be durable."""
    return any(log is lost_log and start <= offset < end for log, offset in waits)


class DurabilityWaiter(Protocol):
    def durability_advanced(self) -> bool:
        """Release what is now durable; True when nothing is left waiting."""
        ...

    def durability_lost(self, log: MessageLog, start: int, end: int) -> None:
        """Offsets [start, end) of `log` will never be durable."""
        ...


class DurabilityWatch:
    def __init__(self) -> None:
        self._waiters: dict[DurabilityWaiter, None] = {}

    def wait(self, waiter: DurabilityWaiter) -> None:
        self._waiters[waiter] = None

    def forget(self, waiter: DurabilityWaiter) -> None:
        self._waiters.pop(waiter, None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def advanced(self) -> None:
        for waiter in list(self._waiters):
            if waiter.durability_advanced():
                del self._waiters[waiter]

    def lost(self, log: MessageLog, start: int, end: int) -> None:
        for waiter in list(self._waiters):
            waiter.durability_lost(log, start, end)
        self.advanced()


class DeferredAcks:
    """Acks held back until other writes are durable: a message dead-lettered from a
    durable queue stays in its log until its dead-lettered copies are durable, so a crash
    in between loses nothing (it may deliver it twice)."""

    def __init__(self, watch: DurabilityWatch) -> None:
        self._watch = watch
        self._pending: list[tuple[MessageLog, int, list[tuple[MessageLog, int]]]] = []

    def ack_when_durable(
        self, log: MessageLog, offset: int, waits: list[tuple[MessageLog, int]]
    ) -> None:
        self._pending.append((log, offset, waits))
        self._watch.wait(self)

    def durability_advanced(self) -> bool:
        still: list[tuple[MessageLog, int, list[tuple[MessageLog, int]]]] = []
        for log, offset, waits in self._pending:
            if all_durable(waits):
                log.ack(offset)
            else:
                still.append((log, offset, waits))
        self._pending = still
        return not still

    def durability_lost(self, log: MessageLog, start: int, end: int) -> None:
        """A copy will never be durable: the original stays unacked in its log (it comes
        back after a restart) rather than be lost."""
        self._pending = [
            pending for pending in self._pending if not any_lost(pending[2], log, start, end)
        ]
