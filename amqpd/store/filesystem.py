"""The file-system seam: every operation the store performs on disk, and the real one.

The store never calls `os` or `open` itself; it calls a `FileSystem`. Tests substitute a
wrapper that tears writes, fills the disk, fails fsync or flips bits at rest, each driven by
a printed seed (tests/support/faulty_fs.py).

Files are plain file descriptors (ints): the store keeps them open, writes whole batches in one
`write`, reads with `pread` (so reads never move a shared file position) and fsyncs them from a
worker thread.

Imports the standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

_APPEND_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
FILE_MODE = 0o644


class FileSystem(Protocol):
    """What the store does to disk. Paths are absolute; failures raise OSError."""

    def open_append(self, path: Path) -> int:
        """Open for reading and appending, creating the file if missing."""
        ...

    def open_read(self, path: Path) -> int:
        """Open an existing file read-only."""
        ...

    def open_new(self, path: Path) -> int:
        """Create (or empty) a file for writing: temporary files written then renamed."""
        ...

    def close(self, fd: int) -> None: ...

    def write(self, fd: int, data: bytes) -> None:
        """Write all of `data` at the end of the file, or raise (some of it may have landed)."""
        ...

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Up to `size` bytes from `offset`; fewer only at the end of the file."""
        ...

    def fsync(self, fd: int) -> None: ...

    def fsync_dir(self, path: Path) -> None:
        """Make the entries of a directory (creations, renames, removals) durable."""
        ...

    def truncate(self, fd: int, length: int) -> None: ...

    def file_size(self, fd: int) -> int: ...

    def rename(self, source: Path, target: Path) -> None:
        """Atomically replace `target` (file or empty directory) with `source`."""
        ...

    def remove(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def makedirs(self, path: Path) -> None:
        """Create a directory and its parents; no error if it exists."""
        ...

    def listdir(self, path: Path) -> list[str]: ...

    def exists(self, path: Path) -> bool: ...

    def is_dir(self, path: Path) -> bool: ...

    def size(self, path: Path) -> int: ...


class OsFileSystem:
    """The real file system, through os.* calls on file descriptors."""

    def open_append(self, path: Path) -> int:
        return os.open(path, _APPEND_FLAGS, FILE_MODE)

    def open_read(self, path: Path) -> int:
        return os.open(path, _READ_FLAGS)

    def open_new(self, path: Path) -> int:
        return os.open(path, _NEW_FLAGS, FILE_MODE)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes) -> None:
        written = os.write(fd, data)
        if written == len(data):
            return
        view = memoryview(data)
        while written < len(data):  # a short write: the rest, or the error that stopped it
            written += os.write(fd, view[written:])

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        data = os.pread(fd, size, offset)
        if len(data) == size or not data:
            return data
        parts = [data]
        got = len(data)
        while got < size:
            more = os.pread(fd, size - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, _DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def file_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def rename(self, source: Path, target: Path) -> None:
        os.rename(source, target)

    def remove(self, path: Path) -> None:
        os.remove(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def makedirs(self, path: Path) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: Path) -> bool:
        return os.path.isdir(path)

    def size(self, path: Path) -> int:
        return os.stat(path).st_size
