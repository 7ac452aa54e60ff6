"""Blob upload sessions: start, chunk, status, finish, cancel, monolithic and mount.

The bytes received so far live in the upload's file, whose size is the session's offset;
any worker process, or a restarted server, can continue a session. The running SHA-256 is
kept in memory beside it and rebuilt from the file when this process has not seen the
session's latest bytes.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from ..oci.names import validate_name
from ..storage.blobstore import StorageFullError, UploadWriter, is_upload_id
from .http import ClientDisconnected, Request, Responder

if TYPE_CHECKING:
    from .app import Registry

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
_HASH_CHUNK = 1 << 20
_MAX_CACHED_HASHERS = 1024


class HasherCache:
    """Running sha256 states of the upload sessions this process is writing."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, tuple[int, hashlib._Hash]] = OrderedDict()

    def take(self, upload_id: str, size: int, registry: Registry) -> hashlib._Hash:
        state = self._states.pop(upload_id, None)
        if state is not None and state[0] == size:
            return state[1]
        hasher = hashlib.sha256()
        with registry.blobs.read_upload(upload_id) as f:
            remaining = size
            while remaining > 0:
                chunk = f.read(min(_HASH_CHUNK, remaining))
                if not chunk:
                    break
                hasher.update(chunk)
                remaining -= len(chunk)
        return hasher

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


async def _append(request: Request, writer: UploadWriter, hasher: hashlib._Hash) -> int:
    """Stream the request body onto the upload; returns the bytes appended.

    Bytes that reached the file stay there if the client disconnects: the session's offset
    says how far it got and the client may resume. A failed write is undone.
    """
    start = writer.size
    expected = request.content_length()
    try:
        async for chunk in request.body_chunks():
            writer.write(chunk)
            hasher.update(chunk)
    except StorageFullError:
        writer.truncate(start)
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID, "the registry's storage is full; nothing of this chunk was kept", status=507
        ) from None
    received = writer.size - start
    if expected is not None and received != expected:
        writer.truncate(start)
        raise RegistryError(
            ErrorCode.SIZE_INVALID, f"Content-Length said {expected} bytes but {received} arrived; chunk discarded"
        )
    return received


def _session(registry: Registry, name: str, upload_id: str) -> int:
    """The current offset of a live session of `name`, or BLOB_UPLOAD_UNKNOWN."""
    repo = registry.meta.upload_repository(upload_id) if is_upload_id(upload_id) else None
    size = registry.blobs.upload_size(upload_id) if repo is not None else None
    if repo != name or size is None:
        raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, f"no upload session {upload_id[:80]!r} in {name}")
    return size


async def _receive_into(registry: Registry, request: Request, upload_id: str, size: int) -> tuple[int, hashlib._Hash]:
    hasher = registry.hashers.take(upload_id, size, registry)
    writer = registry.blobs.open_upload(upload_id)
    try:
        await _append(request, writer, hasher)
    except ClientDisconnected:
        registry.hashers.put(upload_id, writer.size, hasher)
        raise
    finally:
        writer.close()
    return writer.size, hasher


async def _finish(
    registry: Registry, name: str, upload_id: str, digest: Digest, size: int, hasher: hashlib._Hash
) -> None:
    actual = hasher.hexdigest() if digest.algorithm == "sha256" else _rehash(registry, upload_id, digest.algorithm)
    if actual != digest.encoded:
        _discard(registry, upload_id)
        raise RegistryError(
            ErrorCode.DIGEST_INVALID,
            f"uploaded content has digest {digest.algorithm}:{actual}, not {digest}; the upload was discarded",
        )
    registry.hashers.drop(upload_id)
    registry.blobs.commit_upload(upload_id, digest)
    registry.meta.add_blob(name, str(digest), size, upload_id)


def _rehash(registry: Registry, upload_id: str, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with registry.blobs.read_upload(upload_id) as f:
        while chunk := f.read(_HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _discard(registry: Registry, upload_id: str) -> None:
    registry.hashers.drop(upload_id)
    registry.meta.delete_upload(upload_id)
    registry.blobs.delete_upload(upload_id)


def _new_session(registry: Registry, name: str) -> str:
    upload_id = uuid.uuid4().hex
    registry.blobs.create_upload(upload_id)
    registry.meta.create_upload(upload_id, name)
    return upload_id


async def start(registry: Registry, request: Request, res: Responder, name: str) -> None:
    """POST /v2/<name>/blobs/uploads/ — mount, monolithic upload, or a new session."""
    mount = request.query("mount")
    source = request.query("from")
    if mount is not None and source:
        digest = Digest.parse(mount)
        try:
            validate_name(source)
        except RegistryError:
            source = None
        size = registry.meta.mount_blob(name, str(digest), source) if source else None
        if size is not None and registry.blobs.blob_size(digest) == size:
            await res.empty(201, _created_headers(name, digest))
            return
    raw_digest = request.query("digest")
    if raw_digest is not None:
        digest = Digest.parse(raw_digest)
        upload_id = _new_session(registry, name)
        try:
            size, hasher = await _receive_into(registry, request, upload_id, 0)
            await _finish(registry, name, upload_id, digest, size, hasher)
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


async def patch(registry: Registry, request: Request, res: Responder, name: str, upload_id: str) -> None:
    """PATCH — append one chunk, which must start where the session ends."""
    size = _session(registry, name, upload_id)
    content_range = request.headers.get("content-range")
    if content_range is not None:
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
    size, hasher = await _receive_into(registry, request, upload_id, size)
    registry.hashers.put(upload_id, size, hasher)
    await res.empty(202, _progress_headers(name, upload_id, size))


async def finish(registry: Registry, request: Request, res: Responder, name: str, upload_id: str) -> None:
    """PUT ?digest= — append an optional last chunk, verify, and store the blob."""
    size = _session(registry, name, upload_id)
    raw_digest = request.query("digest")
    if raw_digest is None:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required to finish an upload")
    digest = Digest.parse(raw_digest)
    size, hasher = await _receive_into(registry, request, upload_id, size)
    await _finish(registry, name, upload_id, digest, size, hasher)
    await res.empty(201, _created_headers(name, digest))


async def status(registry: Registry, request: Request, res: Responder, name: str, upload_id: str) -> None:
    size = _session(registry, name, upload_id)
    await res.empty(204, _progress_headers(name, upload_id, size))


async def cancel(registry: Registry, request: Request, res: Responder, name: str, upload_id: str) -> None:
    _session(registry, name, upload_id)
    _discard(registry, upload_id)
    await res.empty(204)
