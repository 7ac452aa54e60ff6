"""Moving one blob's bytes: resumable chunked uploads, resumable verified downloads to a file.

A blob's bytes come from an `Opener`: a function that returns an async iterator over the blob
from a given offset (a file read, a registry GET with a Range header). Nothing holds a whole blob
in memory; every byte is hashed once, in order, and checked against the digest before the blob
is committed (the upload's final PUT, a download's rename).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

import httpx

from .errors import ClientError, ConnectionFailed, IntegrityError
from .progress import Tracker
from .registry import (
    RegistryClient,
    check,
    describe_transport_error,
    error_message,
    pull_scope,
    push_scope,
    retry_delay,
)
from .sink import BlobFileWriter

Opener = Callable[[int], AsyncGenerator[bytes, None]]
PIECE = 1024 * 1024


class _Hasher:
    """Hashes a blob's bytes exactly once, in order, whatever retries re-send."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.algorithm = digest.split(":", 1)[0]
        self.hash = hashlib.new(self.algorithm)
        self.position = 0

    def feed(self, offset: int, data: bytes | memoryview) -> None:
        end = offset + len(data)
        if end <= self.position:
            return
        if offset > self.position:
            raise ClientError(f"internal error: hashing {self.digest} skipped bytes {self.position}-{offset}")
        self.hash.update(data[self.position - offset :])
        self.position = end

    def verify(self, what: str) -> None:
        actual = f"{self.algorithm}:{self.hash.hexdigest()}"
        if actual != self.digest:
            raise IntegrityError(f"{what}: content hashes to {actual}, not {self.digest}")


class _SourceFailed(Exception):
    """The source of the bytes failed (not the destination); the upload may resume."""


def file_opener(path: Path, start: int = 0) -> Opener:
    """Bytes of `path` from `start + offset` (a tar member is a file region)."""

    async def chunks(offset: int) -> AsyncGenerator[bytes, None]:
        with open(path, "rb", buffering=0) as handle:
            handle.seek(start + offset)
            while True:
                data = handle.read(PIECE)
                if not data:
                    return
                yield data

    return chunks


async def _limited(
    opener: Opener, offset: int, end: int, hasher: _Hasher, tracker: Tracker, size: int, what: str
) -> AsyncIterator[bytes]:
    """Bytes [offset, end) from the source, hashed; the blob's last piece is held back until the hash checks."""
    position = offset
    source = opener(offset)
    try:
        while position < end:
            try:
                piece = await anext(source)
            except StopAsyncIteration:
                raise IntegrityError(f"{what}: the source ended at byte {position} of {size}") from None
            except (httpx.TransportError, ClientError) as err:
                if isinstance(err, IntegrityError):
                    raise
                raise _SourceFailed(str(err) or type(err).__name__) from err
            if position + len(piece) > end:
                piece = piece[: end - position]
            hasher.feed(position, piece)
            position += len(piece)
            if position == size:
                hasher.verify(what)
            yield piece
            tracker.advance(len(piece))
    finally:
        await source.aclose()


def _location(base: httpx.Response, client: RegistryClient) -> str:
    location = base.headers.get("location")
    if not location:
        raise ClientError(f"{client.host} answered an upload request without a Location")
    return str(base.url.join(location))


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def _range_end(response: httpx.Response) -> int | None:
    """The next offset from a `Range: 0-N` header (N inclusive), if there is one."""
    value = response.headers.get("range")
    if not value:
        return None
    _, _, last = value.removeprefix("bytes=").partition("-")
    try:
        return int(last) + 1
    except ValueError:
        return None


async def upload_blob(
    client: RegistryClient,
    repo: str,
    digest: str,
    size: int,
    opener: Opener,
    tracker: Tracker,
    *,
    mount_from: str | None = None,
) -> str:
    """Upload one blob: "mounted" if cross-repository mount worked, else "uploaded".

    Blobs up to `chunk_size` go in one PUT; bigger ones in PATCHes of `chunk_size`. After a
    dropped connection or a 5xx, the upload status GET says how many bytes the registry has, and
    the upload goes on from there; a session the registry lost starts over.
    """
    what = f"blob {digest}"
    hasher = _Hasher(digest)
    scopes = [push_scope(repo)] + ([pull_scope(mount_from)] if mount_from else [])
    chunk = client.options.chunk_size
    base = f"/v2/{repo}/blobs/uploads/"

    async def start(mount: bool) -> str | None:
        params = {"mount": digest, "from": mount_from} if mount and mount_from else None
        response = await client.request("POST", base, scopes=scopes, params=params, headers={"content-length": "0"})
        if response.status_code == 201 and params:
            return None
        check(response, f"start upload of {what} to {client.host}/{repo}")
        return _location(response, client)

    sessions = client.sessions
    key = (client.host, repo, digest)
    location: str | None = None
    offset = 0
    saved = sessions.get(*key) if sessions else None
    if saved:  # a push that failed earlier left this session: go on from what the registry has
        status = await _saved_status(client, saved, scopes)
        if status is not None:
            offset, location = status
            await _prehash(opener, hasher, offset)
            tracker.reset(offset)
        elif sessions:
            sessions.drop(*key)
    if location is None:
        location = await start(mount=True)
        if location is None:
            tracker.done("mounted")
            return "mounted"

    def remember(where: str) -> None:
        if sessions:
            sessions.put(*key, where)

    def forget() -> None:
        if sessions:
            sessions.drop(*key)

    remember(location)
    failures = 0
    need_status = False
    while True:
        try:
            if need_status:
                status = await _upload_status(client, location, scopes)
                need_status = False
                if status is None:  # the session is gone: maybe because it finished, else start again
                    if await client.blob_size(repo, digest, scopes=scopes) == size:
                        forget()
                        tracker.done("pushed")
                        return "uploaded"
                    location, offset = await start(mount=False) or "", 0
                else:
                    offset, location = status
                remember(location)
                tracker.reset(offset)
                continue
            if offset == 0 and size <= chunk:
                end = size
                response = await client.request(
                    "PUT",
                    _with_digest(location, digest),
                    scopes=scopes,
                    headers={"content-type": "application/octet-stream", "content-length": str(size)},
                    content=_limited(opener, 0, size, hasher, tracker, size, what),
                    retry=False,
                )
                if response.status_code in (201, 204):
                    forget()
                    tracker.done("pushed")
                    return "uploaded"
                await _raise_or_retry(response, client, f"upload of {what}")
            elif offset < size:
                end = min(offset + chunk, size)
                response = await client.request(
                    "PATCH",
                    location,
                    scopes=scopes,
                    headers={
                        "content-type": "application/octet-stream",
                        "content-range": f"{offset}-{end - 1}",
                        "content-length": str(end - offset),
                    },
                    content=_limited(opener, offset, end, hasher, tracker, size, what),
                    retry=False,
                )
                await _raise_or_retry(response, client, f"upload of {what}")
                location = _location(response, client)
                offset = _range_end(response) or end
                remember(location)
                failures = 0
            else:
                hasher.verify(what)
                response = await client.request(
                    "PUT", _with_digest(location, digest), scopes=scopes, headers={"content-length": "0"}, retry=False
                )
                if response.status_code in (201, 204):
                    forget()
                    tracker.done("pushed")
                    return "uploaded"
                await _raise_or_retry(response, client, f"finishing upload of {what}")
        except IntegrityError:
            forget()
            with contextlib.suppress(ClientError, httpx.HTTPError):
                await client.request("DELETE", location, scopes=scopes, retry=False)
            raise
        except (httpx.TransportError, ConnectionFailed, _SourceFailed, _Retry) as err:
            failures += 1
            if failures > client.options.retries:
                raise ClientError(f"upload of {what} to {client.host}/{repo} failed: {describe(err)}") from None
            await asyncio.sleep(retry_delay(failures - 1, client.options.backoff, getattr(err, "response", None)))
            need_status = True


async def _saved_status(client: RegistryClient, location: str, scopes: list[str]) -> tuple[int, str] | None:
    """The status of a remembered session; None if it is gone (or unreadable), waiting out a busy session."""
    for attempt in range(client.options.retries + 1):
        try:
            return await _upload_status(client, location, scopes)
        except _Retry as err:
            await asyncio.sleep(retry_delay(attempt, client.options.backoff, err.response))
        except (ClientError, httpx.HTTPError):
            return None
    return None


async def _prehash(opener: Opener, hasher: _Hasher, offset: int) -> None:
    """Hash the bytes a registry already has (from the source), so the digest check still covers them."""
    position = 0
    async with contextlib.aclosing(opener(0)) as source:
        async for piece in source:
            take = piece[: offset - position]
            hasher.feed(position, take)
            position += len(take)
            if position >= offset:
                return


class _Retry(Exception):
    def __init__(self, response: httpx.Response, message: str) -> None:
        super().__init__(message)
        self.response = response


def describe(err: BaseException) -> str:
    if isinstance(err, httpx.TransportError):
        return describe_transport_error(err)
    return str(err) or type(err).__name__


async def _raise_or_retry(response: httpx.Response, client: RegistryClient, what: str) -> None:
    if response.status_code < 400:
        return
    if response.status_code >= 500 or response.status_code in (408, 409, 416, 429):
        raise _Retry(response, f"{response.status_code} {error_message(response)}")
    check(response, f"{what} to {client.host}")


async def _upload_status(client: RegistryClient, location: str, scopes: list[str]) -> tuple[int, str] | None:
    """(offset, location) of an upload session, or None when the registry no longer has it."""
    response = await client.request("GET", location, scopes=scopes)
    if response.status_code in (408, 409, 429) or response.status_code >= 500:
        raise _Retry(response, f"upload status: {response.status_code} {error_message(response)}")
    if response.status_code in (200, 204):
        end = _range_end(response)
        offset = end if end is not None and end > 0 else 0
        if response.headers.get("location"):
            location = _location(response, client)
        return offset, location
    return None


async def download_to_file(
    opener: Opener,
    digest: str,
    size: int,
    target: Path,
    tracker: Tracker,
    *,
    retries: int = 4,
    backoff: float = 0.5,
    what: str | None = None,
) -> None:
    """Write a blob to `target` through a temporary file, resuming after errors; renamed only once verified."""
    what = what or f"blob {digest}"
    algorithm, expected = digest.split(":", 1)
    temp = target.parent / f".tmp-{target.name}-{secrets.token_hex(4)}"
    writer = BlobFileWriter(temp, algorithm)
    try:
        try:
            await _receive(opener, size, writer, tracker, retries, backoff, what)
            actual = await writer.finish()
        finally:
            await writer.close()
        if actual != expected:
            raise IntegrityError(f"{what}: content hashes to {algorithm}:{actual}, not {digest}")
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    tracker.done("done")


async def _receive(
    opener: Opener, size: int, writer: BlobFileWriter, tracker: Tracker, retries: int, backoff: float, what: str
) -> None:
    """Take the blob's bytes from the source, reopening it at the byte reached after a failure."""
    failures = 0
    while writer.written < size:
        try:
            async with contextlib.aclosing(opener(writer.written)) as source:
                async for piece in source:
                    if len(piece) > size - writer.written:
                        raise IntegrityError(f"{what}: the source sent more than the {size} bytes expected")
                    await writer.write(piece)
                    tracker.advance(len(piece))
            if writer.written < size:
                raise _SourceFailed(f"the source ended at byte {writer.written} of {size}")
        except (httpx.TransportError, ConnectionFailed, _SourceFailed) as err:
            failures += 1
            if failures > retries:
                raise ClientError(f"download of {what} failed: {describe(err)}") from None
            await asyncio.sleep(retry_delay(failures - 1, backoff))
