"""Who waits for the store to make what they wrote durable, and telling them when it has.

A channel in confirm mode waits for the logs its persistent messages went to; a
transaction's commit-ok and a durable declare's reply wait too. The shell tells this
registry when durable offsets advance (after each fsync) or when writes were lost, and
each waiter releases whatever it can, in order.

Synchronous and pure; imports broker.ports only.
"""

from __future__ import annotations

from typing import Protocol

from amqpd.broker.ports import MessageLog


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
