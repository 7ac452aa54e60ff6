"""A blob from any source, read as a plain binary file by code that runs in a worker thread
(the supply chain's tar walk), while the event loop keeps fetching it.

Nothing is buffered beyond the piece in hand; every byte is hashed as it passes, and `verify`
reads whatever the reader left and checks the digest, so an analysis never rests on bytes a
store or a server corrupted.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncGenerator

from ..oci.manifest import Descriptor
from .blobs import Opener
from .errors import IntegrityError


class ThreadBlobReader(io.RawIOBase):
    def __init__(self, opener: Opener, blob: Descriptor, loop: asyncio.AbstractEventLoop, label: str) -> None:
        self.blob = blob
        self.label = label
        self._loop = loop
        self._chunks: AsyncGenerator[bytes, None] = opener(0)
        self._piece = memoryview(b"")
        self._hash = hashlib.new(blob.digest.algorithm)
        self._size = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        if self._ended:
            return False
        try:
            data = asyncio.run_coroutine_threadsafe(anext(self._chunks), self._loop).result()
        except StopAsyncIteration:
            self._ended = True
            return False
        self._hash.update(data)
        self._size += len(data)
        self._piece = memoryview(data)
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._piece:
            if not self._next():
                return 0
        count = min(len(buffer), len(self._piece))
        buffer[:count] = self._piece[:count]
        self._piece = self._piece[count:]
        return count

    def verify(self) -> None:
        """Read to the end, then check size and digest; IntegrityError when either is wrong."""
        self._piece = memoryview(b"")
        while self._next():
            self._piece = memoryview(b"")
        if self._size != self.blob.size or self._hash.hexdigest() != self.blob.digest.encoded:
            raise IntegrityError(
                f"{self.label}: blob {self.blob.digest} has other content (a corrupt store or a lying server)"
            )

    def close(self) -> None:
        if not self.closed and not self._ended:
            asyncio.run_coroutine_threadsafe(self._chunks.aclose(), self._loop).result()
        super().close()
