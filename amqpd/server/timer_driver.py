"""Wake the broker at its deadlines (message expiry, unused queues, consumer timeouts).

Sleeps until the earliest deadline the broker's Timers hold, or until an earlier one is
scheduled, then lets the broker run what is due. A failure in one deadline's work is
logged and the rest go on: a bug there must not stop the node.

Imports anyio and amqpd.broker.
"""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel

from amqpd.broker.timers import Timers

log = logging.getLogger("amqpd.timers")


class TimerDriver:
    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self._wake = anyio.Event()
        timers.on_earlier = self._earlier

    def _earlier(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        timers = self.timers
        while True:
            deadline_ms = timers.next_deadline_ms
            if deadline_ms is None:
                await self._wake.wait()
            else:
                delay_s = (deadline_ms - timers.clock_ms()) / 1000
                if delay_s > 0:
                    with anyio.move_on_after(delay_s):
                        await self._wake.wait()
                else:
                    # Work that is due again at once (a backlog released in batches) lets
                    # every connection run in between.
                    await anyio.lowlevel.checkpoint()
            self._wake = anyio.Event()
            try:
                timers.run_due()
            except Exception:
                log.exception("a broker deadline failed; the others go on")
