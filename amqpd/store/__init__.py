"""The storage engine: named, partitioned logs of opaque records on disk.

Knows nothing of AMQP. Synchronous; the caller drives writing and group commit (see
store.py). The disk format is documented in record.py.

Imports the standard library and attrs only.
"""

from amqpd.store.definitions import DefinitionsJournal
from amqpd.store.filesystem import FileSystem, OsFileSystem
from amqpd.store.log import Log
from amqpd.store.metrics import LogRecovery, Quarantined, RecoveryReport, StoreMetrics
from amqpd.store.partition import Partition, Record, SegmentSpan
from amqpd.store.settings import FsyncPolicy, StoreSettings
from amqpd.store.store import (
    Store,
    StoreBroken,
    SyncBatch,
    SyncResult,
    WriteFailed,
)

__all__ = [
    "DefinitionsJournal",
    "FileSystem",
    "FsyncPolicy",
    "Log",
    "LogRecovery",
    "OsFileSystem",
    "Partition",
    "Quarantined",
    "Record",
    "RecoveryReport",
    "SegmentSpan",
    "Store",
    "StoreBroken",
    "StoreMetrics",
    "StoreSettings",
    "SyncBatch",
    "SyncResult",
    "WriteFailed",
]
