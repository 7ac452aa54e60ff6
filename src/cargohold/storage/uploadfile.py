"""Appending to an upload file: exclusive, crash-safe, and fast on fresh memory.

Large bodies are written with O_DIRECT from one reused, page-aligned staging buffer. Going
through the page cache would need a fresh page for every 4 KiB written, and on virtual
machines that hand memory back to the host (this project's CI among them) each fresh page
costs a host fault: buffered writes measured 220-340 MB/s there, direct writes 1.0 GB/s.
Direct writes also leave nothing dirty for the fsync before a blob becomes visible.
Unaligned heads and tails, and filesystems without O_DIRECT (tmpfs), use plain writes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

_ALIGN = 4096
_STAGE = 512 << 10


class StorageFullError(OSError):
    """The blob store ran out of space."""


class UploadBusyError(Exception):
    """Another request, in this or another worker process, is writing to the upload."""


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of `data` (a slice the caller hands over) at `offset`."""
    try:
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(err.errno, "no space left in the blob store") from err
        raise
    finally:
        # A failed write's traceback keeps this frame alive; a live slice of the staging
        # buffer would then stop it from ever being closed.
        data.release()


def _open_direct(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT)
    except OSError:  # EINVAL: the filesystem does not do direct I/O
        return -1


class UploadWriter:
    """Exclusive append access to an upload file; `truncate` undoes an abandoned write.

    The exclusive flock makes two requests on one session (from any worker process) take
    turns, so their bytes never interleave and the size read here is the true offset.
    `size` counts staged bytes too; `close` and `sync` put them in the file.
    """

    def __init__(self, path: Path, fsync: bool) -> None:
        self._fd = os.open(path, os.O_WRONLY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UploadBusyError(path.name) from None
        self._fsync = fsync
        self._written = os.fstat(self._fd).st_size
        self._direct = _open_direct(path)
        self._stage = mmap.mmap(-1, _STAGE) if self._direct >= 0 else None
        self._staged = 0

    @property
    def size(self) -> int:
        return self._written + self._staged

    def write_parts(self, parts: list[bytes]) -> None:
        for part in parts:
            view = memoryview(part)
            while view:
                if self._stage is None or (self._staged == 0 and self._written % _ALIGN):
                    # No direct I/O, or the file ends off a block boundary: plain-write up to it.
                    take = len(view) if self._stage is None else min(len(view), _ALIGN - self._written % _ALIGN)
                    _pwrite_all(self._fd, view[:take], self._written)
                    self._written += take
                else:
                    take = min(len(view), _STAGE - self._staged)
                    self._stage[self._staged : self._staged + take] = view[:take]
                    self._staged += take
                    if self._staged == _STAGE:
                        self._flush()
                view = view[take:]

    def _flush(self) -> None:
        """Write the staged bytes: whole blocks directly, the rest through the page cache."""
        if not self._staged or self._stage is None:
            return
        whole = self._staged - self._staged % _ALIGN
        # The view must be released even when a write fails, or the stage cannot be closed.
        with memoryview(self._stage) as stage:
            if whole:
                _pwrite_all(self._direct, stage[:whole], self._written)
            if whole < self._staged:
                _pwrite_all(self._fd, stage[whole : self._staged], self._written + whole)
        self._written += self._staged
        self._staged = 0

    def truncate(self, size: int) -> None:
        self._staged = 0
        os.ftruncate(self._fd, size)
        self._written = size

    def sync(self) -> None:
        """Put every byte in the file and, when configured, make it durable."""
        self._flush()
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._flush()
        finally:
            if self._stage is not None:
                self._stage.close()
            if self._direct >= 0:
                os.close(self._direct)
            os.close(self._fd)
            self._fd = -1
