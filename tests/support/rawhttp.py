"""A raw-socket HTTP/1.1 client for requests no well-behaved client library will send: bodies
shorter than their Content-Length, broken chunked encodings, stalls, oversized heads."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field

# The codes an OCI error body may carry: the distribution-spec's table plus the two legacy
# codes it allows (TAG_INVALID, MANIFEST_UNVERIFIED).
SPEC_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "TAG_INVALID",
        "MANIFEST_UNVERIFIED",
    }
)


@dataclass
class RawResponse:
    status: int | None  # None: the server closed the connection without an answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False  # the server closed the connection after answering
    seconds: float = 0.0

    def error_codes(self) -> list[str]:
        if "json" not in self.headers.get("content-type", ""):
            return []
        return [error["code"] for error in json.loads(self.body)["errors"]]


def _parse(raw: bytes) -> tuple[int | None, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        return None, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return int(lines[0].split()[1]), headers, body[:length]


def exchange(
    port: int,
    head: str | bytes,
    body_parts: list[bytes] | tuple[bytes, ...] = (),
    *,
    half_close: bool = True,
    pause: float = 0.0,
    timeout: float = 10.0,
) -> RawResponse:
    """Send a request head and body parts (pausing `pause` s between them), optionally
    half-close the socket, and read the answer until the server closes or `timeout` passes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head.encode("latin-1") if isinstance(head, str) else head)
            for part in body_parts:
                if pause:
                    time.sleep(pause)
                sock.sendall(part)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (and closed) before the whole request was sent: read its answer
        received = b""
        closed = False
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    closed = True
                    break
                received += data
                status, headers, body = _parse(received)
                complete = status is not None and len(body) >= int(headers.get("content-length", "-1")) >= 0
                if complete and headers.get("connection") != "close":
                    break  # a kept-alive connection: the answer is all there is
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    status, headers, body = _parse(received)
    return RawResponse(status, headers, body, closed, time.monotonic() - started)


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    return "\r\n".join(lines) + "\r\n\r\n"
