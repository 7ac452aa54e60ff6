"""Disk full: an upload that hits ENOSPC fails clearly, leaves nothing partial, reads go on."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.oci import error_code, push_blob, sha256, unique_repo, with_query
from tests.support.servers import Cargohold
from tests.support.store import assert_store_consistent

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mountpoint)], capture_output=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a 24 MiB tmpfs (this test needs root): {result.stderr.decode()}", pytrace=False)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _streamed(data: bytes) -> Iterator[bytes]:
    """A body without Content-Length (chunked): the registry learns its size only by writing it."""
    for offset in range(0, len(data), 1 << 20):
        yield data[offset : offset + (1 << 20)]


def test_upload_on_a_full_disk(small_disk: Path) -> None:
    server = Cargohold(small_disk / "registry").start()
    try:
        repo = unique_repo()
        kept, too_big = os.urandom(8 << 20), os.urandom(30 << 20)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            push_blob(c, repo, kept)
            # Announced larger than the whole disk: refused before a byte is read.
            announced = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(too_big)}, content=too_big)
            assert announced.status_code == 413
            assert "holds" in announced.json()["errors"][0]["message"]
            # Announced larger than what is free, though it would fit an empty disk: 507 at once.
            location = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
            assert c.patch(location, content=b"x" * 1000).status_code == 202
            over = c.patch(
                location, content=too_big[: 20 << 20], headers={"content-range": f"1000-{1000 + (20 << 20) - 1}"}
            )
            assert over.status_code == 507 and "does not fit" in over.json()["errors"][0]["message"]
            # Unannounced: the disk fills while the body is written.
            single = c.post(
                f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(too_big)}, content=_streamed(too_big)
            )
            assert single.status_code == 507
            assert "storage is full" in single.json()["errors"][0]["message"]
            chunk = c.patch(location, content=_streamed(too_big))
            assert chunk.status_code == 507
            assert error_code(chunk) == "BLOB_UPLOAD_INVALID"
            # The failed chunks left nothing; the session still holds what came before them.
            assert c.get(location).headers["range"] == "0-999"
            assert c.head(f"/v2/{repo}/blobs/{sha256(too_big)}").status_code == 404
            # Reads go on, and the session can still finish once the client sends what fits.
            assert c.get(f"/v2/{repo}/blobs/{sha256(kept)}").content == kept
            done = c.put(with_query(location, digest=sha256(b"x" * 1000)))
            assert done.status_code == 201
        assert "Traceback" not in server.log_text()
        assert_store_consistent(server.data)
    finally:
        server.stop()
