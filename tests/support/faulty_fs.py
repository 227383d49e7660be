"""A FileSystem that fails on purpose: torn writes, a full disk, failed fsync, bit rot.

Wraps the real OsFileSystem (files really land on disk, so a test can reopen the store with a
plain OsFileSystem to see what survived). Every random choice comes from one seeded
random.Random, so a failing test reproduces from the seed in its id.

Faults apply to the files a `match` predicate selects (every file by default):

- `tear_next_write(keep=None)`: the next write lands only its first `keep` bytes (random if
  None), then raises OSError(EIO): a crash or I/O error in the middle of a write.
- `fill_disk_after(free_bytes)`: once that many more bytes have been written, writes raise
  OSError(ENOSPC); the write that crosses the line lands partly, as a real short write
  would. `free_space()` makes room again.
- `fail_fsync(times=1)`: the next fsync calls raise OSError(EIO) (directories too if asked).
- `fail_truncate(times=1)`: the next truncate calls raise OSError(EIO).
- `flip_bits(path, ...)`: flip random bits of a file at rest (not through the store).
- `crash()`: what a power cut leaves: every file keeps what its last fsync covered, plus a
  random part of what was written after it, possibly ending in zeroed or random bytes (torn
  pages). Directory entries are assumed durable.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path

from amqpd.store.filesystem import OsFileSystem

PathMatch = Callable[[Path], bool]


def every_file(path: Path) -> bool:
    return True


def segments_only(path: Path) -> bool:
    return path.suffix == ".seg"


def journals_only(path: Path) -> bool:
    return path.suffix == ".journal"


class FaultyFileSystem(OsFileSystem):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._paths: dict[int, Path] = {}
        self._tear: tuple[PathMatch, int | None] | None = None
        self._free_bytes: int | None = None
        self._disk_match: PathMatch = every_file
        self._fsync_failures = 0
        self._fsync_match: PathMatch = every_file
        self._fsync_dirs = False
        self._truncate_failures = 0
        self._synced_sizes: dict[Path, int] = {}
        self.writes = 0
        self.bytes_written = 0
        self.fsyncs = 0
        self.directory_fsyncs = 0
        self.failures: list[str] = []

    # -- arming faults --------------------------------------------------------------------

    def tear_next_write(self, keep: int | None = None, match: PathMatch = every_file) -> None:
        self._tear = (match, keep)

    def fill_disk_after(self, free_bytes: int, match: PathMatch = every_file) -> None:
        self._free_bytes = free_bytes
        self._disk_match = match

    def free_space(self) -> None:
        self._free_bytes = None

    def fail_fsync(
        self, times: int = 1, match: PathMatch = every_file, *, directories: bool = False
    ) -> None:
        self._fsync_failures = times
        self._fsync_match = match
        self._fsync_dirs = directories

    def fail_truncate(self, times: int = 1) -> None:
        self._truncate_failures = times

    def flip_bits(
        self, path: Path, count: int = 1, start: int = 0, end: int | None = None
    ) -> list[int]:
        """Flip `count` distinct random bits in path[start:end]; returns the byte positions hit."""
        data = bytearray(path.read_bytes())
        stop = len(data) if end is None else min(end, len(data))
        bits = self.rng.sample(range(start * 8, stop * 8), min(count, (stop - start) * 8))
        for bit in bits:
            data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        return sorted(bit // 8 for bit in bits)

    def crash(self) -> list[str]:
        """Cut every file back as a power cut might; returns what was done (for messages).

        Call after the store has closed its files (Store.close writes and fsyncs nothing).
        """
        done = []
        for path, synced in sorted(self._synced_sizes.items()):
            if not path.exists():
                continue
            size = path.stat().st_size
            if size <= synced:
                continue
            cut = self.rng.randint(synced, size)
            junk_bytes = min(size - cut, self.rng.choice([0, 0, 7, 100, 4096]))
            junk = bytes(junk_bytes) if self.rng.random() < 0.5 else self.rng.randbytes(junk_bytes)
            with open(path, "r+b") as file:
                file.truncate(cut)
                file.seek(cut)
                file.write(junk)
            done.append(f"{path.name}: {size} -> {cut} + {junk_bytes} junk (synced {synced})")
        return done

    # -- the FileSystem operations, with faults -------------------------------------------

    def open_append(self, path: Path) -> int:
        fd = super().open_append(path)
        self._paths[fd] = Path(path)
        self._synced_sizes.setdefault(Path(path), 0)
        return fd

    def open_read(self, path: Path) -> int:
        fd = super().open_read(path)
        self._paths[fd] = Path(path)
        return fd

    def open_new(self, path: Path) -> int:
        fd = super().open_new(path)
        self._paths[fd] = Path(path)
        self._synced_sizes[Path(path)] = 0
        return fd

    def rename(self, source: Path, target: Path) -> None:
        super().rename(source, target)
        moved = {
            path: size
            for path, size in self._synced_sizes.items()
            if path == Path(source) or Path(source) in path.parents
        }
        for path, size in moved.items():
            del self._synced_sizes[path]
            self._synced_sizes[Path(target) / path.relative_to(source)] = size

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        super().close(fd)

    def path_of(self, fd: int) -> Path:
        return self._paths.get(fd, Path("?"))

    def write(self, fd: int, data: bytes) -> None:
        path = self.path_of(fd)
        self.writes += 1
        if self._tear is not None and self._tear[0](path):
            keep = self._tear[1]
            self._tear = None
            if keep is None:
                keep = self.rng.randrange(len(data)) if data else 0
            keep = min(keep, len(data))
            os.write(fd, data[:keep])
            self.bytes_written += keep
            self.failures.append(f"torn write of {path.name}: {keep} of {len(data)} bytes")
            raise OSError(errno.EIO, f"torn write ({keep} of {len(data)} bytes)", str(path))
        if self._free_bytes is not None and self._disk_match(path):
            if len(data) > self._free_bytes:
                keep = self._free_bytes
                if keep:
                    os.write(fd, data[:keep])
                self._free_bytes = 0
                self.bytes_written += keep
                self.failures.append(f"ENOSPC writing {path.name}: {keep} of {len(data)} bytes")
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            self._free_bytes -= len(data)
        super().write(fd, data)
        self.bytes_written += len(data)

    def fsync(self, fd: int) -> None:
        path = self.path_of(fd)
        if self._fsync_failures and self._fsync_match(path):
            self._fsync_failures -= 1
            self.failures.append(f"fsync of {path.name} failed")
            raise OSError(errno.EIO, "Input/output error (fsync)", str(path))
        self.fsyncs += 1
        super().fsync(fd)
        if path in self._synced_sizes:
            self._synced_sizes[path] = self.file_size(fd)

    def fsync_dir(self, path: Path) -> None:
        if self._fsync_failures and self._fsync_dirs:
            self._fsync_failures -= 1
            self.failures.append(f"fsync of directory {path} failed")
            raise OSError(errno.EIO, "Input/output error (fsync)", str(path))
        self.directory_fsyncs += 1
        super().fsync_dir(path)

    def truncate(self, fd: int, length: int) -> None:
        if self._truncate_failures:
            self._truncate_failures -= 1
            self.failures.append(f"truncate of {self.path_of(fd).name} failed")
            raise OSError(errno.EIO, "Input/output error (truncate)", str(self.path_of(fd)))
        super().truncate(fd, length)
