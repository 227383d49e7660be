"""How many bytes of ready messages queues may hold in memory, per queue and in all.

Past either bound a queue stops keeping new messages in memory: they go to its log (the
durable log of a durable queue, or a transient log it opens to page out), and come back
in batches as consumers reach them. Memory then stays flat however deep the backlog.
Under a memory alarm (`conserve`) the bound for all queues is zero: every new message
that waits goes to a log, and what is in memory only drains.

Synchronous and pure; imports nothing from amqpd.
"""

from __future__ import annotations


class MemoryBudget:
    """A queue may keep `size` more bytes while its own plus size stay within
    queue_bytes_max and total_bytes plus size within total_bytes_max (Queue.enqueue
    tests this inline: every message that waits takes the test)."""

    def __init__(self, queue_bytes_max: int, total_bytes_max: int) -> None:
        self.queue_bytes_max = queue_bytes_max
        self.total_bytes_max = total_bytes_max
        self.configured_total_bytes_max = total_bytes_max
        self.total_bytes = 0

    @property
    def conserving(self) -> bool:
        return self.total_bytes_max != self.configured_total_bytes_max

    def conserve(self, on: bool) -> None:
        """The memory alarm went on (or off): while on, no queue keeps new messages in
        memory (the inline test fails for every size), so they page to the logs."""
        self.total_bytes_max = 0 if on else self.configured_total_bytes_max

    def take(self, size: int) -> None:
        """Account for bytes held whatever the bounds say (read-ahead batches)."""
        self.total_bytes += size

    def release(self, size: int) -> None:
        self.total_bytes -= size
