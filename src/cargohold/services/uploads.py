"""Blob upload sessions: begin, append, complete, cancel, monolithic push and mount.

The bytes received so far live in the upload's file, whose size is the session's offset;
any worker process, or a restarted server, can continue a session. The running SHA-256 is
kept in memory beside it and rebuilt from the file when this process has not seen the
session's latest bytes. Nothing here knows HTTP: a body is anything that yields chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from typing import Protocol

from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from ..oci.rules import Quota
from ..storage.interfaces import BlobStore, MetadataStore, UploadHandle
from ..storage.records import (
    BackendUnavailable,
    QuotaExceededError,
    StorageFullError,
    UploadBusyError,
    is_upload_id,
)
from .bodysink import BodyStreams, WriteBudget, sink
from .quota import quota_refusal
from .resumable import ResumableSha256, RunningHash

_HASH_CHUNK = 1 << 20
_MAX_CACHED_HASHERS = 1024
# A refused request's remaining body is read and dropped, up to this much, so the client (or a
# balancer still sending it) gets the answer instead of a reset connection.
DRAIN_LIMIT = 1 << 30
# How long a request waits for another request on the same upload session to finish.
_BUSY_WAIT = 5.0
# Uploads of one process that may read a body chunk ahead at the same time.
_READ_AHEAD_MAX_STREAMS = 4
# Received-but-unwritten upload bytes a process may hold, whatever the number of uploads.
WRITE_BUDGET_BYTES = 8 << 20


class Body(Protocol):
    """A request body as the upload service reads it (the HTTP request is one)."""

    def content_length(self) -> int | None:
        """The size announced before the bytes, if any."""
        ...

    def body_chunks(self, read_ahead: bool = False) -> AsyncIterator[bytes]: ...

    async def discard_body(self, limit: int) -> None:
        """Read and drop what is left, up to `limit` bytes."""
        ...


class BytesBody:
    """A body held in memory, for callers without a connection (tests, tools)."""

    def __init__(self, data: bytes, chunk: int = 1 << 20) -> None:
        self._data = data
        self._chunk = chunk
        self._offset = 0

    def content_length(self) -> int | None:
        return len(self._data)

    async def body_chunks(self, read_ahead: bool = False) -> AsyncIterator[bytes]:
        while self._offset < len(self._data):
            chunk = self._data[self._offset : self._offset + self._chunk]
            self._offset += len(chunk)
            yield chunk

    async def discard_body(self, limit: int) -> None:
        self._offset = len(self._data)


class ChunkOutOfOrder(Exception):
    """A chunk that does not start where the session ends (416, with the session's range)."""

    def __init__(self, first: int, last: int, size: int) -> None:
        self.size = size
        super().__init__(f"chunk {first}-{last} does not continue the upload, which holds bytes 0-{max(size - 1, 0)}")


class HasherCache:
    """Running sha256 states of the upload sessions this process is writing."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, tuple[int, RunningHash]] = OrderedDict()

    def take(self, upload_id: str, size: int) -> RunningHash | None:
        """The state after exactly `size` bytes, if this process holds it."""
        state = self._states.pop(upload_id, None)
        return state[1] if state is not None and state[0] == size else None

    def put(self, upload_id: str, size: int, hasher: RunningHash) -> None:
        self._states[upload_id] = (size, hasher)
        while len(self._states) > _MAX_CACHED_HASHERS:
            self._states.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._states.pop(upload_id, None)


class UploadService:
    def __init__(
        self,
        meta: MetadataStore,
        blobs: BlobStore,
        pool: Executor,
        quotas: tuple[Quota, ...] = (),
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.pool = pool  # writes upload batches, hashes uploads again, empties the trash
        self.quotas = quotas
        self.hashers = HasherCache()
        self.write_budget = WriteBudget(WRITE_BUDGET_BYTES)
        self.streams = BodyStreams()

    # -- the operations ------------------------------------------------------------------

    def mount(self, name: str, digest: Digest, source: str) -> bool:
        """Link a blob `source` holds into `name` without sending it; False when `source`
        does not hold it (the caller then starts a normal upload, as the spec says). The
        caller has checked that whoever asks may pull from `source`."""
        try:
            size = self.meta.mount_blob(name, str(digest), source, self.quotas)
        except QuotaExceededError as err:
            raise quota_refusal(err, "nothing was mounted") from None
        return size is not None and self.blobs.blob_size(digest) == size

    def begin(self, name: str) -> str:
        """A new session; refused before any bytes travel when the repository is full."""
        self._check_quota(name, "no upload was started")
        return self._new_session(name)

    async def push(self, name: str, digest: Digest, body: Body) -> None:
        """A whole blob in one body. It cannot be resumed, so a failure leaves no session."""
        self._check_quota(name, "no upload was started")
        upload_id = self._new_session(name)
        try:
            async with self._locked(name, upload_id) as writer:
                hasher = await self._receive(upload_id, writer, body)
                self._complete(name, upload_id, digest, writer, hasher)
        except BaseException:
            self._discard(upload_id)
            raise

    async def append(self, name: str, upload_id: str, body: Body, chunk: tuple[int, int] | None = None) -> int:
        """Append one chunk (`chunk` is its first and last offset, when the client said);
        returns the session's new size."""
        async with self._locked(name, upload_id) as writer:
            self._check_continues(chunk, writer.size, body)
            hasher = await self._receive(upload_id, writer, body)
            self.hashers.put(upload_id, writer.size, hasher)
            return writer.size

    async def complete(
        self, name: str, upload_id: str, digest: Digest, body: Body, chunk: tuple[int, int] | None = None
    ) -> None:
        """Append an optional last chunk, verify the digest and store the blob."""
        async with self._locked(name, upload_id) as writer:
            self._check_continues(chunk, writer.size, body)
            start = writer.size
            hasher = await self._receive(upload_id, writer, body)
            self._complete(name, upload_id, digest, writer, hasher, start)

    async def size(self, name: str, upload_id: str) -> int:
        async with self._locked(name, upload_id) as writer:
            return writer.size

    async def cancel(self, name: str, upload_id: str) -> None:
        async with self._locked(name, upload_id) as writer:
            self._discard(upload_id, writer)

    def check_session(self, name: str, upload_id: str) -> None:
        repo = self.meta.upload_repository(upload_id) if is_upload_id(upload_id) else None
        if repo != name:
            raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, f"no upload session {upload_id[:80]!r} in {name}")

    # -- the steps -----------------------------------------------------------------------

    def _check_quota(self, name: str, consequence: str) -> None:
        try:
            self.meta.check_quotas(name, self.quotas)
        except QuotaExceededError as err:
            raise quota_refusal(err, consequence) from None

    @staticmethod
    def _check_continues(chunk: tuple[int, int] | None, size: int, body: Body) -> None:
        if chunk is None:
            return
        first, last = chunk
        if first != size or last < first:
            raise ChunkOutOfOrder(first, last, size)
        declared = body.content_length()
        if declared is not None and declared != last - first + 1:
            raise RegistryError(
                ErrorCode.SIZE_INVALID, f"Content-Range {first}-{last} disagrees with Content-Length {declared}"
            )

    def _new_session(self, name: str) -> str:
        upload_id = uuid.uuid4().hex
        self.blobs.create_upload(upload_id)
        self.meta.create_upload(upload_id, name)
        return upload_id

    @asynccontextmanager
    async def _locked(self, name: str, upload_id: str) -> AsyncIterator[UploadHandle]:
        """Exclusive use of a live session of `name`, across worker processes.

        A request that finds the session busy waits a little: the usual cause is a request
        whose client just went away and whose last bytes are still being written.
        """
        self.check_session(name, upload_id)
        deadline = time.monotonic() + _BUSY_WAIT
        while True:
            try:
                writer = self.blobs.open_upload(upload_id)
                break
            except FileNotFoundError:
                raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, f"no upload session {upload_id} in {name}") from None
            except UploadBusyError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        ErrorCode.BLOB_UPLOAD_INVALID,
                        f"another request is still writing to upload {upload_id}; retry when it has finished",
                        status=409,
                    ) from None
                await asyncio.sleep(0.01)
        try:
            yield writer
        finally:
            writer.close()

    async def _receive(self, upload_id: str, writer: UploadHandle, body: Body) -> RunningHash:
        self._check_room(body.content_length())  # before any work: re-hashing may take seconds
        start = writer.size
        hasher = self.hashers.take(upload_id, start)
        if hasher is None:  # another process (or a previous life of this one) wrote the last bytes
            hasher = await self._resume_hash(upload_id, writer)
        before = hasher.copy()
        try:
            await self._append(writer, hasher, body)
        except BaseException:
            if writer.size == start:  # the chunk was undone: so is its hashing
                self.hashers.put(upload_id, start, before)
            raise
        if isinstance(hasher, ResumableSha256):  # saved with the bytes, for any replica
            writer.keep_hash_state(hasher.save())
        return hasher

    async def _resume_hash(self, upload_id: str, writer: UploadHandle) -> RunningHash:
        """The SHA-256 of the session's bytes so far: from the state the store saved, or by
        reading the bytes again where the store can (a file)."""
        if not self.blobs.keeps_hash_state:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self._hash_upload, upload_id, "sha256", writer.size)
        saved = writer.hash_state
        if saved is not None:
            return ResumableSha256.restore(saved)
        if writer.size == 0:
            return ResumableSha256()
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID, f"upload {upload_id} kept no hash of its bytes; start the upload again"
        )

    async def _append(self, writer: UploadHandle, hasher: RunningHash, body: Body) -> int:
        """Stream the body onto the upload; returns the bytes appended.

        All or nothing: a body that ends before its end (a cut connection, a malformed chunked
        encoding, a stall) or disagrees with its announced length, and a failed write, leave
        the session where it stood before, so the client resends the chunk it was never told
        had arrived.
        """
        start = writer.size
        expected = body.content_length()
        with self.streams.streaming() as others:
            # Reading ahead speeds up a lone upload; when several stream at once the CPU is busy
            # anyway, and each chunk read ahead is one more held per connection.
            read_ahead = others < _READ_AHEAD_MAX_STREAMS
            try:
                await sink(body.body_chunks(read_ahead), writer, hasher, self.pool, self.write_budget)
            except StorageFullError:
                writer.truncate(start)
                await body.discard_body(DRAIN_LIMIT)
                raise RegistryError(
                    ErrorCode.BLOB_UPLOAD_INVALID,
                    "the registry's storage is full; nothing of this chunk was kept",
                    status=507,
                ) from None
            except BaseException:
                writer.truncate(start)
                raise
        received = writer.size - start
        if expected is not None and received != expected:
            writer.truncate(start)
            raise RegistryError(
                ErrorCode.SIZE_INVALID, f"Content-Length said {expected} bytes but {received} arrived; chunk discarded"
            )
        return received

    def _check_room(self, declared: int | None) -> None:
        """Refuse before a byte is read a body announced larger than the storage has room
        for: 413 if it could never fit, 507 if it does not fit now."""
        if declared is None:
            return
        free, total = self.blobs.space()
        if declared > total:
            raise RegistryError(
                ErrorCode.SIZE_INVALID,
                f"a body of {declared} bytes cannot be stored: the registry's storage holds {total} bytes in all",
                status=413,
                headers={"connection": "close"},
            )
        if declared > free:
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                f"the registry's storage is full: a body of {declared} bytes does not fit in the {free} bytes free; "
                "nothing was stored",
                status=507,
                headers={"connection": "close"},
            )

    def _complete(
        self, name: str, upload_id: str, digest: Digest, writer: UploadHandle, hasher: RunningHash, start: int = 0
    ) -> None:
        """Verify and publish; `start` is the session's size before this request's bytes."""
        writer.sync()  # every byte in the file (and durable) before it is judged and published
        actual = (
            hasher.hexdigest()
            if digest.algorithm == "sha256"
            else self._hash_upload(upload_id, digest.algorithm).hexdigest()
        )
        if actual != digest.encoded:
            self._discard(upload_id, writer)
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"uploaded content has digest {digest.algorithm}:{actual}, not {digest}; the upload was discarded",
            )
        self.hashers.drop(upload_id)
        try:
            self.meta.check_quotas(name, self.quotas, str(digest), writer.size)
        except BackendUnavailable:
            # Nothing is published: the session goes back to where this request found it, so
            # the client's retry of the same request (same chunk, same Content-Range) fits.
            writer.truncate(start)
            raise
        except QuotaExceededError as err:
            self._discard(upload_id, writer)
            raise quota_refusal(err, "the upload was discarded") from None
        # Past the rename the session's file is the blob's: if the record cannot be written now
        # (the database went away this instant), the file stays unrecorded, invisible, until GC
        # takes it, and the session is gone (BLOB_UPLOAD_UNKNOWN: the client sends the blob anew).
        try:
            with self.blobs.publishing(digest):
                moved = self.blobs.commit_upload(upload_id, digest)
                # Checked again inside the write transaction; if a concurrent upload won the last
                # bytes of the quota, the file just placed stays unrecorded until GC takes it.
                self.meta.add_blob(name, str(digest), writer.size, upload_id, self.quotas)
            if not moved:  # the blob was stored already: this copy went to the trash
                self._empty_trash_soon(writer)
        except QuotaExceededError as err:
            self._discard(upload_id, writer)
            raise quota_refusal(err, "the upload was discarded") from None

    def _hash_upload(self, upload_id: str, algorithm: str, size: int | None = None) -> hashlib._Hash:
        """Hash the first `size` bytes of an upload file (all of it when None)."""
        hasher = hashlib.new(algorithm)
        remaining = size
        with self.blobs.read_upload(upload_id) as f:
            while remaining is None or remaining > 0:
                chunk = f.read(_HASH_CHUNK if remaining is None else min(_HASH_CHUNK, remaining))
                if not chunk:
                    break
                hasher.update(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
        return hasher

    def _discard(self, upload_id: str, writer: UploadHandle | None = None) -> None:
        """End a session and drop its bytes; `writer` is the request's open handle, if any."""
        self.hashers.drop(upload_id)
        self.meta.delete_upload(upload_id)
        self.blobs.trash_upload(upload_id)
        self._empty_trash_soon(writer)

    def _empty_trash_soon(self, writer: UploadHandle | None) -> None:
        """Free trashed upload files in a pool thread: unlinking a large file takes tens of
        milliseconds, and the event loop must not wait. Our handle closes first, since the
        last close is what frees the blocks."""
        if writer is not None:
            writer.close()
        try:
            self.pool.submit(self.blobs.empty_trash)
        except RuntimeError:  # the pool has shut down: the server is stopping
            self.blobs.empty_trash()
