"""Writing a downloaded blob to a file fast and with bounded memory.

Bytes are copied into one of two page-aligned staging buffers; a full buffer is hashed and
written by a worker thread while the event loop fills the other one. Full buffers go to the
file with O_DIRECT: on this project's VMs buffered writes cost a host fault per fresh page
(158 MB/s buffered, 274 MB/s with fsync, 672 MB/s direct, measured with dd), and direct writes
leave nothing dirty for the final fsync. The tail, and filesystems without O_DIRECT (tmpfs),
use plain writes. Memory per download: two buffers, whatever the blob's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import os
from pathlib import Path

STAGE = 2 * 1024 * 1024  # a multiple of any block size O_DIRECT asks for


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    try:
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
    finally:
        data.release()


class BlobFileWriter:
    """Appends to a new file, hashing as it goes; `close()` (sync) ends it. Use from one task."""

    def __init__(self, path: Path, algorithm: str = "sha256") -> None:
        self.hash = hashlib.new(algorithm)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
        except (OSError, AttributeError):  # EINVAL: no direct I/O on this filesystem
            self.direct = -1
        self.stages = [mmap.mmap(-1, STAGE), mmap.mmap(-1, STAGE)]
        self.current = 0
        self.filled = 0
        self.offset = 0  # where the current stage goes in the file
        self.pending: asyncio.Future[None] | None = None
        self.written = 0

    def _flush_stage(self, stage: mmap.mmap, length: int, offset: int, direct: bool) -> None:
        view = memoryview(stage)[:length]
        try:
            self.hash.update(view)
            _pwrite_all(self.direct if direct else self.fd, view[:], offset)
        finally:
            view.release()

    async def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = STAGE - self.filled
            take = min(room, len(view))
            self.stages[self.current][self.filled : self.filled + take] = view[:take]
            self.filled += take
            view = view[take:]
            if self.filled == STAGE:
                await self._wait()  # the other stage must be free before it is refilled
                stage, offset = self.stages[self.current], self.offset
                self.pending = asyncio.ensure_future(
                    asyncio.to_thread(self._flush_stage, stage, STAGE, offset, self.direct >= 0)
                )
                self.current ^= 1
                self.filled = 0
                self.offset += STAGE
        self.written += len(data)

    async def finish(self) -> str:
        """Write the tail, fsync; returns the hex digest of everything written."""
        await self._wait()
        if self.filled:
            await asyncio.to_thread(self._flush_stage, self.stages[self.current], self.filled, self.offset, False)
            self.offset += self.filled
            self.filled = 0
        await asyncio.to_thread(os.fsync, self.fd)
        return self.hash.hexdigest()

    async def close(self) -> None:
        """Release everything; waits for a write in flight (no thread may write to a closed file)."""
        with contextlib.suppress(Exception):
            await self._wait()
        for fd in (self.fd, self.direct):
            if fd >= 0:
                os.close(fd)
        self.fd = self.direct = -1
        for stage in self.stages:
            stage.close()
