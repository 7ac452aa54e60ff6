"""Appending to an upload file: exclusive, crash-safe, and fast on fresh memory.

Large bodies are written with O_DIRECT through page-aligned staging buffers. Going through
the page cache would need a fresh page for every 4 KiB written, and on virtual machines
that hand memory back to the host (this project's CI among them) each fresh page costs a
host fault: buffered writes measured 220-340 MB/s there, direct writes 1.0 GB/s. Direct
writes also leave nothing dirty for the fsync before a blob becomes visible.
The staging buffers are shared by the whole process and reused, so their pages stay
faulted in, and only writes in progress hold one. Unaligned heads and tails, and
filesystems without O_DIRECT (tmpfs), use plain writes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from pathlib import Path

from .records import StorageFullError, UploadBusyError

_ALIGN = 4096
# One direct write per staging buffer: 1 MiB writes measured 8 % faster uploads than
# 512 KiB ones here (fewer requests to the virtual disk), 2 MiB no faster again.
_STAGE = 1 << 20


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


class _Stages:
    """Page-aligned staging buffers, lent to one write at a time and kept for the next."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self._keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, self.size)

    def give_back(self, stage: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(stage)
                return
        stage.close()


# As many as the upload pool has threads writing at once (registry.app); more are made on demand.
_STAGES = _Stages(_STAGE, keep=8)


class UploadWriter:
    """Exclusive append access to an upload file; `truncate` undoes an abandoned write.

    The exclusive flock makes two requests on one session (from any worker process) take
    turns, so their bytes never interleave and the size read here is the true offset.
    Direct writes need whole blocks, so up to one block of unaligned tail waits in memory
    for the next write; `size` counts it, and `close` and `sync` put it in the file.
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
        self._tail = b""  # bytes after `_written`, less than a block; only when `_written` is aligned

    @property
    def size(self) -> int:
        return self._written + len(self._tail)

    # The file itself can be hashed again: no state is kept (interfaces.UploadHandle).
    hash_state = None

    def keep_hash_state(self, state: bytes) -> None:
        pass

    def write_parts(self, parts: list[bytes]) -> None:
        if self._direct < 0:
            for part in parts:
                _pwrite_all(self._fd, memoryview(part), self._written)
                self._written += len(part)
            return
        stage = _STAGES.take()
        try:
            self._write_direct([self._tail, *parts] if self._tail else parts, stage)
        finally:
            _STAGES.give_back(stage)

    def _write_direct(self, parts: list[bytes], stage: mmap.mmap) -> None:
        """Whole blocks go out through `stage`; what is left of the last block becomes the tail."""
        self._tail = b""
        staged = 0
        with memoryview(stage) as buffer:
            for part in parts:
                view = memoryview(part)
                while view:
                    if not staged and self._written % _ALIGN:
                        # The file ends off a block boundary: plain-write up to it.
                        take = min(len(view), _ALIGN - self._written % _ALIGN)
                        _pwrite_all(self._fd, view[:take], self._written)
                        self._written += take
                    else:
                        take = min(len(view), len(buffer) - staged)
                        buffer[staged : staged + take] = view[:take]
                        staged += take
                        if staged == len(buffer):
                            _pwrite_all(self._direct, buffer[:staged], self._written)
                            self._written += staged
                            staged = 0
                    view = view[take:]
            whole = staged - staged % _ALIGN
            if whole:
                _pwrite_all(self._direct, buffer[:whole], self._written)
                self._written += whole
            self._tail = bytes(buffer[whole:staged])

    def _flush(self) -> None:
        """Write the tail through the page cache."""
        if self._tail:
            _pwrite_all(self._fd, memoryview(self._tail), self._written)
            self._written += len(self._tail)
            self._tail = b""

    def truncate(self, size: int) -> None:
        self._tail = b""
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
            if self._direct >= 0:
                os.close(self._direct)
            os.close(self._fd)
            self._fd = -1
