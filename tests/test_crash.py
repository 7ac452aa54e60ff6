"""kill -9 in the middle of a large upload: nothing partial becomes visible, the upload resumes."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import Cargohold
from tests.support.store import assert_store_consistent

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow

SIZE = 200 * 1024 * 1024
CHUNK = 1 << 20


def _blob_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "blob.bin"
    hasher = hashlib.sha256()
    block = os.urandom(CHUNK)
    with open(path, "wb") as f:
        for i in range(SIZE // CHUNK):
            # Vary each chunk cheaply so the blob is not one repeated block.
            piece = i.to_bytes(8, "big") + block[8:]
            f.write(piece)
            hasher.update(piece)
    return path, "sha256:" + hasher.hexdigest()


def _stream_until_killed(server: Cargohold, request_head: str, path: Path, kill_after: int) -> int:
    """Stream the file as a request body and SIGKILL the server once `kill_after` bytes went out."""
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock, open(path, "rb") as f:
        sock.sendall(request_head.encode())
        try:
            while chunk := f.read(CHUNK):
                sock.sendall(chunk)
                sent += len(chunk)
                if sent >= kill_after:
                    threading.Thread(target=server.kill).start()
                    time.sleep(0.5)
        except OSError:
            pass
    return sent


def test_kill_mid_chunked_upload_then_resume(tmp_path: Path) -> None:
    path, digest = _blob_file(tmp_path)
    server = Cargohold(tmp_path / "registry").start()
    try:
        with httpx.Client(base_url=server.url) as c:
            location = c.post("/v2/crash/test/blobs/uploads/").headers["location"]
        head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n"
        _stream_until_killed(server, head, path, kill_after=80 * CHUNK)
        assert server.process is not None and server.process.poll() is not None

        server.start()
        assert_store_consistent(server.data)
        with httpx.Client(base_url=server.url, timeout=120) as c:
            assert c.head(f"/v2/crash/test/blobs/{digest}").status_code == 404
            status = c.get(location)
            assert status.status_code == 204
            offset = int(status.headers["range"].split("-")[1]) + 1
            assert 0 < offset < SIZE
            with open(path, "rb") as f:
                f.seek(offset)
                rest = f.read()
            resumed = c.patch(location, content=rest, headers={"content-range": f"{offset}-{SIZE - 1}"})
            assert resumed.status_code == 202
            assert c.put(f"{location}?digest={digest}").status_code == 201
            hasher = hashlib.sha256()
            with c.stream("GET", f"/v2/crash/test/blobs/{digest}") as response:
                for piece in response.iter_bytes():
                    hasher.update(piece)
            assert "sha256:" + hasher.hexdigest() == digest
        assert_store_consistent(server.data)
    finally:
        server.stop()


def test_kill_mid_monolithic_upload_leaves_nothing_visible(tmp_path: Path) -> None:
    path, digest = _blob_file(tmp_path)
    server = Cargohold(tmp_path / "registry").start()
    try:
        head = (
            f"POST /v2/crash/mono/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n"
        )
        _stream_until_killed(server, head, path, kill_after=120 * CHUNK)
        server.start()
        assert_store_consistent(server.data)
        with httpx.Client(base_url=server.url, timeout=120) as c:
            assert c.head(f"/v2/crash/mono/blobs/{digest}").status_code == 404
            # Restarting the upload from scratch works.
            with open(path, "rb") as f:
                response = c.post("/v2/crash/mono/blobs/uploads/", params={"digest": digest}, content=f)
            assert response.status_code == 201
            assert int(c.head(f"/v2/crash/mono/blobs/{digest}").headers["content-length"]) == SIZE
        assert_store_consistent(server.data)
    finally:
        server.stop()
