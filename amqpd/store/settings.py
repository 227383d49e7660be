"""The store's settings: the fsync policy and the size limits. Values only.

Imports attrs and the standard library only.
"""

from __future__ import annotations

import attrs

FSYNC_MODES = ("always", "interval", "never")


@attrs.frozen
class FsyncPolicy:
    """When written data is made durable.

    always: the caller syncs as soon as there is something to sync (group commit per tick).
    interval: the caller syncs every `interval_ms`.
    never: nothing is fsynced; written data counts as durable (a crash of the OS may lose it).
    """

    mode: str
    interval_ms: int = 0

    def __attrs_post_init__(self) -> None:
        if self.mode not in FSYNC_MODES:
            raise ValueError(f"fsync mode {self.mode!r} is not one of {', '.join(FSYNC_MODES)}")
        if (self.mode == "interval") != (self.interval_ms > 0):
            raise ValueError(f"fsync mode {self.mode!r} with interval_ms {self.interval_ms}")

    @classmethod
    def parse(cls, value: str | int) -> FsyncPolicy:
        """ "always", "never", or a positive number of milliseconds (int or digit string)."""
        if isinstance(value, bool):
            raise ValueError(f"fsync must be always, never or milliseconds, not {value!r}")
        if isinstance(value, str):
            text = value.strip()
            if text in ("always", "never"):
                return cls(text)
            if not (text.isascii() and text.isdigit()):
                raise ValueError(f"fsync must be always, never or milliseconds, not {value!r}")
            value = int(text)
        if isinstance(value, int) and value > 0:
            return cls("interval", value)
        raise ValueError(f"fsync must be always, never or a positive number of ms, not {value!r}")


@attrs.frozen
class StoreSettings:
    fsync: FsyncPolicy = FsyncPolicy("always")
    segment_bytes_max: int = 64 * 1024 * 1024  # roll to a new segment past this
    index_interval_bytes: int = 64 * 1024  # sparse index: one entry per this many bytes
    ack_journal_bytes_max: int = 4 * 1024 * 1024  # compact an ack journal past this
    read_bytes_max: int = 1024 * 1024  # bytes read from a file per read() call at most

    def __attrs_post_init__(self) -> None:
        for name in (
            "segment_bytes_max",
            "index_interval_bytes",
            "ack_journal_bytes_max",
            "read_bytes_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
