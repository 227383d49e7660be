"""A named log: N partitions in one directory, and the meta file that keeps its name.

The directory name is derived from the log name (sha256 hex prefix), so any name works: a
queue "vhost/queue name" with spaces, slashes or any Unicode. The real name, durability and
partition count are in `meta` (one META record, written to meta.tmp and renamed), so
recovery can hand logs back by name; so are the options a recovered log must keep
(tag_index, keep_acked). One partition is a strict FIFO; N partitions are
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
INDEX_INTERVAL_MIN: Final = 256  # bytes between sparse-index entries, at the least


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
    # The log's own sparse-index interval (None: the store's): a log read at random
    # offsets wants a dense index, so that a read scans few records.
    index_interval_bytes: int | None = None
    # Segments keep the set of tags their records carry (tags.py): False if absent.
    tag_index: bool = False
    # Fully acked segments stay until drop_before removes them (replay): False if absent.
    keep_acked: bool = False

    def encode(self) -> bytes:
        fields: dict[str, object] = {
            "name": self.name,
            "durable": self.durable,
            "partitions": self.partitions,
        }
        if self.index_interval_bytes is not None:
            fields["index_interval_bytes"] = self.index_interval_bytes
        # written only when set, so that other logs' meta files stay byte for byte the same
        if self.tag_index:
            fields["tag_index"] = True
        if self.keep_acked:
            fields["keep_acked"] = True
        payload = json.dumps(fields, ensure_ascii=False, sort_keys=True).encode(
            "utf-8", "surrogatepass"
        )
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
            interval = fields.get("index_interval_bytes")
            tag_index = fields.get("tag_index", False)
            keep_acked = fields.get("keep_acked", False)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise FormatError(f"meta record: {error}") from None
        if (
            not isinstance(name, str)
            or not isinstance(durable, bool)
            or not isinstance(partitions, int)
            or not 1 <= partitions <= PARTITIONS_MAX
            or not (interval is None or (type(interval) is int and interval >= INDEX_INTERVAL_MIN))
            or not isinstance(tag_index, bool)
            or not isinstance(keep_acked, bool)
        ):
            raise FormatError(f"meta record has bad fields: {fields!r}")
        return cls(name, durable, partitions, interval, tag_index, keep_acked)


class Log:
    """A named log of one or more partitions."""

    def __init__(
        self,
        name: str,
        durable: bool,
        directory: Path,
        index_interval_bytes: int | None = None,
        *,
        tag_index: bool = False,
        keep_acked: bool = False,
    ) -> None:
        self.name = name
        self.durable = durable
        self.directory = directory
        self.index_interval_bytes = index_interval_bytes
        self.tag_index = tag_index
        self.keep_acked = keep_acked
        self.partitions: list[Partition] = []

    def __repr__(self) -> str:
        kind = "durable" if self.durable else "transient"
        return f"<Log {self.name!r} {kind} partitions={len(self.partitions)}>"

    def partition(self, index: int = 0) -> Partition:
        return self.partitions[index]

    @property
    def live_count(self) -> int:
        return sum(partition.live_count for partition in self.partitions)
