"""Open files and what must be fsynced: the bookkeeping shared by segments and journals.

A `FileHandle` is one open file descriptor. Whoever writes to it tells the `FileTracker`
(the Store), which collects the handles and directories the next sync batch must fsync, and
which closes a handle only when no sync batch holds it (a log may be deleted while a worker
thread fsyncs its files).

Also small helpers over the FileSystem seam: atomic file replacement and tree removal.

Imports the standard library and store.filesystem only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from amqpd.store.filesystem import FileSystem

TMP_SUFFIX = ".tmp"


class FileHandle:
    __slots__ = ("close_when_released", "durable", "fd", "path", "sync_holds")

    def __init__(self, path: Path, fd: int, *, durable: bool) -> None:
        self.path = path
        self.fd = fd
        self.durable = durable  # fsynced by sync batches (transient files never are)
        self.sync_holds = 0  # sync batches in flight that will fsync this descriptor
        self.close_when_released = False

    def __repr__(self) -> str:
        return f"<FileHandle fd={self.fd} {self.path}>"


class FileTracker(Protocol):
    """What segments and journals report to the store about their files."""

    fs: FileSystem

    def written(self, handle: FileHandle) -> None:
        """Bytes were written to this file: fsync it in the next sync batch (if durable)."""
        ...

    def entries_changed(self, directory: Path, *, durable: bool) -> None:
        """A file was created, renamed or removed in this directory."""
        ...

    def release(self, handle: FileHandle) -> None:
        """Close this descriptor now, or when the sync batches holding it end."""
        ...

    def mark_broken(self, error: BaseException) -> None:
        """A file is in a state the store can no longer vouch for (a failed truncate)."""
        ...


def write_atomic(fs: FileSystem, path: Path, data: bytes, *, fsync: bool) -> None:
    """Replace `path` with `data` all at once: write a temporary file, (fsync,) rename.

    With fsync, the new content and the rename are durable when this returns.
    """
    temporary = path.with_name(path.name + TMP_SUFFIX)
    fd = fs.open_new(temporary)
    try:
        fs.write(fd, data)
        if fsync:
            fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.rename(temporary, path)
    if fsync:
        fs.fsync_dir(path.parent)


def remove_tree(fs: FileSystem, path: Path) -> None:
    """Remove a directory and everything under it (the store's own layout: no symlinks)."""
    if not fs.exists(path):
        return
    if not fs.is_dir(path):
        fs.remove(path)
        return
    for name in fs.listdir(path):
        remove_tree(fs, path / name)
    fs.rmdir(path)


def free_name(fs: FileSystem, directory: Path, name: str) -> Path:
    """`directory/name`, or with a numeric suffix if that exists already."""
    candidate = directory / name
    number = 1
    while fs.exists(candidate):
        candidate = directory / f"{name}.{number}"
        number += 1
    return candidate
