"""The definitions journal: a durable map of opaque keys to opaque values.

The broker keeps its durable definitions here (exchanges, queues, bindings, ... encoded as it
likes). `put` and `delete` change the map at once and append a record (PUT or DELETE, see
record.py); each returns a ticket, the record's sequence number. The store writes the records
in write_pending and fsyncs them with the next sync batch; `durable_ticket` then says which
changes are durable.

At open the journal is replayed (a torn tail is cut off, damage ends the replay and is logged)
and, when it holds more than twice as many records as live keys or more than 1 MiB, compacted:
a new file with one PUT per live key is written, fsynced and renamed over the old one.

Imports the standard library and store.* below it only.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

from amqpd.store.files import TMP_SUFFIX, FileTracker, write_atomic
from amqpd.store.journal import JournalFile, recover_journal
from amqpd.store.record import (
    DEFINITIONS_MAGIC,
    FILE_HEADER_BYTES,
    FormatError,
    encode_file_header,
    encode_record,
)

log = logging.getLogger("amqpd.store")

PUT: Final = 1
DELETE: Final = 2
JOURNAL_NAME: Final = "definitions.journal"
COMPACT_BYTES_MIN: Final = 1024 * 1024  # compact a journal larger than this at open

_KEY_LENGTH = struct.Struct(">I")


def encode_put(key: bytes, value: bytes) -> bytes:
    return _KEY_LENGTH.pack(len(key)) + key + value


def decode_put(payload: bytes) -> tuple[bytes, bytes]:
    if len(payload) < _KEY_LENGTH.size:
        raise FormatError(f"PUT payload of {len(payload)} bytes")
    (length,) = _KEY_LENGTH.unpack_from(payload)
    if _KEY_LENGTH.size + length > len(payload):
        raise FormatError(f"PUT key of {length} bytes in a {len(payload)}-byte payload")
    key_end = _KEY_LENGTH.size + length
    return payload[_KEY_LENGTH.size : key_end], payload[key_end:]


class DefinitionsJournal:
    def __init__(
        self,
        journal: JournalFile,
        items: dict[bytes, bytes],
        on_change: Callable[[], None],
    ) -> None:
        self._journal = journal
        self._items = items
        self._on_change = on_change
        self.durable_ticket = journal.next_sequence - 1  # every ticket <= this is durable

    @property
    def written_ticket(self) -> int:
        return self._journal.written_sequence

    @property
    def next_ticket(self) -> int:
        return self._journal.next_sequence

    @property
    def pending(self) -> bool:
        return bool(self._journal.pending)

    def items(self) -> dict[bytes, bytes]:
        """The current definitions (a copy)."""
        return dict(self._items)

    def get(self, key: bytes) -> bytes | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: bytes, value: bytes) -> int:
        ticket = self._journal.append(PUT, encode_put(key, value))
        self._items[key] = value
        self._on_change()
        return ticket

    def delete(self, key: bytes) -> int:
        ticket = self._journal.append(DELETE, key)
        self._items.pop(key, None)
        self._on_change()
        return ticket

    def _write(self) -> int:
        return self._journal.write()

    def _close(self) -> None:
        self._journal.close()

    @classmethod
    def open(
        cls,
        tracker: FileTracker,
        directory: Path,
        quarantine_dir: Path,
        on_change: Callable[[], None],
        *,
        fsync: bool,
    ) -> tuple[DefinitionsJournal, int]:
        """Replay (and maybe compact) the journal; also returns the torn bytes cut off."""
        path = directory / JOURNAL_NAME
        leftover = path.with_name(path.name + TMP_SUFFIX)
        if tracker.fs.exists(leftover):
            tracker.fs.remove(leftover)  # a compaction that did not finish: the old file holds
        items: dict[bytes, bytes] = {}

        def apply(kind: int, _sequence: int, payload: bytes) -> None:
            if kind == PUT:
                key, value = decode_put(payload)
                items[key] = value
            elif kind == DELETE:
                items.pop(payload, None)
            else:
                raise FormatError(f"unknown definitions record kind {kind}")

        found = recover_journal(
            tracker, path, DEFINITIONS_MAGIC, apply, quarantine_dir, "definitions journal"
        )
        size, next_sequence = found.size, found.next_sequence
        if found.records > 2 * len(items) or (
            size > COMPACT_BYTES_MIN and found.records > len(items)
        ):
            parts = [encode_file_header(DEFINITIONS_MAGIC)]
            for sequence, (key, value) in enumerate(items.items(), start=1):
                parts.append(encode_record(PUT, sequence, 0, encode_put(key, value)))
            data = b"".join(parts)
            write_atomic(tracker.fs, path, data, fsync=fsync)
            log.info(
                "definitions journal compacted: %d records, %d bytes -> %d keys, %d bytes",
                found.records,
                size,
                len(items),
                len(data),
            )
            size, next_sequence = len(data), len(items) + 1
        if size < FILE_HEADER_BYTES:
            size = 0
        journal = JournalFile(
            tracker,
            path,
            DEFINITIONS_MAGIC,
            durable=True,
            size=size,
            next_sequence=next_sequence,
        )
        return cls(journal, items, on_change), found.truncated_bytes
