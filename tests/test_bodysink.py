"""The upload body pipeline: hashing on the event loop, ordered writes in pool threads, a budget."""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cargohold.registry.http import IncompleteBody, Request
from cargohold.services.bodysink import BATCH_BYTES, STREAMING_SWITCH_INTERVAL, BodyStreams, WriteBudget, sink
from cargohold.storage.records import StorageFullError
from cargohold.storage.uploadfile import UploadWriter


def random_chunks(seed: int, total: int) -> list[bytes]:
    rng = random.Random(seed)
    chunks, left = [], total
    while left:
        size = min(left, rng.choice([1, 4095, 4096, 65_536, 300_001, BATCH_BYTES, 3 * BATCH_BYTES + 7]))
        chunks.append(rng.randbytes(size))
        left -= size
    return chunks


async def feed(chunks: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for index, chunk in enumerate(chunks):
        if index == fail_after:
            raise IncompleteBody(0)
        await asyncio.sleep(0)  # let the writes run between chunks, as a real socket does
        yield chunk


def new_writer(path: Path) -> UploadWriter:
    path.write_bytes(b"")
    return UploadWriter(path, fsync=False)


@pytest.mark.parametrize("threads", [1, 4])
def test_every_byte_lands_in_order_and_is_hashed(tmp_path: Path, threads: int) -> None:
    chunks = random_chunks(seed=threads, total=24 * BATCH_BYTES + 12_345)
    expected = b"".join(chunks)
    writer = new_writer(tmp_path / "upload")
    hasher = hashlib.sha256()

    async def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            await sink(feed(chunks), writer, hasher, pool, WriteBudget(4 * BATCH_BYTES))

    asyncio.run(run())
    writer.close()
    assert (tmp_path / "upload").read_bytes() == expected
    assert hasher.hexdigest() == hashlib.sha256(expected).hexdigest()


def test_a_body_that_ends_early_still_writes_every_chunk_that_arrived(tmp_path: Path) -> None:
    chunks = random_chunks(seed=7, total=10 * BATCH_BYTES)
    writer = new_writer(tmp_path / "upload")

    async def run() -> None:
        with ThreadPoolExecutor(4) as pool:
            await sink(feed(chunks, fail_after=len(chunks) - 2), writer, hashlib.sha256(), pool, WriteBudget(1 << 30))

    with pytest.raises(IncompleteBody):
        asyncio.run(run())
    writer.close()
    assert (tmp_path / "upload").read_bytes() == b"".join(chunks[:-2])


class FailingWriter(UploadWriter):
    """A real upload file whose disk fills up at the `fail_at`-th batch."""

    def __init__(self, path: Path, fail_at: int) -> None:
        super().__init__(path, fsync=False)
        self.fail_at = fail_at
        self.batches = 0

    def write_parts(self, parts: list[bytes]) -> None:
        self.batches += 1
        if self.batches == self.fail_at:
            raise StorageFullError(28, "no space left in the blob store")
        super().write_parts(parts)


def test_a_failed_write_stops_every_later_one(tmp_path: Path) -> None:
    chunks = [bytes([n]) * BATCH_BYTES for n in range(12)]
    path = tmp_path / "upload"
    path.write_bytes(b"")
    writer = FailingWriter(path, fail_at=4)

    async def run() -> None:
        with ThreadPoolExecutor(4) as pool:
            await sink(feed(chunks), writer, hashlib.sha256(), pool, WriteBudget(1 << 30))

    with pytest.raises(StorageFullError):
        asyncio.run(run())
    writer.close()
    # Batches 1-3 are in place; nothing after the failed fourth was written, so no hole either.
    assert path.read_bytes() == b"".join(chunks[:3])
    assert writer.batches == 4


def test_a_cancelled_upload_writes_nothing_twice(tmp_path: Path) -> None:
    """Cancelled while waiting for its writes (the server stopping): the file holds a prefix of the body."""
    release = threading.Event()

    class Gated(UploadWriter):
        def write_parts(self, parts: list[bytes]) -> None:
            release.wait(5)
            super().write_parts(parts)

    chunks = [bytes([n]) * BATCH_BYTES for n in range(6)]
    path = tmp_path / "upload"
    path.write_bytes(b"")
    writer = Gated(path, fsync=False)

    async def run() -> None:
        with ThreadPoolExecutor(2) as pool:
            task = asyncio.ensure_future(sink(feed(chunks), writer, hashlib.sha256(), pool, WriteBudget(1 << 30)))
            await asyncio.sleep(0.1)  # the third batch now waits for the first write
            task.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    writer.close()
    data = path.read_bytes()
    assert data == b"".join(chunks[: len(data) // BATCH_BYTES])
    assert len(data) == 3 * BATCH_BYTES


def test_the_budget_bounds_bytes_in_flight_across_uploads(tmp_path: Path) -> None:
    budget = WriteBudget(2 * BATCH_BYTES)
    seen: list[int] = []

    class Watched(UploadWriter):
        def write_parts(self, parts: list[bytes]) -> None:
            seen.append(budget.used)
            time.sleep(0.005)  # a slow disk, so batches queue up and the budget fills
            super().write_parts(parts)

    quarter = BATCH_BYTES // 4  # batches of exactly BATCH_BYTES
    uploads = [[random.randbytes(quarter) for _ in range(24)] for _ in range(5)]
    writers = []
    for n in range(len(uploads)):
        (tmp_path / f"u{n}").write_bytes(b"")
        writers.append(Watched(tmp_path / f"u{n}", fsync=False))

    async def run() -> None:
        with ThreadPoolExecutor(8) as pool:
            await asyncio.gather(
                *(sink(feed(c), w, hashlib.sha256(), pool, budget) for c, w in zip(uploads, writers, strict=True))
            )

    asyncio.run(run())
    for n, writer in enumerate(writers):
        writer.close()
        assert (tmp_path / f"u{n}").read_bytes() == b"".join(uploads[n])
    assert seen and max(seen) <= budget.limit
    assert max(seen) == budget.limit, "five uploads at once should have used the whole budget"
    assert budget.used == 0


def test_a_long_upload_makes_way_for_other_pool_work(tmp_path: Path) -> None:
    """One thread, a slow disk: other uploads and other pool tasks still get their turn."""
    events: list[str] = []

    class Logged(UploadWriter):
        def __init__(self, path: Path, name: str) -> None:
            path.write_bytes(b"")
            super().__init__(path, fsync=False)
            self.name = name

        def write_parts(self, parts: list[bytes]) -> None:
            events.append(self.name)
            time.sleep(0.002)
            super().write_parts(parts)

    bodies = {name: [random.randbytes(BATCH_BYTES) for _ in range(40)] for name in ("a", "b")}
    writers = {name: Logged(tmp_path / name, name) for name in bodies}

    async def run() -> None:
        with ThreadPoolExecutor(1) as pool:
            uploads = [sink(feed(bodies[n]), writers[n], hashlib.sha256(), pool, WriteBudget(1 << 30)) for n in bodies]
            sinking = asyncio.gather(*uploads)
            await asyncio.sleep(0.02)
            await asyncio.get_running_loop().run_in_executor(pool, events.append, "other")
            await sinking

    asyncio.run(run())
    for name, writer in writers.items():
        writer.close()
        assert (tmp_path / name).read_bytes() == b"".join(bodies[name])
    assert events.index("other") < len(events) - 20, "a pool task waited for a whole upload"
    first_a, last_a = events.index("a"), len(events) - 1 - events[::-1].index("a")
    assert "b" in events[first_a:last_a], "one upload held the only thread from start to end"


class ScriptedBody:
    """The receive() side of an ASGI request: the body in pieces, then nothing more to give."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.messages = [
            {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1} for n, piece in enumerate(pieces)
        ]
        self.calls = 0

    async def __call__(self) -> dict[str, object]:
        self.calls += 1
        if not self.messages:
            raise AssertionError("receive() called after the whole body arrived: it would wait for a disconnect")
        return self.messages.pop(0)


@pytest.mark.parametrize("read_ahead", [False, True])
def test_an_abandoned_body_is_continued_and_never_read_past_its_end(read_ahead: bool) -> None:
    receive = ScriptedBody([b"a", b"b", b"c", b"d"])
    request = Request({"method": "PATCH", "path": "/", "headers": []}, receive)

    async def run() -> tuple[list[bytes], list[bytes]]:
        first: list[bytes] = []
        async for chunk in request.body_chunks(read_ahead):
            first.append(chunk)
            if len(first) == 2:
                break  # as a failed write does: the rest must still be readable, none of it lost
        rest = [chunk async for chunk in request.body_chunks()]
        await request.discard_body(1 << 20)  # the body is over: returns without a receive()
        return first, rest

    first, rest = asyncio.run(run())
    assert (first, rest) == ([b"a", b"b"], [b"c", b"d"])
    assert receive.calls == 4


def test_the_switch_interval_is_short_only_while_bodies_stream() -> None:
    default = sys.getswitchinterval()
    streams = BodyStreams()
    with streams.streaming() as before_first:
        assert before_first == 0
        assert sys.getswitchinterval() == pytest.approx(STREAMING_SWITCH_INTERVAL)
        with streams.streaming() as before_second:
            assert before_second == 1
        assert sys.getswitchinterval() == pytest.approx(STREAMING_SWITCH_INTERVAL)  # one still streams
    assert sys.getswitchinterval() == pytest.approx(default)
    with pytest.raises(IncompleteBody), streams.streaming():
        raise IncompleteBody(0)
    assert streams.count == 0
    assert sys.getswitchinterval() == pytest.approx(default)
