"""Moving one blob's bytes: resumable chunked uploads, resumable verified downloads to a file.

A blob's bytes come from an `Opener`: a function that returns an async iterator over the blob
from a given offset (a file read, a registry GET with a Range header). Nothing holds a whole blob
in memory; every byte is hashed once, in order, and checked against the digest before the blob
is committed (the upload's final PUT, a download's rename).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
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


class _State(enum.Enum):
    """Where an upload stands; each state's handler does one step and names the next state."""

    RESUME = enum.auto()  # a session an earlier push left behind: go on from what the registry has
    MOUNT = enum.auto()  # POST ?mount=&from=: the registry may link the blob from another repository
    START = enum.auto()  # POST a new upload session
    SEND = enum.auto()  # the whole blob in one PUT, or the next chunk in a PATCH, from `offset`
    FINISH = enum.auto()  # every byte is there: the final PUT ?digest= commits the blob
    RECOVER = enum.auto()  # after an error: ask the registry for the session's offset, or start over
    DONE = enum.auto()


_Handler = Callable[[], Awaitable[_State]]
# Errors after which the upload resumes from the registry's offset (until the retries run out).
_RETRYABLE = (httpx.TransportError, ConnectionFailed, _SourceFailed, _Retry)


class _Upload:
    """What one blob upload knows: its session's location and offset, retries spent, the hash so far."""

    def __init__(
        self,
        client: RegistryClient,
        repo: str,
        digest: str,
        size: int,
        opener: Opener,
        tracker: Tracker,
        mount_from: str | None,
    ) -> None:
        self.client, self.repo, self.digest, self.size = client, repo, digest, size
        self.opener, self.tracker = opener, tracker
        self.mount_from = mount_from or ""  # "": no repository to mount from
        self.what = f"blob {digest}"
        self.hasher = _Hasher(digest)
        self.scopes = [push_scope(repo)] + ([pull_scope(self.mount_from)] if self.mount_from else [])
        self.chunk = client.options.chunk_size
        self.base = f"/v2/{repo}/blobs/uploads/"
        self.key = (client.host, repo, digest)
        self.location = ""
        self.offset = 0
        self.failures = 0
        self.outcome = ""

    async def run(self) -> str:
        # Errors before a session exists propagate as they are; from then on they resume the upload.
        handlers: dict[_State, _Handler] = {
            _State.RESUME: self.resume,
            _State.MOUNT: self.mount,
            _State.START: self.start,
            _State.SEND: self._retried(self.send),
            _State.FINISH: self._retried(self.finish),
            _State.RECOVER: self._retried(self.recover),
        }
        state = _State.RESUME
        while state is not _State.DONE:
            state = await handlers[state]()
        return self.outcome

    async def resume(self) -> _State:
        sessions = self.client.sessions
        saved = sessions.get(*self.key) if sessions else None
        if saved:
            status = await _saved_status(self.client, saved, self.scopes)
            if status is not None:
                self.offset, self.location = status
                await _prehash(self.opener, self.hasher, self.offset)  # the digest check must cover those bytes too
                self.tracker.reset(self.offset)
                self._remember()
                return self._next()
            self._forget()
        return _State.MOUNT if self.mount_from else _State.START

    async def mount(self) -> _State:
        response = await self._post({"mount": self.digest, "from": self.mount_from})
        if response.status_code == 201:
            self.tracker.done("mounted")
            self.outcome = "mounted"
            return _State.DONE
        # No mount: the registry opened an ordinary upload session instead.
        self.location = self._session(response)
        self._remember()
        return self._next()

    async def start(self) -> _State:
        self.location = self._session(await self._post(None))
        self._remember()
        return self._next()

    async def send(self) -> _State:
        if self.offset == 0 and self.size <= self.chunk:
            return await self._put_whole()
        return await self._patch_chunk()

    async def _put_whole(self) -> _State:
        headers = {"content-type": "application/octet-stream", "content-length": str(self.size)}
        return await self._final_put(headers, self._bytes(0, self.size), f"upload of {self.what}")

    async def _patch_chunk(self) -> _State:
        end = min(self.offset + self.chunk, self.size)
        response = await self.client.request(
            "PATCH",
            self.location,
            scopes=self.scopes,
            headers={
                "content-type": "application/octet-stream",
                "content-range": f"{self.offset}-{end - 1}",
                "content-length": str(end - self.offset),
            },
            content=self._bytes(self.offset, end),
            retry=False,
        )
        await _raise_or_retry(response, self.client, f"upload of {self.what}")
        self.location = _location(response, self.client)
        self.offset = _range_end(response) or end
        self._remember()
        self.failures = 0  # the retry budget is for failures in a row: this chunk went through
        return self._next()

    async def finish(self) -> _State:
        self.hasher.verify(self.what)
        return await self._final_put({"content-length": "0"}, None, f"finishing upload of {self.what}")

    async def _final_put(self, headers: dict[str, str], content: AsyncIterator[bytes] | None, what: str) -> _State:
        """PUT ?digest=: commits the blob (with the whole body, or after the last chunk)."""
        response = await self.client.request(
            "PUT",
            _with_digest(self.location, self.digest),
            scopes=self.scopes,
            headers=headers,
            content=content,
            retry=False,
        )
        if response.status_code in (201, 204):
            return self._pushed()
        await _raise_or_retry(response, self.client, what)
        return self._next()

    async def recover(self) -> _State:
        status = await _upload_status(self.client, self.location, self.scopes)
        if status is None:  # the session is gone: maybe because it finished, else start again
            if await self.client.blob_size(self.repo, self.digest, scopes=self.scopes) == self.size:
                return self._pushed()
            self.location, self.offset = self._session(await self._post(None)), 0
        else:
            self.offset, self.location = status
        self._remember()
        self.tracker.reset(self.offset)
        return self._next()

    def _retried(self, handler: _Handler) -> _Handler:
        """`handler`, with a failure sending the upload to RECOVER after a delay (or ending it)."""

        async def guarded() -> _State:
            try:
                return await handler()
            except IntegrityError:
                await self._abandon()
                raise
            except _RETRYABLE as err:
                await self._back_off(err)
                return _State.RECOVER

        return guarded

    async def _back_off(self, err: Exception) -> None:
        self.failures += 1
        if self.failures > self.client.options.retries:
            raise ClientError(
                f"upload of {self.what} to {self.client.host}/{self.repo} failed: {describe(err)}"
            ) from None
        delay = retry_delay(self.failures - 1, self.client.options.backoff, getattr(err, "response", None))
        await asyncio.sleep(delay)

    async def _abandon(self) -> None:
        """Bad bytes: no resuming this session, and the registry may drop what it holds of it."""
        self._forget()
        with contextlib.suppress(ClientError, httpx.HTTPError):
            await self.client.request("DELETE", self.location, scopes=self.scopes, retry=False)

    def _next(self) -> _State:
        """SEND while bytes remain (a small blob, even an empty one, goes in one PUT), then FINISH."""
        if (self.offset == 0 and self.size <= self.chunk) or self.offset < self.size:
            return _State.SEND
        return _State.FINISH

    def _pushed(self) -> _State:
        self._forget()
        self.tracker.done("pushed")
        self.outcome = "uploaded"
        return _State.DONE

    async def _post(self, params: dict[str, str] | None) -> httpx.Response:
        return await self.client.request(
            "POST", self.base, scopes=self.scopes, params=params, headers={"content-length": "0"}
        )

    def _session(self, response: httpx.Response) -> str:
        """The location of the session a POST opened."""
        check(response, f"start upload of {self.what} to {self.client.host}/{self.repo}")
        return _location(response, self.client)

    def _bytes(self, offset: int, end: int) -> AsyncIterator[bytes]:
        return _limited(self.opener, offset, end, self.hasher, self.tracker, self.size, self.what)

    def _remember(self) -> None:
        # A push that fails for good can resume this session next time.
        if self.client.sessions:
            self.client.sessions.put(*self.key, self.location)

    def _forget(self) -> None:
        if self.client.sessions:
            self.client.sessions.drop(*self.key)


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
    return await _Upload(client, repo, digest, size, opener, tracker, mount_from).run()


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
