"""An in-memory MessageLog and QueueStorage for broker tests: durability moves only when
the test says so, so confirm and commit ordering can be checked step by step."""

from __future__ import annotations

from typing import NamedTuple


class FakeRecord(NamedTuple):
    offset: int
    kind: int
    timestamp_ms: int
    payload: bytes


class MemoryLog:
    def __init__(self, read_bytes_max: int = 1 << 20) -> None:
        # As the store's partitions: a read returns about this many payload bytes at
        # most (the record that reaches it included), however many records were asked.
        self.read_bytes_max = read_bytes_max
        self.records: dict[int, FakeRecord] = {}
        self.acked: set[int] = set()
        self.next_offset = 0
        self.durable_offset = 0
        self.delivered_below = 0
        self.counters: dict[int, int] = {}
        self.appends = 0

    # MessageLog ------------------------------------------------------------

    @property
    def acked_below(self) -> int:
        live = [offset for offset in self.records if offset not in self.acked]
        return min(live) if live else self.next_offset

    @property
    def live_count(self) -> int:
        return sum(1 for offset in self.records if offset not in self.acked)

    def append(
        self, kind: int, timestamp_ms: int, payload: bytes, offset: int | None = None
    ) -> int:
        if offset is None:
            offset = self.next_offset
        assert offset >= self.next_offset, (offset, self.next_offset)
        self.records[offset] = FakeRecord(offset, kind, timestamp_ms, payload)
        self.next_offset = offset + 1
        self.appends += 1
        return offset

    def read(
        self, offset: int, max_records: int = 256, max_bytes: int | None = None
    ) -> list[FakeRecord]:
        budget = self.read_bytes_max if max_bytes is None else max_bytes
        found: list[FakeRecord] = []
        total = 0
        for record_offset, record in sorted(self.records.items()):
            if record_offset < offset or record_offset in self.acked:
                continue
            if len(found) >= max_records or total >= budget:
                break
            found.append(record)
            total += len(record.payload)
        return found

    def ack(self, offset: int) -> None:
        assert offset in self.records, f"ack of offset {offset}, never appended"
        self.acked.add(offset)

    def ack_range(self, start: int, end: int) -> None:
        self.acked.update(offset for offset in self.records if start <= offset < end)

    def is_acked(self, offset: int) -> bool:
        return offset in self.acked or offset not in self.records

    def note_delivered(self, offset: int) -> None:
        self.delivered_below = max(self.delivered_below, offset + 1)

    def set_counter(self, offset: int, value: int) -> None:
        if offset in self.records and offset not in self.acked:
            self.counters[offset] = value

    def counter(self, offset: int) -> int:
        return 0 if offset in self.acked else self.counters.get(offset, 0)

    # test controls ---------------------------------------------------------

    def make_durable(self) -> None:
        self.durable_offset = self.next_offset

    def live(self) -> list[int]:
        return sorted(offset for offset in self.records if offset not in self.acked)


class MemoryStorage:
    def __init__(self) -> None:
        self.partitions: dict[str, list[MemoryLog]] = {}
        self.deleted: list[str] = []

    @property
    def logs(self) -> dict[str, MemoryLog]:
        """Each log's first partition (the only one but for priority queues)."""
        return {key: partitions[0] for key, partitions in self.partitions.items()}

    def create_log(
        self,
        key: str,
        *,
        durable: bool,
        partitions: int = 1,
        random_reads: bool = False,
        tag_index: bool = False,
        keep_acked: bool = False,
    ) -> list[MemoryLog]:
        assert key not in self.partitions, key
        created = self.partitions[key] = [MemoryLog() for _ in range(partitions)]
        return created

    def delete_log(self, key: str) -> None:
        del self.partitions[key]
        self.deleted.append(key)


class MemoryDefinitions:
    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}
        self.ticket = 0
        self.durable_ticket = 0

    def put(self, key: bytes, value: bytes) -> int:
        self.entries[key] = value
        self.ticket += 1
        return self.ticket

    def delete(self, key: bytes) -> int:
        self.entries.pop(key, None)
        self.ticket += 1
        return self.ticket

    def make_durable(self) -> None:
        self.durable_ticket = self.ticket
