"""A named log: N partitions in one directory, and the meta file that keeps its name.

The directory name is derived from the log name (sha256 hex prefix), so any name works: a
queue "vhost/queue name" with spaces, slashes or any Unicode. The real name, durability and
partition count are in `meta` (one META record, written to meta.tmp and renamed), so
recovery can hand logs back by name. One partition is a strict FIFO; N partitions are
ordered per key (the caller picks the partition).

Imports the standard library and store.* below it only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from amqpd.store.record import (
    FILE_HEADER_BYTES,
    META_MAGIC,
    FormatError,
    decode_file_header,
    decode_record,
    encode_file_header,
    encode_record,
)

if TYPE_CHECKING:
    from amqpd.store.partition import Partition

META_NAME: Final = "meta"
META_KIND: Final = 1
DIRECTORY_HEX_DIGITS: Final = 32  # 128 bits of sha256: collisions are not a concern
PARTITIONS_MAX: Final = 4096


def directory_name(name: str) -> str:
    """A file-system-safe directory name for a log name."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:DIRECTORY_HEX_DIGITS]


def partition_directory(log_directory: Path, index: int) -> Path:
    return log_directory / f"p{index}"


@attrs.frozen
class LogMeta:
    name: str
    durable: bool
    partitions: int

    def encode(self) -> bytes:
        payload = json.dumps(
            {"name": self.name, "durable": self.durable, "partitions": self.partitions},
            ensure_ascii=False,
            sort_keys=True,
        ).encode("utf-8", "surrogatepass")
        return encode_file_header(META_MAGIC) + encode_record(META_KIND, 0, 0, payload)

    @classmethod
    def decode(cls, data: bytes) -> LogMeta:
        """FormatError if `data` is not a whole, valid meta file."""
        decode_file_header(data[:FILE_HEADER_BYTES], META_MAGIC)
        kind, _, _, payload, end = decode_record(data, FILE_HEADER_BYTES)
        if kind != META_KIND or end != len(data):
            raise FormatError("meta file holds more or other than one META record")
        try:
            fields = json.loads(payload.decode("utf-8", "surrogatepass"))
            name, durable, partitions = fields["name"], fields["durable"], fields["partitions"]
        except (ValueError, KeyError, TypeError) as error:
            raise FormatError(f"meta record: {error}") from None
        if (
            not isinstance(name, str)
            or not isinstance(durable, bool)
            or not isinstance(partitions, int)
            or not 1 <= partitions <= PARTITIONS_MAX
        ):
            raise FormatError(f"meta record has bad fields: {fields!r}")
        return cls(name, durable, partitions)


class Log:
    """A named log of one or more partitions."""

    def __init__(self, name: str, durable: bool, directory: Path) -> None:
        self.name = name
        self.durable = durable
        self.directory = directory
        self.partitions: list[Partition] = []

    def __repr__(self) -> str:
        kind = "durable" if self.durable else "transient"
        return f"<Log {self.name!r} {kind} partitions={len(self.partitions)}>"

    def partition(self, index: int = 0) -> Partition:
        return self.partitions[index]

    @property
    def live_count(self) -> int:
        return sum(partition.live_count for partition in self.partitions)
