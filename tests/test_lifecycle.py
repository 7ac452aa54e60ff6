"""Integrity scrub and expiry of abandoned uploads, through the CLI and a running server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.oci import push_blob, unique_repo
from tests.support.servers import Cargohold


def cargohold(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cargohold", *args], capture_output=True, text=True, timeout=120)


def blob_file(data: Path, digest: str) -> Path:
    algorithm, encoded = digest.split(":")
    return data / "blobs" / algorithm / encoded[:2] / encoded


def test_scrub_finds_corrupt_missing_and_truncated_blobs(fresh_cargohold: Cargohold) -> None:
    repo = unique_repo()
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        digests = [push_blob(c, repo, os.urandom(50_000)) for _ in range(4)]
    data = fresh_cargohold.data
    healthy = cargohold("scrub", "--data", str(data))
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "checked 4 blob(s), 200,000 bytes" in healthy.stdout

    flipped, removed, truncated, intact = digests
    with open(blob_file(data, flipped), "r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0xFF]))
    blob_file(data, removed).unlink()
    os.truncate(blob_file(data, truncated), 10)
    report = cargohold("scrub", "--data", str(data))
    assert report.returncode == 1
    assert f"corrupt: {flipped}" in report.stdout
    assert f"missing: {removed}" in report.stdout
    assert f"wrong size: {truncated}" in report.stdout
    assert intact not in report.stdout
    assert "PROBLEMS FOUND" in report.stdout

    with httpx.Client(base_url=fresh_cargohold.url) as c:
        # A blob whose stored size disagrees with its record is never served.
        response = c.get(f"/v2/{repo}/blobs/{truncated}")
        assert response.status_code == 404
        assert "damaged" in response.json()["errors"][0]["message"]
        assert c.get(f"/v2/{repo}/blobs/{intact}").status_code == 200
    assert "run `cargohold scrub`" in fresh_cargohold.log_text()


def test_expire_uploads_removes_only_idle_sessions(fresh_cargohold: Cargohold) -> None:
    repo = unique_repo()
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        idle = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
        c.patch(idle, content=b"x" * 1000)
        fresh = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    idle_file = fresh_cargohold.data / "uploads" / idle.rsplit("/", 1)[1]
    two_days_ago = time.time() - 2 * 86400
    os.utime(idle_file, (two_days_ago, two_days_ago))
    # What a crash left in the trash before a pool thread could free it goes too.
    left_by_crash = fresh_cargohold.data / "trash" / ("f" * 32)
    left_by_crash.write_bytes(b"y" * 5000)

    result = cargohold("expire-uploads", "--data", str(fresh_cargohold.data), "--older-than", "1d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "expired 1 upload session(s)"
    assert not idle_file.exists()
    assert not left_by_crash.exists()
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        assert c.get(idle).status_code == 404
        assert c.get(fresh).status_code == 204


def test_running_server_expires_abandoned_uploads(tmp_path: Path) -> None:
    server = Cargohold(
        tmp_path / "registry", extra_env={"CARGOHOLD_UPLOAD_MAX_AGE": "1s", "CARGOHOLD_UPLOAD_SWEEP_INTERVAL": "0.3"}
    ).start()
    try:
        with httpx.Client(base_url=server.url) as c:
            location = c.post("/v2/sweep/me/blobs/uploads/").headers["location"]
            c.patch(location, content=b"abandoned")
            deadline = time.monotonic() + 15
            while c.get(location).status_code != 404 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert c.get(location).status_code == 404
        assert not any((server.data / "uploads").iterdir())
        assert "expired 1 abandoned upload session(s)" in server.log_text()
    finally:
        server.stop()
