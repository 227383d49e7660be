"""Group commit: hand what the broker appended to the OS once per moment, fsync it in a
worker thread as the policy says, and tell the broker what became durable.

Two tasks. The writer wakes when the store has unwritten data and writes all of it; it
never waits for anything else, so it runs before any connection's write pump woken
later in the same loop iteration. The syncer fsyncs what has been written (always: as
soon as there is something; <ms>: on that interval; never: not at all) off the event
loop, then releases the confirms and replies waiting for it. Everything written while
an fsync runs shares the next one.

Sessions also call `write_now` before sending: a delivery's "delivered" mark is then
always in the OS before the delivery leaves, so after a crash the message comes back
flagged redelivered.

If an fsync fails, nothing written since the last good one can be trusted (the page
cache may have dropped it): the waiting publishers are nacked and the node is stopped,
so that a restart recovers from what the disk really holds.

Imports anyio, amqpd.broker and amqpd.store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from amqpd.broker.broker import Broker
from amqpd.store import Partition, Store, WriteFailed

log = logging.getLogger("amqpd.store")


class StoreDriver:
    def __init__(
        self, store: Store, broker: Broker, on_fatal: Callable[[BaseException], None]
    ) -> None:
        self.store = store
        self.broker = broker
        self._on_fatal = on_fatal
        self._dirty = anyio.Event()
        self._written = anyio.Event()
        self._syncing = anyio.Lock()
        store.on_dirty = self._mark_dirty

    def _mark_dirty(self) -> None:
        self._dirty.set()

    def write_now(self) -> None:
        """Hand every buffered append, ack and mark to the OS (no fsync)."""
        try:
            self.store.write_pending()
        except WriteFailed as failure:
            for partition, (start, end) in failure.lost.items():
                log.error(
                    "could not write offsets %d-%d of log %r: %s",
                    start,
                    end - 1,
                    partition.log.name,
                    failure.__cause__ or failure,
                )
                self.broker.storage_lost(partition, start, end)
        self._written.set()

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._write_loop)
            tasks.start_soon(self._sync_loop)

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            self.write_now()

    async def _sync_loop(self) -> None:
        policy = self.store.settings.fsync
        while True:
            if policy.mode == "interval":
                await anyio.sleep(policy.interval_ms / 1000)
            else:
                await self._written.wait()
                self._written = anyio.Event()
            await self.sync_now()

    async def sync_now(self) -> None:
        """fsync everything written so far (in a worker thread) and release the waiters."""
        # Shielded: a batch begun must be ended, or a stop cancelling the syncer mid-fsync
        # would leave it in flight and the final sync could not start.
        async with self._syncing:
            with anyio.CancelScope(shield=True):
                await self._sync_batch()

    async def _sync_batch(self) -> None:
        store = self.store
        batch = store.begin_sync()
        if batch is None:
            return
        if store.settings.fsync.mode != "never":
            try:
                await anyio.to_thread.run_sync(store.sync_files, batch)
            except OSError as error:
                result = store.end_sync(batch, error)
                log.critical("fsync failed: %s; stopping so that a restart recovers", error)
                for partition, (start, end) in result.lost.items():
                    self.broker.storage_lost(partition, start, end)
                self._on_fatal(error)
                return
        store.end_sync(batch)
        self.broker.durability_advanced()

    async def close(self) -> None:
        """Write and fsync what is left (a graceful stop)."""
        self.write_now()
        await self.sync_now()


class StoreQueueStorage:
    """The broker's QueueStorage port on the store: one single-partition log per queue."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create_log(self, key: str, *, durable: bool) -> Partition:
        if key in self.store.logs:  # left over: a transient log from before, say
            self.store.delete_log(key)
        return self.store.create_log(key, durable=durable).partition(0)

    def delete_log(self, key: str) -> None:
        if key in self.store.logs:
            self.store.delete_log(key)
