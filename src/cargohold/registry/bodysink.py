"""Streaming a request body into an upload file while hashing it.

The event loop hashes each chunk as it arrives (hashlib releases the GIL, so granian keeps
receiving meanwhile) and hands batches to worker threads that write them. A batch goes to
the pool as soon as it is complete and waits, in its thread, for the batch before it: the
event loop is never needed between two writes, so the disk stays busy while the loop
hashes. Measured on the project's 2-core machines, this beat hashing in a thread (the extra
GIL hand-offs slowed the receiving side), doing everything inline, and chaining each write
behind the last through the event loop (docs/architecture.md).

Memory stays flat: each upload has at most `WRITES_IN_FLIGHT` batches queued, and all the
uploads of a process together at most `WriteBudget.limit` bytes; past that, receiving waits,
which pushes back on the clients through TCP.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from ..storage.blobstore import UploadWriter

BATCH_BYTES = 1 << 20
WRITES_IN_FLIGHT = 2

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


class _OrderedWrites:
    """One upload's batches, written strictly in order by pool threads taking turns."""

    def __init__(self, writer: UploadWriter, pool: Executor, budget: WriteBudget) -> None:
        self._writer = writer
        self._pool = pool
        self._budget = budget
        self._turns = threading.Condition()
        self._now_writing = 0  # the turn whose batch may be written
        self._issued = 0
        self._failure: BaseException | None = None
        self._pending: deque[asyncio.Future[None]] = deque()

    def _write_in_turn(self, turn: int, batch: Batch) -> None:
        # The pool is first in, first out, so the turn before this one is already running:
        # waiting here cannot deadlock, however few threads the pool has.
        with self._turns:
            self._turns.wait_for(lambda: self._now_writing == turn)
        try:
            if self._failure is None:  # a failed write fails every later one: order is everything
                self._writer.write_parts(batch)
        except BaseException as err:
            self._failure = err
        finally:
            with self._turns:
                self._now_writing += 1
                self._turns.notify_all()

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def push(self, batch: Batch, size: int) -> None:
        await self._budget.take(size)
        written = asyncio.get_running_loop().run_in_executor(self._pool, self._write_in_turn, self._issued, batch)
        written.add_done_callback(lambda _: self._budget.give_back(size))
        self._issued += 1
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
    chunks: AsyncIterator[bytes], writer: UploadWriter, hasher: hashlib._Hash, pool: Executor, budget: WriteBudget
) -> None:
    """Hash and append every chunk; whatever arrived is kept even if the client goes away."""
    writes: _OrderedWrites | None = None
    batch: Batch = []
    batched = 0
    try:
        async for chunk in chunks:
            hasher.update(chunk)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= BATCH_BYTES:
                writes = writes or _OrderedWrites(writer, pool, budget)
                await writes.push(batch, batched)
                batch, batched = [], 0
    finally:
        if writes is not None:
            await writes.drain()
        if batch:  # a small remainder (or a small body) costs less inline than a thread hop
            writer.write_parts(batch)
