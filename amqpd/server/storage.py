"""Group commit: hand what the broker appended to the OS once per moment, fsync it off
the event loop as the policy says, and tell the broker what became durable.

The writer task wakes when the store has unwritten data and writes all of it; it never
waits for anything else, so it runs before any connection's write pump woken later in
the same loop iteration. Under policy always, each write begins a sync batch unless
SYNC_BATCHES_IN_FLIGHT_MAX are in flight (then what was written waits for the next one,
begun as soon as one ends: everything written meanwhile shares one fsync); under <ms> a
timer begins them; under never they end at once, without fsync. Dedicated threads
fsync the batches and post each outcome to the event loop, where outcomes apply in the
order the batches began and release the confirms and replies waiting for them. (Own
threads rather than anyio's worker pool, posting rather than waiting for the loop: each
hand-off of the GIL costs, and this keeps them to two per batch.)

Sessions also call `write_now` before sending: a delivery's "delivered" mark is then
always in the OS before the delivery leaves, so after a crash the message comes back
flagged redelivered.

An fsync, or a write of the buffers, slower than `slow_operation_s` is logged as a
warning with its duration (two clock readings per batch, none per message).

If an fsync fails, nothing written since the last good one can be trusted (the page
cache may have dropped it): the waiting publishers are nacked and the node is stopped,
so that a restart recovers from what the disk really holds.

Imports anyio, asyncio (the event loop the fsync threads post to), amqpd.broker and
amqpd.store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue

import anyio

from amqpd.broker.broker import Broker
from amqpd.store import Partition, Store, StoreBroken, SyncBatch, WriteFailed

log = logging.getLogger("amqpd.store")

# The sparse-index interval of logs read at random offsets: a read scans a few records
# (the index costs some 24 bytes per KiB of log in memory).
RANDOM_READS_INDEX_INTERVAL_BYTES = 1024
# Batches fsyncing at once: the next starts while one runs, so a publisher's confirm waits
# for one fsync, not for the rest of another first.
SYNC_BATCHES_IN_FLIGHT_MAX = 2


class StoreDriver:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        on_fatal: Callable[[BaseException], None],
        slow_operation_s: float = float("inf"),
    ) -> None:
        self.store = store
        self._slow_s = slow_operation_s  # a write or fsync longer than this is logged
        self.broker = broker
        self._on_fatal = on_fatal
        self._dirty = anyio.Event()
        self._mode = store.settings.fsync.mode
        self._written = anyio.Event()  # policy "never": something was written
        self._in_flight: deque[SyncBatch] = deque()  # oldest first
        self._outcomes: dict[int, OSError | None] = {}  # by id(batch), from the threads
        self._settled = anyio.Event()  # set when a batch in flight ends
        self._requests: SimpleQueue[SyncBatch | None] = SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed = False
        store.on_dirty = self._mark_dirty

    def _mark_dirty(self) -> None:
        self._dirty.set()

    def write_now(self) -> None:
        """Hand every buffered append, ack and mark to the OS (no fsync)."""
        if not self.store.dirty:
            return  # the common case before a send: nothing new since the last write
        started = time.monotonic()
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
        elapsed = time.monotonic() - started
        if elapsed > self._slow_s:
            log.warning(
                "slow operation: writing the store's buffers to the OS took %.0f ms",
                elapsed * 1000,
                extra={"operation": "store write", "duration_ms": round(elapsed * 1000)},
            )
        if self._mode == "always":
            if self._loop is not None:
                self._start_sync()  # only hands the batch to the fsync thread
        else:
            self._written.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for number in range(SYNC_BATCHES_IN_FLIGHT_MAX):
            threading.Thread(
                target=self._sync_thread,
                args=(self._loop,),
                name=f"amqpd-fsync-{number}",
                daemon=True,
            ).start()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._write_loop)
                if self._mode == "interval":
                    tasks.start_soon(self._sync_timer)
                elif self._mode == "never":
                    tasks.start_soon(self._release_loop)
        finally:
            for _ in range(SYNC_BATCHES_IN_FLIGHT_MAX):
                self._requests.put(None)

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            self.write_now()

    async def _sync_timer(self) -> None:
        interval_s = self.store.settings.fsync.interval_ms / 1000
        while True:
            await anyio.sleep(interval_s)
            self._start_sync()

    async def _release_loop(self) -> None:
        """Policy "never": what is written counts as durable at once, but is released
        from this task, never from inside write_now (which runs in the middle of sends)."""
        while True:
            await self._written.wait()
            self._written = anyio.Event()
            self._start_sync()

    def _start_sync(self) -> None:
        """Begin a batch of what has been written, unless SYNC_BATCHES_IN_FLIGHT_MAX are
        in flight: the end of one starts the next, so what is written meanwhile shares it."""
        if len(self._in_flight) >= SYNC_BATCHES_IN_FLIGHT_MAX or self._failed:
            return
        try:
            batch = self.store.begin_sync()
        except StoreBroken as broken:
            self._failed = True
            log.critical("%s; stopping so that a restart recovers", broken)
            self._on_fatal(broken)
            return
        if batch is None:
            return
        self._in_flight.append(batch)
        if batch.fsync:
            self._requests.put(batch)
        else:
            self._synced(batch, None)

    def _sync_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """fsync batch after batch; each outcome goes back to the event loop."""
        while (batch := self._requests.get()) is not None:
            started = time.monotonic()
            try:
                self.store.sync_files(batch)
            except OSError as error:
                outcome: OSError | None = error
            else:
                outcome = None
            elapsed = time.monotonic() - started
            if elapsed > self._slow_s:
                files = len(batch.handles) + len(batch.directories)
                log.warning(
                    "slow operation: fsync of %d file(s) took %.0f ms",
                    files,
                    elapsed * 1000,
                    extra={"operation": "fsync", "duration_ms": round(elapsed * 1000)},
                )
            # Post the outcome and go straight back to waiting: waiting for the loop to run
            # it would cost two more hand-offs of the GIL per batch.
            try:
                loop.call_soon_threadsafe(self._synced, batch, outcome)
            except RuntimeError:
                return  # the event loop is closed

    def _synced(self, batch: SyncBatch, error: OSError | None) -> None:
        """On the event loop: a batch's fsync is over. Outcomes apply in the order the
        batches began (a later fsync may finish first)."""
        self._outcomes[id(batch)] = error
        in_flight = self._in_flight
        while in_flight and id(in_flight[0]) in self._outcomes:
            oldest = in_flight.popleft()
            self._end(oldest, self._outcomes.pop(id(oldest)))
        self._settled.set()
        self._settled = anyio.Event()
        if self._mode == "always":
            self._start_sync()

    def _end(self, batch: SyncBatch, error: OSError | None) -> None:
        store = self.store
        result = store.end_sync(batch, error)
        if result.lost:
            if not self._failed:
                self._failed = True
                log.critical(
                    "fsync failed: %s; stopping so that a restart recovers", error or store.broken
                )
                self._on_fatal(error or OSError("the store is broken"))
            for partition, (start, end) in result.lost.items():
                self.broker.storage_lost(partition, start, end)
            return
        if store.broken is None:
            self.broker.durability_advanced()

    async def close(self) -> None:
        """Write and fsync what is left (a graceful stop, while run() still runs)."""
        self.write_now()
        while True:
            while self._in_flight:
                await self._settled.wait()
            if self._failed:
                return
            self._start_sync()
            if not self._in_flight:
                return


class StoreQueueStorage:
    """The broker's QueueStorage port on the store: one log per queue, one partition per
    lane."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create_log(
        self,
        key: str,
        *,
        durable: bool,
        partitions: int = 1,
        random_reads: bool = False,
        tag_index: bool = False,
        keep_acked: bool = False,
    ) -> list[Partition]:
        if key in self.store.logs:  # left over: a transient log from before, say
            self.store.delete_log(key)
        return self.store.create_log(
            key,
            durable=durable,
            partitions=partitions,
            index_interval_bytes=RANDOM_READS_INDEX_INTERVAL_BYTES if random_reads else None,
            tag_index=tag_index,
            keep_acked=keep_acked,
        ).partitions

    def delete_log(self, key: str) -> None:
        if key in self.store.logs:
            self.store.delete_log(key)
