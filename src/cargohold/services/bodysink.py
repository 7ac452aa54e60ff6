"""Streaming a request body into an upload file while hashing it.

The event loop queues 1 MiB batches for a worker thread that writes them, and hashes each
chunk as it arrives (hashlib releases the GIL, so granian keeps receiving meanwhile). The
thread goes on to the next batch as soon as one is written: the disk is the slower stage,
so any pause between two writes is lost time. Measured on the project's 2-core machines,
this beat one pool task per batch taking turns (each batch waited for a thread to wake),
hashing in a thread (the extra GIL hand-offs slowed the receiving side), doing everything
inline, and chaining each write behind the last through the event loop
(docs/architecture.md).

Memory stays flat: each upload has at most `WRITES_IN_FLIGHT` batches queued, and all the
uploads of a process together at most `WriteBudget.limit` bytes; past that, receiving waits,
which pushes back on the clients through TCP.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

from ..storage.interfaces import UploadHandle
from .resumable import RunningHash

BATCH_BYTES = 1 << 20
WRITES_IN_FLIGHT = 2
# Batches one pool task writes before it makes way for other pool work (and other uploads).
_BATCHES_PER_TASK = 8
# GIL switch interval while bodies stream: 0.5 ms measured best (1 ms and 0.2 ms a little slower).
STREAMING_SWITCH_INTERVAL = 0.0005

Batch = list[bytes]


class WriteBudget:
    """Bytes received but not yet written, across every upload of this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def used(self) -> int:
        return self._used

    async def take(self, size: int) -> None:
        # An idle budget admits any batch, so one larger than the limit cannot stall.
        while self._used and self._used + size > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self._used += size

    def give_back(self, size: int) -> None:
        """Called on the event loop when a batch is written (or failed)."""
        self._used -= size
        while self._waiters:  # every waiter checks again; there are few
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


class BodyStreams:
    """The request bodies streaming into uploads in this process.

    While any does, the GIL switch interval is shortened. granian's thread needs the GIL to
    hand over each body chunk, and with Python's default 5 ms it can wait that long behind
    the event loop's Python code: in paired bench rounds 0.5 ms made chunked uploads 12-19 %
    and monolithic ones 5 % faster. It is put back when the last body ends, because manifest
    requests measured up to 20 % slower with it.
    """

    def __init__(self) -> None:
        self.count = 0
        self._default_interval = sys.getswitchinterval()

    @contextmanager
    def streaming(self) -> Iterator[int]:
        """Count one more body while the block runs; yields how many were streaming before it."""
        if self.count == 0:
            sys.setswitchinterval(STREAMING_SWITCH_INTERVAL)
        self.count += 1
        try:
            yield self.count - 1
        finally:
            self.count -= 1
            if self.count == 0:
                sys.setswitchinterval(self._default_interval)


class _OrderedWrites:
    """One upload's batches, written strictly in order by one pool task at a time.

    The task writes whatever is queued, so consecutive batches go out without a thread
    hand-off between them; after `_BATCHES_PER_TASK` it queues itself again behind other
    pool work, so a long upload cannot hold a thread (and starve the others) to the end.
    """

    def __init__(self, writer: UploadHandle, pool: Executor, budget: WriteBudget) -> None:
        self._writer = writer
        self._pool = pool
        self._budget = budget
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._queue: deque[tuple[Batch, int, asyncio.Future[None]]] = deque()
        self._writing = False  # a pool task owns the queue
        self._failure: BaseException | None = None
        self._pending: deque[asyncio.Future[None]] = deque()

    def _write_queued(self) -> None:
        while self._write_some():
            try:
                self._pool.submit(self._write_queued)
                return
            except RuntimeError:  # the pool is shutting down: finish the queue in this thread
                continue

    def _write_some(self) -> bool:
        """Write up to `_BATCHES_PER_TASK` queued batches; True if the queue may hold more."""
        for _ in range(_BATCHES_PER_TASK):
            with self._lock:
                if not self._queue:
                    self._writing = False
                    return False
                batch, size, written = self._queue.popleft()
            try:
                if self._failure is None:  # a failed write fails every later one: order is everything
                    self._writer.write_parts(batch)
            except BaseException as err:
                self._failure = err
            finally:
                self._loop.call_soon_threadsafe(self._settle, written, size)
        return True

    def _settle(self, written: asyncio.Future[None], size: int) -> None:
        self._budget.give_back(size)
        if not written.done():  # its waiter may have been cancelled
            written.set_result(None)

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def push(self, batch: Batch, size: int) -> None:
        await self._budget.take(size)
        written = self._loop.create_future()
        with self._lock:
            self._queue.append((batch, size, written))
            idle, self._writing = not self._writing, True
        if idle:
            self._pool.submit(self._write_queued)
        self._pending.append(written)
        while len(self._pending) > WRITES_IN_FLIGHT:
            await self._pending.popleft()
        self._check()

    async def drain(self) -> None:
        """Wait for every queued write, even after a failure; then raise the first failure."""
        await asyncio.shield(asyncio.gather(*self._pending))
        self._pending.clear()
        self._check()


async def sink(
    chunks: AsyncIterator[bytes], writer: UploadHandle, hasher: RunningHash, pool: Executor, budget: WriteBudget
) -> None:
    """Hash and append every chunk. Every chunk that arrived is written, even when the body
    ends early; whether to keep them is the caller's decision (uploads truncate them away)."""
    writes: _OrderedWrites | None = None
    batch: Batch = []
    batched = 0
    try:
        async for chunk in chunks:
            batch.append(chunk)
            batched += len(chunk)
            if batched >= BATCH_BYTES:
                writes = writes or _OrderedWrites(writer, pool, budget)
                full, size, batch, batched = batch, batched, [], 0  # never written twice, even if push is cancelled
                await writes.push(full, size)
            # Hashed after it is queued: the disk, the slower stage, starts a batch sooner.
            hasher.update(chunk)
    finally:
        if writes is not None:
            await writes.drain()
        if batch:  # a small remainder (or a small body) costs less inline than a thread hop
            writer.write_parts(batch)
