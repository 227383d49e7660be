"""How many bytes of ready messages queues may hold in memory, per queue and in all.

Past either bound a queue stops keeping new messages in memory: they go to its log (the
durable log of a durable queue, or a transient log it opens to page out), and come back
in batches as consumers reach them. Memory then stays flat however deep the backlog.

Synchronous and pure; imports nothing from amqpd.
"""

from __future__ import annotations


class MemoryBudget:
    def __init__(self, queue_bytes_max: int, total_bytes_max: int) -> None:
        self.queue_bytes_max = queue_bytes_max
        self.total_bytes_max = total_bytes_max
        self.total_bytes = 0

    def admit(self, queue_bytes: int, size: int) -> bool:
        """Whether a queue holding `queue_bytes` may keep `size` more; takes them if so."""
        if queue_bytes + size > self.queue_bytes_max:
            return False
        total = self.total_bytes + size
        if total > self.total_bytes_max:
            return False
        self.total_bytes = total
        return True

    def take(self, size: int) -> None:
        """Account for bytes held whatever the bounds say (read-ahead batches)."""
        self.total_bytes += size

    def release(self, size: int) -> None:
        self.total_bytes -= size
