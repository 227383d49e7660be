"""The group-commit driver: a graceful stop while an fsync is running waits for it and
then syncs what is left, rather than tripping over the batch in flight."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from amqpd.server.storage import StoreDriver
from amqpd.store import FsyncPolicy, OsFileSystem, Partition, Store, StoreSettings


class GatedFileSystem(OsFileSystem):
    """fsync waits for `gate` once armed, and says when it started waiting."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def fsync(self, fd: int) -> None:
        if self.armed:
            self.entered.set()
            assert self.gate.wait(10), "the test never opened the gate"
        super().fsync(fd)


class DurabilityRecorder:
    """The two calls the driver makes on the broker."""

    def __init__(self) -> None:
        self.advanced = 0
        self.lost: list[tuple[Partition, int, int]] = []

    def storage_lost(self, log: Partition, start: int, end: int) -> None:
        self.lost.append((log, start, end))

    def durability_advanced(self) -> None:
        self.advanced += 1


@pytest.mark.anyio
async def test_close_waits_for_the_fsync_in_flight_and_syncs_the_rest(tmp_path: Path) -> None:
    fs = GatedFileSystem()
    store = Store.open(tmp_path, StoreSettings(fsync=FsyncPolicy.parse("always")), fs)
    broker = DurabilityRecorder()
    fatal: list[BaseException] = []
    driver = StoreDriver(store, broker, fatal.append)  # type: ignore[arg-type]
    partition = store.create_log("q", durable=True).partition(0)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(driver.run)
            fs.armed = True
            partition.append(1, 0, b"first")
            await anyio.to_thread.run_sync(fs.entered.wait, 10)
            partition.append(1, 0, b"second")  # written while the first fsync runs

            closed = anyio.Event()

            async def close() -> None:
                await driver.close()
                closed.set()

            tasks.start_soon(close)
            await anyio.wait_all_tasks_blocked()  # close() is now waiting, or has failed
            fs.armed = False
            fs.gate.set()
            with anyio.fail_after(10):
                await closed.wait()
            tasks.cancel_scope.cancel()
    finally:
        store.close()
    assert not fatal and not broker.lost
    assert partition.durable_offset == 2  # both records, the second by close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
