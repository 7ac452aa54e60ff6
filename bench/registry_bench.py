#!/usr/bin/env python3
"""Throughput, latency and memory of cargohold beside Debian's docker-registry (Distribution 2.8).

By default this starts both registries on free 127.0.0.1 ports, each with a fresh data
directory, measures them in one run, prints every figure with the ratio cargohold /
docker-registry against the project's targets, and stops them again, also on Ctrl-C.
With --target it measures registries that are already running and starts nothing.

    .venv/bin/python bench/registry_bench.py                 # full run, about 5 minutes
    .venv/bin/python bench/registry_bench.py --quick         # smoke run, small sizes
    .venv/bin/python bench/registry_bench.py --json bench/results/run.json
    .venv/bin/python bench/registry_bench.py --target a=http://127.0.0.1:5000 --target b=http://127.0.0.1:5001

Each scenario runs on every target before the next scenario starts, so a change in the
machine's load hits both alike. Method notes:
- monolithic upload is one POST ?digest= where the registry finishes it (201); Distribution
  answers 202 instead, so for it the upload is POST then PUT ?digest= with the body;
- a timed download is received into one small reused buffer and only counted, so the client
  is not what limits the figure; one untimed download per target before them compares every
  byte with the pushed file (mmap);
- manifest GET load is wrk; HEAD load is a Python generator with wrk's model (closed loop,
  keep-alive, one process per wrk thread) because wrk 4.1.0 never completes a HEAD whose
  response has a Content-Length (wg/wrk#198); --get-tool python gives both the same tool;
- server memory is sampled every 50 ms over the process and its descendants, as PSS (each
  page shared between a forked worker and its parent counted once: the memory the machine
  really gives it) and, for reference, as the plain sum of their RSS, which counts those
  shared pages twice. The goal applies to PSS; a one-process server's PSS and RSS agree.

MB is 10^6 bytes and MiB 2^20 throughout. Ratios are first target / second target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import hashlib
import http.client
import json
import math
import mmap
import multiprocessing
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import psutil

MIB = 1 << 20
MB = 1_000_000
IO_BLOCK = 1 << 20  # large socket writes/reads so the client is not what we measure
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCTET_STREAM = {"Content-Type": "application/octet-stream"}
# (load-generator threads, connections), as in `wrk -t1 -c1`, `-t2 -c16`, `-t2 -c64`.
LOAD_LEVELS = ((1, 1), (2, 16), (2, 64))
CLIENT_FLOOR_MBPS = 1000.0

# Debian's packaged /etc/docker/registry/config.yml, without auth and the health checker:
# the reference runs as shipped (info-level request logging, in-memory descriptor cache),
# just as cargohold runs with its defaults (access log on, fsync on).
DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  fields: {{service: registry}}
storage:
  cache: {{blobdescriptor: inmemory}}
  filesystem: {{rootdirectory: '{root}'}}
  delete: {{enabled: true}}
http:
  addr: '{addr}'
  headers: {{X-Content-Type-Options: [nosniff]}}
"""


class SetupError(RuntimeError):
    """Something the benchmark needs before measuring is missing or broken."""


# ---------------------------------------------------------------- settings and figures


@dataclass(frozen=True)
class Settings:
    blob_bytes: int = 256 * MIB
    chunk_bytes: int = 16 * MIB
    parallel_uploads: int = 16
    parallel_blob_bytes: int = 32 * MIB
    tag_count: int = 2000
    tag_writers: int = 8
    seconds: int = 8
    list_repeats: int = 5
    page_size: int = 100
    memory_interval: float = 0.05
    # Transfers take about a second and this machine's speed drifts: each runs this many
    # rounds, alternating between the registries, and the median is reported.
    transfer_rounds: int = 3


# Just enough to prove every scenario runs and reports (the smoke test): not a measurement.
QUICK = Settings(
    blob_bytes=4 * MIB,
    chunk_bytes=1 * MIB,
    parallel_uploads=4,
    parallel_blob_bytes=1 * MIB,
    tag_count=50,
    tag_writers=2,
    seconds=1,
    list_repeats=1,
    page_size=20,
    transfer_rounds=1,
)
# Scenarios run in alternating rounds, and the figure each one sets.
TRANSFER_FIGURES = {
    "monolithic": "upload_monolithic_MBps",
    "chunked": "upload_chunked_MBps",
    "download": "download_MBps",
}


@dataclass(frozen=True)
class Goal:
    """A project target: the ratio first/second at least `value`, or the first's figure below it."""

    kind: str  # "ratio" or "below"
    value: float

    def describe(self, unit: str) -> str:
        return f">= {self.value:g}x" if self.kind == "ratio" else f"< {self.value:g} {unit}"

    def met(self, ours: float | None, ratio: float | None) -> bool | None:
        if self.kind == "ratio":
            return None if ratio is None else ratio >= self.value
        return None if ours is None else ours < self.value


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    better: str  # "higher", "lower", or "" for a count that checks correctness
    goal: Goal | None = None


def figures_for(s: Settings) -> tuple[Figure, ...]:
    blob, chunk, small = s.blob_bytes // MIB, s.chunk_bytes // MIB, s.parallel_blob_bytes // MIB
    figures = [
        Figure("upload_monolithic_MBps", f"monolithic upload, {blob} MiB", "MB/s", "higher", Goal("ratio", 3)),
        Figure("upload_chunked_MBps", f"chunked upload, {chunk} MiB PATCHes", "MB/s", "higher", Goal("ratio", 3)),
        Figure(
            "download_MBps",
            f"blob download, {blob} MiB (bytes verified untimed)",
            "MB/s",
            "higher",
            Goal("ratio", 1.15),
        ),
    ]
    for method in ("get", "head"):
        for _, conns in LOAD_LEVELS:
            name = f"manifest {method.upper()} by tag, {conns} conn"
            goal = Goal("ratio", 3.5) if conns == 64 else None
            figures += [
                Figure(f"manifest_{method}_c{conns}_rps", name, "req/s", "higher", goal),
                Figure(f"manifest_{method}_c{conns}_p99_ms", f"{name}, p99", "ms", "lower"),
                Figure(f"manifest_{method}_c{conns}_errors", f"{name}, non-2xx + socket errors", "count", ""),
            ]
    figures += [
        Figure("concurrent_upload_MBps", f"{s.parallel_uploads} concurrent {small} MiB uploads", "MB/s", "higher"),
        Figure(
            "concurrent_upload_peak_pss_MB",
            f"server peak memory (PSS) during the {s.parallel_uploads} uploads",
            "MB",
            "lower",
            Goal("below", 150),
        ),
        Figure("concurrent_upload_peak_rss_MB", "  the same as summed RSS", "MB", "lower"),
        Figure("peak_pss_MB", "server peak memory (PSS), whole run", "MB", "lower"),
        Figure("peak_rss_MB", "  the same as summed RSS", "MB", "lower"),
        Figure("tag_create_per_s", f"create {s.tag_count} tags (PUT manifest)", "tags/s", "higher"),
        Figure("tags_list_ms", f"tags/list of {s.tag_count} tags, median of {s.list_repeats}", "ms", "lower"),
        Figure("tags_page_ms", f"tags/list?n={s.page_size}, median of {s.list_repeats}", "ms", "lower"),
        Figure("tags_page_items", f"tags returned for n={s.page_size}", "count", ""),
    ]
    return tuple(figures)


# ---------------------------------------------------------------- HTTP client


class HttpFailure(Exception):
    """A registry answer the benchmark cannot go on from, with exactly what was sent and received."""

    def __init__(self, message: str, request: str, response: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.response = response

    def __str__(self) -> str:
        text = f"{self.message}\n  request: {self.request}"
        return text + (f"\n  response: {self.response}" if self.response else "\n  response: none")


@dataclass(frozen=True)
class FileSlice:
    """A byte range of a file, sent with sendfile(2) so the bytes never pass through Python."""

    path: Path
    offset: int
    length: int


Payload = bytes | FileSlice


@dataclass
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def describe(self) -> str:
        return describe_response(self.status, self.reason, self.headers, self.body)


def describe_response(status: int, reason: str, headers: http.client.HTTPMessage, body: bytes) -> str:
    lines = [f"HTTP {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    excerpt = body[:2000].decode("utf-8", "replace")
    return "\n    ".join([*lines, f"body ({len(body)} bytes): {excerpt}"])


class Client:
    """One keep-alive HTTP/1.1 connection to a registry (http.client reconnects when it closes)."""

    def __init__(self, base_url: str, timeout: float = 300.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise SetupError(f"only http://HOST:PORT targets are supported, not {base_url!r}")
        self.base = f"http://{parts.netloc}"
        self.netloc = parts.netloc
        self._host, self._port, self._timeout = parts.hostname, parts.port or 80, timeout
        self._conn: http.client.HTTPConnection | None = None
        self.last_request = ""  # what the last request sent, for error reports

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout, blocksize=IO_BLOCK)
        return self._conn

    def resolve(self, target: str) -> str:
        """Path and query of `target`: a path, or an absolute URL as Location headers may be."""
        parts = urlsplit(urljoin(self.base + "/", target))
        if parts.netloc != self.netloc:
            raise HttpFailure(f"the registry sent the client to another host: {target}", target)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def send(
        self, method: str, target: str, headers: dict[str, str] | None = None, payload: Payload = b""
    ) -> http.client.HTTPResponse:
        """Send a request and return the response with its body unread."""
        path = self.resolve(target)
        headers = dict(headers or {})
        length = payload.length if isinstance(payload, FileSlice) else len(payload)
        if method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(length)
        described = self.last_request = describe_request(method, self.base + path, headers, length)
        conn = self._connection()
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            if isinstance(payload, FileSlice):
                send_file(conn, payload)
            elif payload:
                conn.send(payload)
        except OSError as err:
            # A server may answer early and close, e.g. to refuse the body: show that answer.
            early = self._early_answer(conn)
            self.close()
            raise HttpFailure(f"the connection failed while sending: {err!r}", described, early) from None
        try:
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise HttpFailure(f"no response: {err!r}", described) from None

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        payload: Payload = b"",
        expect: tuple[int, ...] = (200,),
    ) -> Response:
        raw = self.send(method, target, headers, payload)
        try:
            response = Response(raw.status, raw.reason, raw.headers, raw.read())
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise HttpFailure(f"the response broke off: {err!r}", self.last_request) from None
        if response.status not in expect:
            raise HttpFailure(f"expected HTTP {' or '.join(map(str, expect))}", self.last_request, response.describe())
        return response

    @staticmethod
    def _early_answer(conn: http.client.HTTPConnection) -> str | None:
        try:
            if conn.sock is not None:
                conn.sock.settimeout(2)
            raw = conn.getresponse()
            return describe_response(raw.status, raw.reason, raw.headers, raw.read(4096))
        except (OSError, http.client.HTTPException):
            return None


def describe_request(method: str, url: str, headers: dict[str, str], length: int) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in headers.items())
    return f"{method} {url} [{shown}] body {length} bytes"


def send_file(conn: http.client.HTTPConnection, piece: FileSlice) -> None:
    assert conn.sock is not None
    with open(piece.path, "rb") as f:
        sent = conn.sock.sendfile(f, piece.offset, piece.length)
    if sent != piece.length:
        raise OSError(f"sendfile sent {sent} of {piece.length} bytes")


def location(response: Response, request: str) -> str:
    where = response.header("Location")
    if not where:
        raise HttpFailure("the response has no Location header", request, response.describe())
    return where


def with_query(target: str, key: str, value: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}{key}={value}"


# ---------------------------------------------------------------- blobs and registry operations


@dataclass(frozen=True)
class Blob:
    path: Path
    size: int
    digest: str

    def whole(self) -> FileSlice:
        return FileSlice(self.path, 0, self.size)


def make_blob(path: Path, size: int) -> Blob:
    """A file of random bytes, so no layer of the stack can compress or deduplicate it."""
    hasher = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(IO_BLOCK, remaining))
            hasher.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return Blob(path, size, f"sha256:{hasher.hexdigest()}")


@dataclass(frozen=True)
class Blobs:
    monolithic: Blob
    chunked: Blob
    concurrent: tuple[Blob, ...]


def prepare_blobs(directory: Path, s: Settings) -> Blobs:
    directory.mkdir(parents=True, exist_ok=True)
    return Blobs(
        monolithic=make_blob(directory / "monolithic.bin", s.blob_bytes),
        chunked=make_blob(directory / "chunked.bin", s.blob_bytes),
        concurrent=tuple(
            make_blob(directory / f"concurrent-{i:02d}.bin", s.parallel_blob_bytes) for i in range(s.parallel_uploads)
        ),
    )


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def upload(client: Client, repo: str, payload: Payload, digest: str, single_post: bool) -> None:
    """A monolithic upload: one POST ?digest= where the registry takes it, else POST then PUT ?digest=."""
    if single_post:
        client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", OCTET_STREAM, payload, expect=(201,))
        return
    started = client.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
    where = location(started, f"POST /v2/{repo}/blobs/uploads/")
    client.request("PUT", with_query(where, "digest", digest), OCTET_STREAM, payload, expect=(201,))


def upload_chunked(client: Client, repo: str, blob: Blob, chunk: int) -> None:
    """POST, PATCH each chunk with Content-Range, PUT ?digest=; every step follows the last Location."""
    where = location(client.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,)), "POST start")
    for offset in range(0, blob.size, chunk):
        last = min(offset + chunk, blob.size) - 1
        headers = {**OCTET_STREAM, "Content-Range": f"{offset}-{last}"}
        answer = client.request("PATCH", where, headers, FileSlice(blob.path, offset, last - offset + 1), (202,))
        if answer.header("Range") not in (None, f"0-{last}"):
            raise HttpFailure(
                f"after bytes {offset}-{last} the Range header is wrong", f"PATCH {where}", answer.describe()
            )
        where = location(answer, f"PATCH {where}")
    client.request("PUT", with_query(where, "digest", blob.digest), expect=(201,))


def blob_size(client: Client, repo: str, digest: str) -> int | None:
    answer = client.request("HEAD", f"/v2/{repo}/blobs/{digest}", expect=(200, 404))
    length = answer.header("Content-Length")
    return int(length) if answer.status == 200 and length is not None else None


def check_stored(client: Client, repo: str, blob: Blob) -> None:
    size = blob_size(client, repo, blob.digest)
    if size != blob.size:
        raise HttpFailure(
            f"after the upload HEAD says {size} bytes, not {blob.size}", f"HEAD /v2/{repo}/blobs/{blob.digest}"
        )


RECEIVE_BLOCK = 1 << 20


def download(client: Client, repo: str, blob: Blob, scratch: bytearray) -> float:
    """Seconds to receive the blob into one small reused buffer (it stays in the CPU cache).

    Timed downloads check the status and that exactly the blob's size arrived; `verify_download`
    compares the bytes. Comparing every timed block made this client the bottleneck of a 2-core
    machine (about 1.6 GB/s against any server), which hid the servers' own difference.
    """
    return _receive(client, f"/v2/{repo}/blobs/{blob.digest}", blob, scratch, None)


def verify_download(client: Client, repo: str, blob: Blob, scratch: bytearray) -> None:
    """Download the blob untimed, comparing each block byte for byte with the file pushed (via mmap)."""
    with open(blob.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as pushed:
        original = memoryview(pushed)
        try:
            _receive(client, f"/v2/{repo}/blobs/{blob.digest}", blob, scratch, original)
        finally:
            original.release()


def _receive(client: Client, target: str, blob: Blob, scratch: bytearray, original: memoryview | None) -> float:
    started = time.perf_counter()
    raw = client.send("GET", target)
    if raw.status != 200 or raw.getheader("Content-Length") not in (None, str(blob.size)):
        body = raw.read(4096)
        client.close()
        raise HttpFailure(
            f"expected HTTP 200 with {blob.size} bytes",
            f"GET {target}",
            describe_response(raw.status, raw.reason, raw.headers, body),
        )
    received, differs_at = 0, None
    try:
        with memoryview(scratch) as view:
            while received < blob.size:
                want = min(len(scratch), blob.size - received)
                length = raw.readinto(view[:want])
                if not length:
                    break
                if original is not None and differs_at is None:
                    got = scratch if length == len(scratch) else bytes(view[:length])
                    if got != original[received : received + length]:
                        differs_at = received
                received += length
        seconds = time.perf_counter() - started
        extra = len(raw.read(1))
    except (OSError, http.client.HTTPException) as err:
        client.close()
        raise HttpFailure(f"the download broke off: {err!r}", f"GET {target}") from None
    if received != blob.size or extra or differs_at is not None:
        where = f", differing from what was pushed at byte {differs_at}" if differs_at is not None else ""
        raise HttpFailure(f"downloaded {received}{'+' if extra else ''} of {blob.size} bytes{where}", f"GET {target}")
    return seconds


@dataclass(frozen=True)
class Image:
    manifest: bytes
    digest: str


def push_image(client: Client, repo: str, reference: str | None, single_post: bool) -> Image:
    """A small image (config + one layer + OCI manifest), tagged `reference` or pushed by digest."""
    layer = os.urandom(2048)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}}
    ).encode()
    for blob in (config, layer):
        upload(client, repo, blob, sha256_digest(blob), single_post)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}],
        }
    ).encode()
    image = Image(manifest, sha256_digest(manifest))
    put_manifest(client, repo, reference or image.digest, image)
    return image


def put_manifest(client: Client, repo: str, reference: str, image: Image) -> None:
    answer = client.request(
        "PUT", f"/v2/{repo}/manifests/{reference}", {"Content-Type": OCI_MANIFEST}, image.manifest, (201,)
    )
    if answer.header("Docker-Content-Digest") not in (None, image.digest):
        raise HttpFailure(
            "the manifest's digest header is wrong", f"PUT /v2/{repo}/manifests/{reference}", answer.describe()
        )


def check_manifest_answer(client: Client, url_path: str, method: str, image: Image) -> None:
    """The request the load generator repeats must succeed with the right manifest before it is timed."""
    answer = client.request(method, url_path, {"Accept": OCI_MANIFEST})
    problems = []
    if answer.header("Docker-Content-Digest") != image.digest:
        problems.append("Docker-Content-Digest")
    if (answer.header("Content-Type") or "").split(";")[0] != OCI_MANIFEST:
        problems.append("Content-Type")
    if answer.header("Content-Length") != str(len(image.manifest)):
        problems.append("Content-Length")
    if method == "GET" and answer.body != image.manifest:
        problems.append("body")
    if problems:
        raise HttpFailure(
            f"wrong {', '.join(problems)}", f"{method} {url_path} [Accept: {OCI_MANIFEST}]", answer.describe()
        )


# ---------------------------------------------------------------- load generators


@dataclass
class LoadResult:
    tool: str
    threads: int
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    # non_2xx: wrk counts only statuses >= 400 ("Non-2xx or 3xx responses"); the Python generator counts all.
    errors: dict[str, int]
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str, pattern: str) -> float | None:
    found = re.search(pattern + r"\s+([\d.]+)(us|ms|s|m)\b", text, re.M)
    return float(found[1]) * _WRK_UNITS[found[2]] if found else None


def parse_wrk(text: str, threads: int, connections: int, seconds: float) -> LoadResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if not rps or not total:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    errors = {"non_2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors["non_2xx"] = int(found[1])
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors.update(zip(("connect", "read", "write", "timeout"), map(int, found.groups()), strict=True))
    return LoadResult(
        tool="wrk",
        threads=threads,
        connections=connections,
        seconds=seconds,
        requests=int(total[1]),
        rps=float(rps[1]),
        p50_ms=_wrk_ms(text, r"^\s+50%"),
        p99_ms=_wrk_ms(text, r"^\s+99%"),
        errors=errors,
    )


def run_wrk(wrk: str, url: str, method: str, threads: int, conns: int, seconds: int, workdir: Path) -> LoadResult:
    # A 10 s timeout: wrk drops slower responses from its latencies, which would flatter a struggling server's p99.
    command = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    command += ["-H", f"Accept: {OCI_MANIFEST}"]
    if method == "HEAD":
        script = workdir / "head.lua"
        script.write_text('wrk.method = "HEAD"\n')
        command += ["-s", str(script)]
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} {url} exited {done.returncode}: {done.stderr.strip()}")
    result = parse_wrk(done.stdout, threads, conns, seconds)
    if result.requests == 0:
        # wrk 4.1.0 waits for a HEAD response's body forever (wg/wrk#198): nothing completes.
        raise RuntimeError(f"wrk completed no request in {seconds}s:\n{done.stdout}")
    return result


@dataclass
class _LoadRun:
    """One load process's request and tallies; stop_at is set once every process is connected."""

    request: bytes
    head: bool
    stop_at: int = 0
    latencies: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def _content_length(head: bytes) -> int:
    found = re.search(rb"\r\ncontent-length:\s*(\d+)", head.lower())
    return int(found[1]) if found else 0


class _LoadConnection(asyncio.Protocol):
    """Closed loop on one keep-alive connection: send, read the whole response, send again."""

    def __init__(self, run: _LoadRun, closed: asyncio.Future[None]) -> None:
        self.run, self.closed = run, closed
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.body_left: int | None = None
        self.status = 0
        self.sent = 0
        self.in_flight = False
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def fire(self) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.sent = time.monotonic_ns()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.in_flight and self._parse():
            self._complete()

    def _parse(self) -> bool:
        if self.body_left is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            self.status = int(head[9:12])
            self.reusable = b"\r\nconnection: close" not in head.lower()
            self.body_left = 0 if self.run.head else _content_length(head)
        if len(self.buffer) < self.body_left:
            return False
        del self.buffer[: self.body_left]
        self.body_left = None
        return True

    def _complete(self) -> None:
        assert self.transport is not None
        now = time.monotonic_ns()
        self.in_flight = False
        if now > self.run.stop_at:
            self.transport.close()
            return
        self.run.latencies.append(now - self.sent)
        self.run.statuses[self.status] += 1
        if self.reusable:
            self.fire()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight and time.monotonic_ns() <= self.run.stop_at:
            self.run.errors["read"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _open(host: str, port: int, run: _LoadRun) -> tuple[_LoadConnection, asyncio.Future[None]]:
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    _, protocol = await loop.create_connection(functools.partial(_LoadConnection, run, closed), host, port)
    return protocol, closed


async def _drive(host: str, port: int, run: _LoadRun, first: tuple[_LoadConnection, asyncio.Future[None]]) -> None:
    current: tuple[_LoadConnection, asyncio.Future[None]] | None = first
    while time.monotonic_ns() < run.stop_at:
        if current is None:  # the server closed the last one: reconnect, as wrk does
            try:
                current = await _open(host, port, run)
            except OSError:
                run.errors["connect"] += 1
                await asyncio.sleep(0.01)
                continue
        protocol, closed = current
        protocol.fire()
        await closed
        current = None


async def _load_main(
    host: str, port: int, request: bytes, head: bool, conns: int, seconds: int, barrier: Any
) -> dict[str, Any]:
    run = _LoadRun(request, head)
    opened = [await _open(host, port, run) for _ in range(conns)]
    barrier.wait(timeout=60)  # blocking on purpose: every process starts its clock together
    run.stop_at = time.monotonic_ns() + seconds * 1_000_000_000
    tasks = [asyncio.create_task(_drive(host, port, run, first)) for first in opened]
    _, pending = await asyncio.wait(tasks, timeout=seconds + 10)
    for task in pending:
        task.cancel()
    run.errors["timeout"] += len(pending)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return {"latencies": run.latencies, "statuses": dict(run.statuses), "errors": dict(run.errors)}


def _load_process(
    host: str, port: int, request: bytes, head: bool, conns: int, seconds: int, barrier: Any, results: Any
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        try:
            import uvloop

            outcome = uvloop.run(_load_main(host, port, request, head, conns, seconds, barrier))
        except ImportError:
            outcome = asyncio.run(_load_main(host, port, request, head, conns, seconds, barrier))
    except Exception as err:  # report it rather than leave the parent waiting
        barrier.abort()
        outcome = {"error": repr(err)}
    results.put(outcome)


def _percentile(ordered: list[int], pct: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index] / 1e6


def run_pyload(
    url: str, method: str, threads: int, conns: int, seconds: int, headers: dict[str, str] | None = None
) -> LoadResult:
    """wrk's model in Python (closed loop, keep-alive, one process per wrk thread), for what wrk cannot send."""
    parts = urlsplit(url)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = (
        f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {OCI_MANIFEST}\r\n"
        f"User-Agent: registry_bench\r\n{extra}\r\n"
    ).encode()
    processes = max(1, min(threads, conns))
    shares = [conns // processes + (1 if i < conns % processes else 0) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    workers = [
        ctx.Process(
            target=_load_process,
            args=(parts.hostname, parts.port or 80, request, method == "HEAD", share, seconds, barrier, results),
            daemon=True,
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    try:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=60)
        outcomes = [results.get(timeout=seconds + 60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    failed = [o["error"] for o in outcomes if "error" in o]
    if failed:
        raise RuntimeError(f"load generator failed: {'; '.join(failed)}")
    result = _merge_load(outcomes, threads, conns, seconds)
    if result.requests == 0:
        raise RuntimeError(f"no {method} request completed in {seconds}s: {result.errors}")
    return result


def _merge_load(outcomes: list[dict[str, Any]], threads: int, conns: int, seconds: int) -> LoadResult:
    latencies = sorted(x for o in outcomes for x in o["latencies"])
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter({"non_2xx": 0, "connect": 0, "read": 0, "timeout": 0})
    for outcome in outcomes:
        statuses.update(outcome["statuses"])
        errors.update(outcome["errors"])
    errors["non_2xx"] = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    return LoadResult(
        tool="python",
        threads=threads,
        connections=conns,
        seconds=seconds,
        requests=len(latencies),
        rps=len(latencies) / seconds,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        errors=dict(errors),
        statuses={str(k): v for k, v in sorted(statuses.items())},
    )


# ---------------------------------------------------------------- memory sampling


def tree_memory(process: psutil.Process) -> tuple[int, int] | None:
    """(PSS, summed RSS) of a process and all its descendants (cargohold runs worker processes)."""
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.Error:
        return None
    pss = rss = 0
    for member in family:
        with contextlib.suppress(psutil.Error, OSError):
            member_pss, member_rss = process_memory(member)
            pss, rss = pss + member_pss, rss + member_rss
    return pss, rss


def process_memory(process: psutil.Process) -> tuple[int, int]:
    """(PSS, RSS) in bytes. smaps_rollup costs ~0.5 ms a read where psutil's full smaps parse
    costs ~2 ms of this process's CPU: sampled 20 times a second, the difference was CPU
    taken from the client and the servers being measured."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup", "rb") as f:
            fields = dict(line.split(b":", 1) for line in f.read().splitlines()[1:])
        return int(fields[b"Pss"].split()[0]) * 1024, int(fields[b"Rss"].split()[0]) * 1024
    except (FileNotFoundError, KeyError):  # kernels before 4.14
        memory = process.memory_full_info()
        return memory.pss, memory.rss


class MemorySampler:
    """Samples a server's memory in a thread; phases read the peak since a mark."""

    def __init__(self, pid: int | None, interval: float) -> None:
        self.process = psutil.Process(pid) if pid is not None else None
        self.interval = interval
        self.samples: list[tuple[int, int]] = []  # (PSS, summed RSS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def start(self) -> None:
        if self.process is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def sample(self) -> None:
        if self.process is not None and (memory := tree_memory(self.process)) is not None:
            self.samples.append(memory)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def mark(self) -> int:
        self.sample()
        return len(self.samples)

    def peak_since(self, mark: int) -> tuple[float | None, float | None]:
        """Peak (PSS, summed RSS) in MB since `mark`; Nones when the server is not sampled."""
        self.sample()
        window = self.samples[max(0, mark - 1) :]
        if not window or self.process is None:
            return None, None
        return max(pss for pss, _ in window) / MB, max(rss for _, rss in window) / MB


def listening_pid(url: str) -> int | None:
    """The process serving a loopback URL, found by its listening socket; None if not unique or not local."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or 80
    try:
        pids = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    except psutil.Error:
        return None
    pids.discard(None)
    # Pre-fork servers share the socket: keep the process whose parent is not one of them.
    roots = [pid for pid in pids if psutil.Process(pid).ppid() not in pids]
    return roots[0] if len(roots) == 1 else None


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the forked server: SIGTERM it should the benchmark die without cleaning up."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedServer:
    """A registry process the benchmark starts, on a free loopback port with its own data directory."""

    def __init__(self, name: str, workdir: Path, command: Callable[[str, Path], list[str]], env: dict[str, str]):
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.command = command(f"127.0.0.1:{self.port}", workdir)
        self.env = env

    def start(self) -> None:
        with open(self.log, "ab") as log:
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the server in order.
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: no other thread runs yet
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SetupError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    conn.close()
                    return
            time.sleep(0.05)
        raise SetupError(f"{self.name} did not answer {self.url}/v2/ within {timeout}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def cargohold_server(workdir: Path, python: str, extra_env: dict[str, str], data: Path | None = None) -> ManagedServer:
    """cargohold serving `data` (default: a fresh directory in `workdir`), logging to `workdir`."""

    def command(listen: str, wd: Path) -> list[str]:
        return [python, "-m", "cargohold", "serve", "--listen", listen, "--data", str(data or wd / "data")]

    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
    # The reference runs open, so ours does too; bench/auth_bench.py measures what auth costs.
    env["CARGOHOLD_AUTH"] = "off"
    env.update(extra_env)
    return ManagedServer("cargohold", workdir, command, env)


def distribution_server(workdir: Path, binary: str) -> ManagedServer:
    def command(listen: str, wd: Path) -> list[str]:
        config = wd / "config.yml"
        config.write_text(DISTRIBUTION_CONFIG.format(root=wd / "data", addr=listen))
        return [binary, "serve", str(config)]

    return ManagedServer("docker-registry", workdir, command, dict(os.environ))


# ---------------------------------------------------------------- client capacity check


def _sink_process(blob_path: str, blob_size: int, ports: Any) -> None:
    """A trivial HTTP server: drains request bodies, serves the blob file for GET. Measures the client alone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with socket.create_server(("127.0.0.1", 0)) as server:
        ports.put(server.getsockname()[1])
        while True:
            conn, _ = server.accept()
            with conn:
                _sink_connection(conn, blob_path, blob_size)


def _sink_connection(conn: socket.socket, blob_path: str, blob_size: int) -> None:
    scratch = bytearray(IO_BLOCK)
    pending = bytearray()
    while True:
        while b"\r\n\r\n" not in pending:
            data = conn.recv(65536)
            if not data:
                return
            pending += data
        end = pending.index(b"\r\n\r\n")
        head, body = bytes(pending[:end]), pending[end + 4 :]
        left = _content_length(head) - len(body)
        pending = bytearray(body[len(body) + left :]) if left < 0 else bytearray()
        while left > 0:
            received = conn.recv_into(scratch, min(len(scratch), left))
            if not received:
                return
            left -= received
        if head.startswith(b"GET "):
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {blob_size}\r\n\r\n".encode())
            with open(blob_path, "rb") as f:
                conn.sendfile(f)
        else:
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")


@contextlib.contextmanager
def sink(blob: Blob) -> Iterator[str]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    process = ctx.Process(target=_sink_process, args=(str(blob.path), blob.size, ports), daemon=True)
    process.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=30)}"
    finally:
        process.terminate()
        process.join(10)


def check_client(blob: Blob, buffer: bytearray) -> dict[str, Any]:
    """The same upload and download code against the sink, best of two: the most this client can measure."""
    with sink(blob) as url:
        client = Client(url)
        try:
            up = min(timed(lambda: upload(client, "sink", blob.whole(), blob.digest, single_post=True)) for _ in "12")
            verify_download(client, "sink", blob, buffer)
            down = min(download(client, "sink", blob, buffer) for _ in "12")
        finally:
            client.close()
    upload_mbps, download_mbps = blob.size / up / MB, blob.size / down / MB
    return {
        "upload_MBps": round(upload_mbps, 1),
        "download_MBps": round(download_mbps, 1),
        "bytes": blob.size,
        "exceeds_1GBps": min(upload_mbps, download_mbps) > CLIENT_FLOOR_MBPS,
    }


# ---------------------------------------------------------------- scenarios


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@dataclass
class Target:
    name: str
    url: str
    server: ManagedServer | None
    pid: int | None  # the server process whose memory is sampled, when known
    sampler: MemorySampler
    figures: dict[str, float | int | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    single_post: bool | None = None
    image: Image | None = None

    def client(self) -> Client:
        return Client(self.url)


@dataclass
class Bench:
    settings: Settings
    blobs: Blobs
    prefix: str  # repository namespace of this run, so runs against long-lived targets never collide
    workdir: Path
    wrk: str
    get_tool: str
    head_tool: str
    buffer: bytearray

    def repo(self, purpose: str) -> str:
        return f"{self.prefix}/{purpose}"


def single_post(bench: Bench, target: Target) -> bool:
    """Whether the target finishes a POST ?digest= upload in one request (OCI: registries MAY)."""
    if target.single_post is None:
        client = target.client()
        data = os.urandom(1024)
        try:
            answer = client.request(
                "POST",
                f"/v2/{bench.repo('probe')}/blobs/uploads/?digest={sha256_digest(data)}",
                OCTET_STREAM,
                data,
                expect=(201, 202),
            )
            target.single_post = answer.status == 201
            if not target.single_post:
                target.notes.append(
                    "monolithic uploads are POST then PUT ?digest=: it answers POST ?digest= with 202 (no single-POST)"
                )
                with contextlib.suppress(HttpFailure):  # tidy the session it opened
                    client.request("DELETE", location(answer, "POST"), expect=(204, 202, 404))
        finally:
            client.close()
    return target.single_post


def timed_upload(target: Target, repo: str, blob: Blob, figure: str, send: Callable[[Client], object]) -> None:
    """Time one upload of `blob` through `send(client)`, check it landed, record MB/s."""
    client = target.client()
    try:
        seconds = timed(lambda: send(client))
        check_stored(client, repo, blob)
    finally:
        client.close()
    target.figures[figure] = blob.size / seconds / MB


def scenario_monolithic(bench: Bench, target: Target) -> None:
    blob, repo, mode = bench.blobs.monolithic, bench.repo("monolithic"), single_post(bench, target)
    timed_upload(
        target, repo, blob, "upload_monolithic_MBps", lambda c: upload(c, repo, blob.whole(), blob.digest, mode)
    )


def scenario_chunked(bench: Bench, target: Target) -> None:
    blob, repo, chunk = bench.blobs.chunked, bench.repo("chunked"), bench.settings.chunk_bytes
    timed_upload(target, repo, blob, "upload_chunked_MBps", lambda c: upload_chunked(c, repo, blob, chunk))


def scenario_download(bench: Bench, target: Target) -> None:
    blob, repo = bench.blobs.monolithic, bench.repo("monolithic")
    client = target.client()
    try:
        if blob_size(client, repo, blob.digest) != blob.size:  # the upload scenario failed: push it untimed
            upload(client, repo, blob.whole(), blob.digest, single_post(bench, target))
        # The verified download also brings the file into both page caches, so the timed ones
        # compare the servers, not the disk. Median of three: one takes well under a second.
        verify_download(client, repo, blob, bench.buffer)
        seconds = [download(client, repo, blob, bench.buffer) for _ in range(3)]
    finally:
        client.close()
    target.details["download_seconds"] = seconds
    target.figures["download_MBps"] = blob.size / statistics.median(seconds) / MB


def manifest_path(bench: Bench) -> str:
    return f"/v2/{bench.repo('manifest')}/manifests/latest"


def ensure_image(bench: Bench, target: Target) -> Image:
    if target.image is None:
        client = target.client()
        try:
            target.image = push_image(client, bench.repo("manifest"), "latest", single_post(bench, target))
        finally:
            client.close()
    return target.image


def manifest_load(bench: Bench, target: Target, method: str) -> None:
    image, path = ensure_image(bench, target), manifest_path(bench)
    client = target.client()
    try:
        check_manifest_answer(client, path, method, image)
    finally:
        client.close()
    tool = bench.get_tool if method == "GET" else bench.head_tool
    failures = []
    for threads, conns in LOAD_LEVELS:
        key = f"manifest_{method.lower()}_c{conns}"
        try:
            result = load(bench, tool, target.url + path, method, threads, conns)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, queue.Empty) as err:
            failures.append(f"{conns} connections: {err}")
            continue
        target.details[key] = asdict(result)
        target.figures[f"{key}_rps"] = result.rps
        target.figures[f"{key}_p99_ms"] = result.p99_ms
        target.figures[f"{key}_errors"] = result.error_count
        if result.error_count:
            target.notes.append(f"{method} with {conns} connections: errors {result.errors} ({tool})")
    if failures:
        raise RuntimeError("; ".join(failures))


def load(bench: Bench, tool: str, url: str, method: str, threads: int, conns: int) -> LoadResult:
    if tool == "wrk":
        return run_wrk(bench.wrk, url, method, threads, conns, bench.settings.seconds, bench.workdir)
    return run_pyload(url, method, threads, conns, bench.settings.seconds)


def scenario_manifest_get(bench: Bench, target: Target) -> None:
    manifest_load(bench, target, "GET")


def scenario_manifest_head(bench: Bench, target: Target) -> None:
    manifest_load(bench, target, "HEAD")


def scenario_concurrent(bench: Bench, target: Target) -> None:
    blobs, repo, mode = bench.blobs.concurrent, bench.repo("concurrent"), single_post(bench, target)
    clients = [target.client() for _ in blobs]
    start = threading.Barrier(len(blobs) + 1)

    def one(index: int) -> float:
        start.wait(timeout=60)
        upload(clients[index], repo, blobs[index].whole(), blobs[index].digest, mode)
        return time.perf_counter()

    pool = ThreadPoolExecutor(len(blobs), thread_name_prefix="upload")
    try:
        futures = [pool.submit(one, i) for i in range(len(blobs))]
        mark = target.sampler.mark()
        start.wait(timeout=60)
        began = time.perf_counter()
        finished = [f.result() for f in futures]
        peak_pss, peak_rss = target.sampler.peak_since(mark)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for client in clients:
            client.close()
    target.figures["concurrent_upload_MBps"] = sum(b.size for b in blobs) / (max(finished) - began) / MB
    target.figures["concurrent_upload_peak_pss_MB"] = peak_pss
    target.figures["concurrent_upload_peak_rss_MB"] = peak_rss


def scenario_tags(bench: Bench, target: Target) -> None:
    s, repo = bench.settings, bench.repo("tags")
    client = target.client()
    try:
        image = push_image(client, repo, None, single_post(bench, target))
        tags = [f"t{i:05d}" for i in range(s.tag_count)]
        target.figures["tag_create_per_s"] = s.tag_count / timed(lambda: create_tags(bench, target, repo, image, tags))
        full = f"/v2/{repo}/tags/list"
        seconds = [timed(lambda: check_tag_list(client, full, set(tags))) for _ in range(s.list_repeats)]
        target.figures["tags_list_ms"] = statistics.median(seconds) * 1000
        page = f"{full}?n={s.page_size}"
        items: list[int] = []
        seconds = [timed(lambda: items.append(check_tag_page(client, page, set(tags)))) for _ in range(s.list_repeats)]
    finally:
        client.close()
    target.figures["tags_page_ms"] = statistics.median(seconds) * 1000
    target.figures["tags_page_items"] = items[-1]
    if items[-1] > s.page_size:
        target.notes.append(f"tags/list ignores n={s.page_size}: it returned all {items[-1]} tags")


def create_tags(bench: Bench, target: Target, repo: str, image: Image, tags: list[str]) -> None:
    """PUT the manifest under every tag over a few keep-alive connections at once."""
    idle: queue.Queue[Client] = queue.Queue()
    for _ in range(bench.settings.tag_writers):
        idle.put(target.client())

    def tag(name: str) -> None:
        client = idle.get()
        try:
            put_manifest(client, repo, name, image)
        finally:
            idle.put(client)

    try:
        with ThreadPoolExecutor(bench.settings.tag_writers, thread_name_prefix="tagger") as pool:
            for future in [pool.submit(tag, name) for name in tags]:
                future.result()
    finally:
        while not idle.empty():
            idle.get().close()


def check_tag_list(client: Client, path: str, expected: set[str]) -> None:
    answer = client.request("GET", path)
    found = set(json.loads(answer.body).get("tags") or [])
    if found != expected:
        missing, extra = sorted(expected - found)[:5], sorted(found - expected)[:5]
        raise HttpFailure(
            f"tags/list returned {len(found)} tags, expected {len(expected)}; missing {missing}, unexpected {extra}",
            f"GET {path}",
        )


def check_tag_page(client: Client, path: str, expected: set[str]) -> int:
    answer = client.request("GET", path)
    found = json.loads(answer.body).get("tags") or []
    if not found or not set(found) <= expected:
        raise HttpFailure(
            f"tags/list page has {len(found)} tags, not a subset of ours", f"GET {path}", answer.describe()
        )
    return len(found)


# (name, --only slug, action), in the order they run; each runs on every target before the next starts.
SCENARIOS: tuple[tuple[str, str, Callable[[Bench, Target], None]], ...] = (
    ("monolithic upload", "monolithic", scenario_monolithic),
    ("chunked upload", "chunked", scenario_chunked),
    ("download", "download", scenario_download),
    ("manifest GET", "manifest-get", scenario_manifest_get),
    ("manifest HEAD", "manifest-head", scenario_manifest_head),
    ("concurrent uploads", "concurrent", scenario_concurrent),
    ("tag listing", "tags", scenario_tags),
)


def run_scenario(name: str, action: Callable[[Bench, Target], None], bench: Bench, target: Target) -> None:
    if target.server is not None and not target.server.alive():
        target.errors.append({"scenario": name, "error": "skipped: the server is no longer running"})
        return
    print(f"  {target.name:<16} {name} ...", end="", flush=True)
    # Write back what earlier steps left dirty (buffered writes, deletes), so it cannot slow this step.
    os.sync()
    started = time.monotonic()
    try:
        action(bench, target)
    except HttpFailure as err:
        record_error(target, name, err.message, request=err.request, response=err.response)
    except (
        OSError,
        RuntimeError,
        ValueError,
        http.client.HTTPException,
        subprocess.TimeoutExpired,
        queue.Empty,
    ) as err:
        record_error(target, name, f"{type(err).__name__}: {err}")
    else:
        print(f" {time.monotonic() - started:.1f}s", flush=True)


def record_error(target: Target, scenario: str, message: str, **exchange: str | None) -> None:
    entry: dict[str, Any] = {"scenario": scenario, "error": message, **exchange}
    if target.server is not None:
        entry["server_running"] = target.server.alive()
        entry["server_log_tail"] = target.server.log_tail(2000)
    target.errors.append(entry)
    print(" FAILED", flush=True)
    lines = [f"!! {target.name}, {scenario}: {message}"]
    lines += [f"   {key}: {value}" for key, value in exchange.items() if value]
    if target.server is not None and not target.server.alive():
        lines.append(f"   the server exited; its log ends:\n{target.server.log_tail(2000)}")
    print("\n".join(lines), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- report


def ratio_of(ours: float | int | None, reference: float | int | None) -> float | None:
    if ours is None or reference is None or reference == 0:
        return None
    return ours / reference


def paired_ratio(ours: Target, reference: Target, key: str) -> float | None:
    """The median of the per-round ratios of a transfer figure. Each round measures both
    registries back to back, so a pair shares the machine's mood of the moment, which on
    these VMs drifts by a third within minutes: steadier than a ratio of two medians."""
    mine, theirs = ours.details.get(f"{key}_rounds"), reference.details.get(f"{key}_rounds")
    if not mine or not theirs or len(mine) != len(theirs) or not all(theirs):
        return None
    return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def comparison(figures: tuple[Figure, ...], targets: list[Target]) -> list[dict[str, Any]]:
    if len(targets) < 2:
        return []
    ours, reference = targets[0].figures, targets[1].figures
    rows = []
    for fig in figures:
        ratio = paired_ratio(targets[0], targets[1], fig.key)
        if ratio is None:
            ratio = ratio_of(ours.get(fig.key), reference.get(fig.key)) if fig.better else None
        met = fig.goal.met(ours.get(fig.key), ratio) if fig.goal else None
        rows.append(
            {
                "key": fig.key,
                "ratio": ratio,
                "goal": fig.goal.describe(fig.unit) if fig.goal else None,
                "met": met,
            }
        )
    return rows


def fmt(value: float | int | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("count", "req/s", "tags/s"):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if unit == "ms" else f"{value:,.1f}"


def print_table(figures: tuple[Figure, ...], targets: list[Target], rows: list[dict[str, Any]]) -> None:
    names = [t.name for t in targets]
    ratio_head = f"{names[0]}/{names[1]}" if len(names) > 1 else ""
    width = max(len(f.label) for f in figures)
    columns = [max(12, len(n)) for n in names]
    header = f"{'figure':<{width}}  {'unit':<6} " + " ".join(f"{n:>{w}}" for n, w in zip(names, columns, strict=True))
    header += f"  {ratio_head:>{max(9, len(ratio_head))}}  {'better':<6}  {'goal':<10} result" if rows else ""
    print("\n" + header + "\n" + "-" * len(header))
    for index, fig in enumerate(figures):
        values = " ".join(
            f"{fmt(t.figures.get(fig.key), fig.unit):>{w}}" for t, w in zip(targets, columns, strict=True)
        )
        line = f"{fig.label:<{width}}  {fig.unit:<6} {values}"
        if rows:
            row = rows[index]
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
            result = {True: "PASS", False: "MISS", None: "n/a" if row["goal"] else ""}[row["met"]]
            line += f"  {ratio:>{max(9, len(ratio_head))}}  {fig.better:<6}  {row['goal'] or '':<10} {result}"
        print(line.rstrip())


def print_notes(targets: list[Target], client: dict[str, Any], bench: Bench, load_before: tuple[float, ...]) -> None:
    print(
        f"\nclient capacity against a trivial sink: upload {client['upload_MBps']:,.0f} MB/s, "
        f"download {client['download_MBps']:,.0f} MB/s (bytes verified untimed)"
        + (
            ""
            if client["exceeds_1GBps"]
            else "\n  ** below 1 GB/s (a busy machine?): transfer figures near this are client-bound **"
        )
    )
    rounds = bench.settings.transfer_rounds
    print(
        f"uploads and downloads: median of {rounds} round(s), alternating between the registries; "
        "their ratios are the median of the per-round ratios"
    )
    print(
        f"manifest GET load: {bench.get_tool}; HEAD load: {bench.head_tool}"
        + (" (wrk 4.1.0 cannot send HEAD: it waits for a body, wg/wrk#198)" if bench.head_tool != "wrk" else "")
    )
    print(
        f"load average before/after: {'/'.join(f'{x:.2f}' for x in load_before)} -> "
        f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs; "
        "other processes on the machine make these figures noisy"
    )
    for target in targets:
        for note in dict.fromkeys(target.notes):
            print(f"{target.name}: {note}")
        for error in target.errors:
            print(f"{target.name}: FAILED {error['scenario']}: {error['error']}")


def versions(args: argparse.Namespace) -> dict[str, str]:
    found = {}
    for name, command in (
        ("wrk", [args.wrk, "-v"]),
        ("docker-registry", [args.docker_registry, "--version"]),
        ("cargohold", [args.cargohold_python, "-m", "cargohold", "--version"]),
    ):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
            found[name] = (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    return found


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")


def report_document(
    args: argparse.Namespace, bench: Bench, targets: list[Target], client: dict[str, Any], started: float
) -> dict[str, Any]:
    figures = figures_for(bench.settings)
    return {
        "tool": "cargohold bench/registry_bench.py",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "quick": args.quick,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_end": os.getloadavg()},
        "versions": versions(args),
        "settings": asdict(bench.settings),
        "load_tools": {"GET": bench.get_tool, "HEAD": bench.head_tool},
        "client_check": client,
        "figures": [asdict(f) for f in figures],
        "targets": {
            t.name: {
                "url": t.url,
                "started_by_bench": t.server is not None,
                "pid": t.pid,
                "single_post_upload": t.single_post,
                "figures": t.figures,
                "details": t.details,
                "notes": list(dict.fromkeys(t.notes)),
                "errors": t.errors,
            }
            for t in targets
        },
        "comparison": {
            "ours": targets[0].name if targets else None,
            "reference": targets[1].name if len(targets) > 1 else None,
            "rows": comparison(figures, targets),
        },
    }


# ---------------------------------------------------------------- main


def parse_target(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith("http://"):
        raise argparse.ArgumentTypeError(f"expected NAME=http://HOST:PORT, got {text!r}")
    return name, url.rstrip("/")


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure cargohold beside Debian's docker-registry (Distribution 2.8): uploads, downloads, "
        "manifest GET/HEAD under load, memory during concurrent uploads, and tag listing. "
        "Prints each figure and the ratio first/second target against the project's goals.",
        epilog="Exit status: 0 when every scenario ran on every target (goals missed do not count), "
        "1 when a scenario failed, 2 when setup failed, 130 when interrupted.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 1 s load runs: proves every scenario runs, measures nothing"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure and detail as JSON")
    parser.add_argument(
        "--target",
        action="append",
        type=parse_target,
        default=[],
        metavar="NAME=URL",
        help="measure this running registry instead of starting any (repeatable; the first two are compared)",
    )
    parser.add_argument("--duration", type=int, metavar="SECONDS", help="seconds per load run (default 8, quick 1)")
    parser.add_argument("--blob-mib", type=int, help="size of the upload/download blob (default 256, quick 4)")
    parser.add_argument("--chunk-mib", type=int, help="PATCH size of the chunked upload (default 16, quick 1)")
    parser.add_argument("--tags", type=int, help="tags to create and list (default 2000, quick 50)")
    parser.add_argument("--rounds", type=int, help="rounds of each transfer, median reported (default 3, quick 1)")
    parser.add_argument(
        "--get-tool", choices=("wrk", "python"), default="wrk", help="load generator for manifest GET (default wrk)"
    )
    parser.add_argument(
        "--head-tool",
        choices=("wrk", "python"),
        default="python",
        help="load generator for manifest HEAD (default python: wrk 4.1.0 hangs on HEAD responses, wg/wrk#198)",
    )
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help="wrk binary")
    parser.add_argument(
        "--docker-registry", default=shutil.which("docker-registry") or "docker-registry", help="docker-registry binary"
    )
    parser.add_argument("--cargohold-python", default=sys.executable, help="Python that runs `-m cargohold`")
    parser.add_argument(
        "--cargohold-env",
        action="append",
        type=parse_env,
        default=[],
        metavar="KEY=VALUE",
        help="environment for the cargohold server we start, e.g. CARGOHOLD_WORKERS=2 (repeatable)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[slug for _, slug, _ in SCENARIOS],
        help="run only this scenario (repeatable); figures of the others are left out",
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary blobs, data and server logs")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    changes: dict[str, int] = {}
    if args.duration is not None:
        changes["seconds"] = max(1, args.duration)
    if args.blob_mib is not None:
        changes["blob_bytes"] = args.blob_mib * MIB
    if args.chunk_mib is not None:
        changes["chunk_bytes"] = args.chunk_mib * MIB
    if args.tags is not None:
        changes["tag_count"] = args.tags
    if args.rounds is not None:
        changes["transfer_rounds"] = max(1, args.rounds)
    return Settings(**{**asdict(base), **changes})


def check_tools(args: argparse.Namespace) -> None:
    needed = [args.wrk] if "wrk" in (args.get_tool, args.head_tool) else []
    if not args.target:
        needed.append(args.docker_registry)
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise SetupError(f"missing {', '.join(missing)}: run `make system-deps` (scripts/system-deps.sh) as root")


def start_targets(args: argparse.Namespace, workdir: Path, s: Settings, servers: list[ManagedServer]) -> list[Target]:
    if args.target:
        targets = []
        for name, url in args.target:
            pid = listening_pid(url)
            target = Target(name, url, None, pid, MemorySampler(pid, s.memory_interval))
            if pid is None:
                target.notes.append("no local process found listening on its port: memory is not measured")
            targets.append(target)
        return targets
    for server in (
        cargohold_server(workdir / "cargohold", args.cargohold_python, dict(args.cargohold_env)),
        distribution_server(workdir / "docker-registry", args.docker_registry),
    ):
        servers.append(server)  # before start, so a half-started server is still stopped
        server.start()
        print(f"started {server.name} at {server.url} (pid {server.process.pid if server.process else '?'})")
    targets = []
    for server in servers:
        pid = server.process.pid if server.process else None
        targets.append(Target(server.name, server.url, server, pid, MemorySampler(pid, s.memory_interval)))
    return targets


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def measure(
    args: argparse.Namespace, settings: Settings, workdir: Path, servers: list[ManagedServer], targets: list[Target]
) -> int:
    started, load_before = time.time(), os.getloadavg()
    check_tools(args)
    print(
        f"preparing {(2 * settings.blob_bytes + settings.parallel_uploads * settings.parallel_blob_bytes) // MIB} "
        "MiB of random blobs ...",
        flush=True,
    )
    blobs = prepare_blobs(workdir / "client", settings)
    os.sync()  # the blob files' write-back would otherwise overlap the first measurements
    buffer = bytearray(RECEIVE_BLOCK)
    client = check_client(blobs.monolithic, buffer)
    print(
        f"client against a trivial sink: upload {client['upload_MBps']:,.0f} MB/s, "
        f"download {client['download_MBps']:,.0f} MB/s",
        flush=True,
    )
    targets.extend(start_targets(args, workdir, settings, servers))
    for target in targets:
        target.sampler.start()
    bench = Bench(
        settings, blobs, f"bench-{os.getpid()}-{int(started)}", workdir, args.wrk, args.get_tool, args.head_tool, buffer
    )
    for name, slug, action in SCENARIOS:
        if args.only and slug not in args.only:
            continue
        key = TRANSFER_FIGURES.get(slug)
        for _ in range(settings.transfer_rounds if key else 1):
            for target in targets:
                run_scenario(name, action, bench, target)
                if key and (value := target.figures.get(key)) is not None:
                    target.details.setdefault(f"{key}_rounds", []).append(value)
        for target in targets:
            if key and (rounds := target.details.get(f"{key}_rounds")):
                target.figures[key] = statistics.median(rounds)
    for target in targets:
        target.sampler.stop()
        samples = target.sampler.samples
        target.figures["peak_pss_MB"] = max(pss for pss, _ in samples) / MB if samples else None
        target.figures["peak_rss_MB"] = max(rss for _, rss in samples) / MB if samples else None
    figures = figures_for(settings)
    if args.only:  # leave out the rows of scenarios that did not run
        figures = tuple(f for f in figures if any(t.figures.get(f.key) is not None for t in targets))
    print_table(figures, targets, comparison(figures, targets))
    print_notes(targets, client, bench, load_before)
    if args.json:
        write_json(args.json, report_document(args, bench, targets, client, started))
    return 1 if any(t.errors for t in targets) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-bench-"))
    servers: list[ManagedServer] = []
    targets: list[Target] = []
    try:
        return measure(args, settings, workdir, servers, targets)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers", file=sys.stderr)
        return 130
    except SetupError as err:
        print(f"setup failed: {err}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        for target in targets:
            target.sampler.stop()
        for server in servers:
            server.stop()
        if args.keep_temp:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
