"""Just enough ASGI plumbing for the registry: a request view and response senders.

The registry speaks raw ASGI rather than through a framework: its routes (repository names
with slashes, digests with colons) fit no router well, and a manifest GET must cost little.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, BinaryIO
from urllib.parse import parse_qs

from ..oci.errors import ErrorCode, RegistryError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")
READ_CHUNK = 1 << 20


# Largest Content-Length the registry can record (SQLite and PostgreSQL integers are 64-bit).
MAX_CONTENT_LENGTH = (1 << 63) - 1


class IncompleteBody(Exception):
    """The request body ended before its end: the client closed the connection (or half-closed
    it) early, or its chunked encoding was malformed, which granian reports the same way.
    Nothing of such a body is kept; the client, if it still listens, hears 400."""

    status = 400

    def __init__(self, received: int) -> None:
        self.received = received
        super().__init__(f"the request body ended after {received} bytes, before its end")

    def refusal(self) -> RegistryError:
        return RegistryError(
            ErrorCode.SIZE_INVALID,
            f"the request body ended after {self.received} bytes, before the length it announced "
            "(the connection closed early or its chunked encoding was malformed); nothing of it was kept",
            status=self.status,
            headers={"connection": "close"},
        )


class BodyStalled(IncompleteBody):
    """No byte of the body arrived for the body timeout."""

    status = 408

    def __init__(self, received: int, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(received)

    def refusal(self) -> RegistryError:
        return RegistryError.plain(
            408,
            f"no byte of the request body arrived for {self.timeout:g} s (after {self.received} bytes); "
            "nothing of it was kept",
            headers={"connection": "close"},
        )


class Request:
    __slots__ = (
        "_body_done",
        "_pending",
        "_query",
        "body_timeout",
        "caller",
        "client",
        "headers",
        "method",
        "path",
        "receive",
        "received",
        "request_id",
        "scope",
    )

    def __init__(self, scope: Scope, receive: Receive, body_timeout: float = 60.0) -> None:
        self.scope = scope
        self.body_timeout = body_timeout
        self.caller: Any = None  # set by the access gate: who made the request
        peer = scope.get("client")
        self.client = str(peer[0]) if peer else "-"  # the client's address (app: behind a balancer too)
        self.request_id = ""
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {}
        for raw_key, raw_value in scope["headers"]:
            key, value = raw_key.decode("latin-1"), raw_value.decode("latin-1")
            # Repeated headers (skopeo sends one Accept line per type) combine as a list.
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self._query: dict[str, list[str]] | None = None
        self._pending: Awaitable[Message] | None = None  # a receive() started ahead of need
        self._body_done = False
        self.received = 0  # body bytes read so far

    def query(self, key: str) -> str | None:
        if self._query is None:
            self._query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        values = self._query.get(key)
        return values[0] if values else None

    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_CONTENT_LENGTH:
            raise RegistryError(ErrorCode.SIZE_INVALID, f"invalid Content-Length {value[:40]!r}")
        return int(value)

    async def body_chunks(self, read_ahead: bool = False) -> AsyncIterator[bytes]:
        """What is left of the body, chunk by chunk; a later call goes on where an abandoned
        one stopped. Reading one ahead lets granian fetch the next chunk from the socket while
        the consumer still hashes this one, at the cost of holding it."""
        while not self._body_done:
            pending, self._pending = self._pending or self.receive(), None
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await pending
            except TimeoutError:
                raise BodyStalled(self.received, self.body_timeout) from None
            if message["type"] == "http.disconnect":
                raise IncompleteBody(self.received)
            self._body_done = not message.get("more_body", False)
            if read_ahead and not self._body_done:
                self._pending = self.receive()
            chunk = message.get("body", b"")
            if chunk:
                self.received += len(chunk)
                yield chunk

    def body_left(self) -> bool:
        """Whether part of the body is still unread, so the connection cannot carry another
        request: granian closes it after the response."""
        if self._body_done:
            return False
        if "transfer-encoding" in self.headers:
            return True
        length = self.headers.get("content-length", "0")
        return not (length.isascii() and length.isdigit()) or self.received < int(length)

    async def discard_body(self, limit: int) -> None:
        """Read and drop what is left of the body, up to `limit` bytes."""
        dropped = 0
        async for chunk in self.body_chunks():
            dropped += len(chunk)
            if dropped > limit:
                return

    async def read_body(self, limit: int) -> bytes:
        """The whole body, refused with 413 once it exceeds `limit` bytes."""
        declared = self.content_length()
        if declared is not None and declared > limit:
            raise RegistryError(
                ErrorCode.SIZE_INVALID,
                f"payload of {declared} bytes exceeds the limit of {limit}",
                status=413,
                headers={"connection": "close"},  # the body stays unread
            )
        parts: list[bytes] = []
        size = 0
        async for chunk in self.body_chunks():
            size += len(chunk)
            if size > limit:
                raise RegistryError(ErrorCode.SIZE_INVALID, f"payload exceeds the limit of {limit} bytes", status=413)
            parts.append(chunk)
        return b"".join(parts)


def _encode_headers(headers: dict[str, str] | None, request_id: bytes) -> list[tuple[bytes, bytes]]:
    # Header names are written in lowercase throughout the registry, so they need no folding.
    encoded = [API_VERSION, (b"x-request-id", request_id)]
    if headers:
        encoded += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return encoded


class Responder:
    """Sends one response and remembers its status and size for the access log."""

    __slots__ = ("_send", "request_id", "sent_bytes", "status")

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.request_id = request_id.encode()
        self.status = 0
        self.sent_bytes = 0

    async def start(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        await self._send(
            {"type": "http.response.start", "status": status, "headers": _encode_headers(headers, self.request_id)}
        )

    async def body(self, data: bytes, more: bool = False) -> None:
        self.sent_bytes += len(data)
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        headers["content-length"] = str(len(data))
        await self.start(status, headers)
        await self.body(data)

    async def empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        await self.bytes(status, b"", headers)

    async def json(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        headers.setdefault("content-type", "application/json")
        await self.bytes(status, json.dumps(document, separators=(",", ":")).encode(), headers)

    async def error(self, err: RegistryError, head: bool = False) -> None:
        content_type, payload = err.render()
        headers = {"content-type": content_type, "content-length": str(len(payload)), **err.headers}
        await self.start(err.status, headers)
        await self.body(b"" if head else payload)

    async def stream(self, reader: BinaryIO, length: int) -> None:
        """Send `length` bytes read from a blocking stream (an object store's), a chunk at a
        time: each read runs in a thread, so the event loop goes on while the store answers."""
        with reader:
            remaining = length
            while remaining > 0:
                chunk = await asyncio.to_thread(reader.read, min(READ_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"the blob ended {remaining} bytes early")
                remaining -= len(chunk)
                await self.body(chunk, more=remaining > 0)
        if length == 0:
            await self.body(b"")

    async def file(self, path: str, offset: int, length: int) -> None:
        """Stream `length` bytes of a file from `offset`, never holding more than a chunk.

        Measured faster here than granian's `http.response.pathsend` (docs/architecture.md).
        """
        fd = os.open(path, os.O_RDONLY)
        try:
            remaining = length
            while remaining > 0:
                chunk = os.pread(fd, min(READ_CHUNK, remaining), offset)
                if not chunk:
                    raise OSError(f"{path} ended {remaining} bytes early")
                offset += len(chunk)
                remaining -= len(chunk)
                await self.body(chunk, more=remaining > 0)
        finally:
            os.close(fd)
        if length == 0:
            await self.body(b"")
