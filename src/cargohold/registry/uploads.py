"""Blob upload sessions: start, chunk, status, finish, cancel, monolithic and mount.

The bytes received so far live in the upload's file, whose size is the session's offset;
any worker process, or a restarted server, can continue a session. The running SHA-256 is
kept in memory beside it and rebuilt from the file when this process has not seen the
session's latest bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from ..oci.names import validate_name
from ..storage.blobstore import StorageFullError, UploadBusyError, UploadWriter, is_upload_id
from ..storage.metadata import QuotaExceededError
from .bodysink import sink
from .http import IncompleteBody, Request, Responder
from .quota import quota_refusal
from .routes import Route

if TYPE_CHECKING:
    from .app import Registry

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d+|\*))?\Z")
_HASH_CHUNK = 1 << 20
_MAX_CACHED_HASHERS = 1024
# A refused upload's remaining body is read and dropped, up to this much, so the client
# (which may still be sending) gets the answer instead of a reset connection.
_DRAIN_LIMIT = 1 << 30
# How long a request waits for another request on the same upload session to finish.
_BUSY_WAIT = 5.0
# Uploads of one process that may read a body chunk ahead at the same time.
_READ_AHEAD_MAX_STREAMS = 4


class HasherCache:
    """Running sha256 states of the upload sessions this process is writing."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, tuple[int, hashlib._Hash]] = OrderedDict()

    def take(self, upload_id: str, size: int) -> hashlib._Hash | None:
        """The state after exactly `size` bytes, if this process holds it."""
        state = self._states.pop(upload_id, None)
        return state[1] if state is not None and state[0] == size else None

    def put(self, upload_id: str, size: int, hasher: hashlib._Hash) -> None:
        self._states[upload_id] = (size, hasher)
        while len(self._states) > _MAX_CACHED_HASHERS:
            self._states.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._states.pop(upload_id, None)


def _location(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def _progress_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "location": _location(name, upload_id),
        "range": f"0-{max(size - 1, 0)}",
        "docker-upload-uuid": upload_id,
    }


def _created_headers(name: str, digest: Digest) -> dict[str, str]:
    return {"location": f"/v2/{name}/blobs/{digest}", "docker-content-digest": str(digest)}


async def _append(registry: Registry, request: Request, writer: UploadWriter, hasher: hashlib._Hash) -> int:
    """Stream the request body onto the upload; returns the bytes appended.

    All or nothing: a body that ends before its end (a cut connection, a malformed chunked
    encoding, a stall) or disagrees with its Content-Length, and a failed write, leave the
    session where it stood before this request, so the client resends the chunk it was
    never told had arrived.
    """
    start = writer.size
    expected = request.content_length()
    with registry.streams.streaming() as others:
        # Reading ahead speeds up a lone upload; when several stream at once the CPU is busy
        # anyway, and each chunk read ahead is one more held per connection.
        read_ahead = others < _READ_AHEAD_MAX_STREAMS
        try:
            await sink(request.body_chunks(read_ahead), writer, hasher, registry.pool, registry.write_budget)
        except IncompleteBody:
            writer.truncate(start)
            raise
        except StorageFullError:
            writer.truncate(start)
            await request.discard_body(_DRAIN_LIMIT)
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                "the registry's storage is full; nothing of this chunk was kept",
                status=507,
            ) from None
    received = writer.size - start
    if expected is not None and received != expected:
        writer.truncate(start)
        raise RegistryError(
            ErrorCode.SIZE_INVALID, f"Content-Length said {expected} bytes but {received} arrived; chunk discarded"
        )
    return received


def _check_room(registry: Registry, declared: int | None) -> None:
    """Refuse before a byte is read a body announced larger than the storage has room for:
    413 if it could never fit, 507 if it does not fit now."""
    if declared is None:
        return
    free, total = registry.blobs.space()
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


def _check_session(registry: Registry, name: str, upload_id: str) -> None:
    repo = registry.meta.upload_repository(upload_id) if is_upload_id(upload_id) else None
    if repo != name:
        raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, f"no upload session {upload_id[:80]!r} in {name}")


@asynccontextmanager
async def _locked(registry: Registry, name: str, upload_id: str) -> AsyncIterator[UploadWriter]:
    """Exclusive use of a live session of `name`, across worker processes.

    A request that finds the session busy waits a little: the usual cause is a request
    whose client just went away and whose last bytes are still being written.
    """
    _check_session(registry, name, upload_id)
    deadline = time.monotonic() + _BUSY_WAIT
    while True:
        try:
            writer = registry.blobs.open_upload(upload_id)
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


async def _receive(registry: Registry, request: Request, upload_id: str, writer: UploadWriter) -> hashlib._Hash:
    _check_room(registry, request.content_length())  # before any work: re-hashing may take seconds
    start = writer.size
    hasher = registry.hashers.take(upload_id, start)
    if hasher is None:  # another process (or a previous life of this one) wrote the last bytes
        loop = asyncio.get_running_loop()
        hasher = await loop.run_in_executor(registry.pool, _hash_upload, registry, upload_id, "sha256", start)
    before = hasher.copy()
    try:
        await _append(registry, request, writer, hasher)
    except BaseException:
        if writer.size == start:  # the chunk was undone: so is its hashing
            registry.hashers.put(upload_id, start, before)
        raise
    return hasher


def _finish(
    registry: Registry, name: str, upload_id: str, digest: Digest, writer: UploadWriter, hasher: hashlib._Hash
) -> None:
    writer.sync()  # every byte in the file (and durable) before it is judged and published
    actual = (
        hasher.hexdigest()
        if digest.algorithm == "sha256"
        else _hash_upload(registry, upload_id, digest.algorithm).hexdigest()
    )
    if actual != digest.encoded:
        _discard(registry, upload_id, writer)
        raise RegistryError(
            ErrorCode.DIGEST_INVALID,
            f"uploaded content has digest {digest.algorithm}:{actual}, not {digest}; the upload was discarded",
        )
    registry.hashers.drop(upload_id)
    try:
        registry.meta.check_quotas(name, registry.config.quotas, str(digest), writer.size)
        with registry.blobs.publishing(digest):
            moved = registry.blobs.commit_upload(upload_id, digest)
            # Checked again inside the write transaction; if a concurrent upload won the last
            # bytes of the quota, the file just placed stays unrecorded until GC takes it.
            registry.meta.add_blob(name, str(digest), writer.size, upload_id, registry.config.quotas)
        if not moved:  # the blob was stored already: this copy went to the trash
            _empty_trash_soon(registry, writer)
    except QuotaExceededError as err:
        _discard(registry, upload_id, writer)
        raise quota_refusal(err, "the upload was discarded") from None


def _hash_upload(registry: Registry, upload_id: str, algorithm: str, size: int | None = None) -> hashlib._Hash:
    """Hash the first `size` bytes of an upload file (all of it when None)."""
    hasher = hashlib.new(algorithm)
    remaining = size
    with registry.blobs.read_upload(upload_id) as f:
        while remaining is None or remaining > 0:
            chunk = f.read(_HASH_CHUNK if remaining is None else min(_HASH_CHUNK, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return hasher


def _discard(registry: Registry, upload_id: str, writer: UploadWriter | None = None) -> None:
    """End a session and drop its bytes; `writer` is the request's open handle, if any."""
    registry.hashers.drop(upload_id)
    registry.meta.delete_upload(upload_id)
    registry.blobs.trash_upload(upload_id)
    _empty_trash_soon(registry, writer)


def _empty_trash_soon(registry: Registry, writer: UploadWriter | None) -> None:
    """Free trashed upload files in a pool thread: unlinking a large file takes tens of
    milliseconds, and the event loop must not wait. Our handle closes first, since the
    last close is what frees the blocks."""
    if writer is not None:
        writer.close()
    try:
        registry.pool.submit(registry.blobs.empty_trash)
    except RuntimeError:  # the pool has shut down: the server is stopping
        registry.blobs.empty_trash()


def _new_session(registry: Registry, name: str) -> str:
    upload_id = uuid.uuid4().hex
    registry.blobs.create_upload(upload_id)
    registry.meta.create_upload(upload_id, name)
    return upload_id


def _check_content_range(request: Request, name: str, upload_id: str, size: int) -> None:
    content_range = request.headers.get("content-range")
    if content_range is None:
        return
    found = _CONTENT_RANGE.match(content_range.strip())
    if not found:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID, f"malformed Content-Range {content_range[:60]!r}; expected start-end"
        )
    first, last = int(found[1]), int(found[2])
    if first != size or last < first:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            f"chunk {first}-{last} does not continue the upload, which holds bytes 0-{max(size - 1, 0)}",
            status=416,
            headers=_progress_headers(name, upload_id, size),
        )
    declared = request.content_length()
    if declared is not None and declared != last - first + 1:
        raise RegistryError(
            ErrorCode.SIZE_INVALID, f"Content-Range {first}-{last} disagrees with Content-Length {declared}"
        )


async def start(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    """POST /v2/<name>/blobs/uploads/ — mount, monolithic upload, or a new session."""
    name = route.name
    mount = request.query("mount")
    source = request.query("from")
    if mount is not None and source:
        digest = Digest.parse(mount)
        try:
            validate_name(source)
        except RegistryError:
            source = None
        if source and not registry.may(request, source, "pull"):
            source = None  # as the spec says for a mount that cannot be done: a normal upload instead
        try:
            size = registry.meta.mount_blob(name, str(digest), source, registry.config.quotas) if source else None
        except QuotaExceededError as err:
            raise quota_refusal(err, "nothing was mounted") from None
        if size is not None and registry.blobs.blob_size(digest) == size:
            await res.empty(201, _created_headers(name, digest))
            return
    try:  # refuse before any bytes travel when the repository is already full
        registry.meta.check_quotas(name, registry.config.quotas)
    except QuotaExceededError as err:
        raise quota_refusal(err, "no upload was started") from None
    raw_digest = request.query("digest")
    if raw_digest is not None:
        digest = Digest.parse(raw_digest)
        upload_id = _new_session(registry, name)
        try:
            async with _locked(registry, name, upload_id) as writer:
                hasher = await _receive(registry, request, upload_id, writer)
                _finish(registry, name, upload_id, digest, writer, hasher)
        except BaseException:
            # A monolithic upload cannot be resumed: leave no session behind.
            _discard(registry, upload_id)
            raise
        await res.empty(201, _created_headers(name, digest))
        return
    upload_id = _new_session(registry, name)
    headers = _progress_headers(name, upload_id, 0)
    headers["oci-chunk-min-length"] = "0"
    await res.empty(202, headers)


async def patch(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    """PATCH — append one chunk, which must start where the session ends."""
    name, upload_id = route.name, route.arg
    async with _locked(registry, name, upload_id) as writer:
        _check_content_range(request, name, upload_id, writer.size)
        hasher = await _receive(registry, request, upload_id, writer)
        registry.hashers.put(upload_id, writer.size, hasher)
        size = writer.size
    await res.empty(202, _progress_headers(name, upload_id, size))


async def finish(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    """PUT ?digest= — append an optional last chunk, verify, and store the blob."""
    name, upload_id = route.name, route.arg
    raw_digest = request.query("digest")
    if raw_digest is None:
        _check_session(registry, name, upload_id)
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required to finish an upload")
    digest = Digest.parse(raw_digest)
    async with _locked(registry, name, upload_id) as writer:
        _check_content_range(request, name, upload_id, writer.size)
        hasher = await _receive(registry, request, upload_id, writer)
        _finish(registry, name, upload_id, digest, writer, hasher)
    await res.empty(201, _created_headers(name, digest))


async def status(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, upload_id = route.name, route.arg
    async with _locked(registry, name, upload_id) as writer:
        size = writer.size
    await res.empty(204, _progress_headers(name, upload_id, size))


async def cancel(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, upload_id = route.name, route.arg
    async with _locked(registry, name, upload_id) as writer:
        _discard(registry, upload_id, writer)
    await res.empty(204)
