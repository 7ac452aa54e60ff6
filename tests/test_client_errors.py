"""Bad input and bad servers: each is one line on stderr, exit 1, and nothing half-written on disk."""

from __future__ import annotations

import datetime
import email.utils
import gzip
import json
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cargohold.client.registry import retry_delay
from tests.support.cli import CargoholdCLI
from tests.support.clients import build_umoci_image
from tests.support.proxies import FlakyRegistry, LyingRegistry
from tests.support.servers import Cargohold, ServerProcess, free_port


@pytest.fixture
def ch(tmp_path: Path) -> CargoholdCLI:
    return CargoholdCLI(tmp_path / "home")


@pytest.fixture(scope="module")
def liar() -> Iterator[LyingRegistry]:
    server = LyingRegistry().start()
    yield server
    server.stop()


def leftovers(directory: Path) -> list[str]:
    """Everything under `directory` (which should hold nothing, or only what was there before)."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


def test_unreachable_registry(ch: CargoholdCLI, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    assert "cannot reach registry" in ch.fails("inspect", f"{host}/a/b:v1", "--retries", "1")
    out = tmp_path / "out"
    assert "cannot reach registry" in ch.fails("pull", f"{host}/a/b:v1", f"oci:{out}:v1", "--retries", "0")
    assert "cannot reach registry" in ch.fails("pull", f"{host}/a/b:v1", tmp_path / "x.tar", "--retries", "0")
    assert not out.exists() and leftovers(tmp_path) == ["home", "home/docker-config"]


def test_unknown_image_and_bad_names(ch: CargoholdCLI, any_registry: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = ch.fails("pull", f"{any_registry.host}/no/such:v1", f"oci:{out}:v1")
    assert "not found" in missing and "no/such" in missing
    assert not out.exists()
    assert "not found" in ch.fails("pull", f"{any_registry.host}/no/such:v1", tmp_path / "img.tar")
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".tmp-*"))
    assert "invalid" in ch.fails("inspect", f"{any_registry.host}/UPPER/case:v1")
    assert "invalid tag" in ch.fails("inspect", f"{any_registry.host}/a/b:-bad")
    assert "not an OCI image layout" in ch.fails("push", f"oci:{tmp_path / 'nothing'}:v1", f"{any_registry.host}/a:v1")
    assert "platform" in ch.fails("pull", "--platform", "linux", f"{any_registry.host}/a:v1", f"oci:{out}")


@pytest.fixture(scope="module")
def saved_tarball(tmp_path_factory: pytest.TempPathFactory, cargohold: Cargohold) -> Path:
    """A docker-archive written by our own pull (docker's format: manifest.json, config, layer.tar files)."""
    work = tmp_path_factory.mktemp("tarball")
    layout = work / "img"
    build_umoci_image(layout, "v1", [{"data.bin": os.urandom(300_000)}])
    ch = CargoholdCLI(work / "home")
    ref = f"{cargohold.host}/errors/src-{uuid.uuid4().hex[:8]}:v1"
    ch.run("push", f"oci:{layout}:v1", ref)
    tarball = work / "saved.tar"
    ch.run("pull", ref, tarball)
    return tarball


def _layer_member(tarball: Path) -> tarfile.TarInfo:
    with tarfile.open(tarball) as tar:
        return next(m for m in tar.getmembers() if m.size > 100_000)


def test_corrupt_truncated_and_foreign_tarballs(
    ch: CargoholdCLI, cargohold: Cargohold, saved_tarball: Path, tmp_path: Path
) -> None:
    repo = f"errors/bad-{uuid.uuid4().hex[:8]}"
    ref = f"{cargohold.host}/{repo}:v1"
    assert ch.json("push", saved_tarball, f"{cargohold.host}/{repo}-good:v1")["digest"].startswith("sha256:")

    corrupt = tmp_path / "corrupt.tar"
    data = bytearray(saved_tarball.read_bytes())
    member = _layer_member(saved_tarball)
    data[member.offset_data + member.size // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    error = ch.fails("push", corrupt, ref)
    assert "hashes to" in error and "not sha256:" in error, error

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(saved_tarball.read_bytes()[: member.offset_data + member.size // 2])
    assert "truncated" in ch.fails("push", truncated, ref) or "not a readable tar" in ch.fails("push", truncated, ref)

    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(5000))
    assert "not a readable tar" in ch.fails("push", garbage, ref)
    zipped = tmp_path / "zipped.tar"
    zipped.write_bytes(gzip.compress(saved_tarball.read_bytes()))
    assert "compressed" in ch.fails("push", zipped, ref)
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, arcname="hello.py")
    assert "no manifest.json" in ch.fails("push", plain, ref)

    assert httpx.get(f"{cargohold.url}/v2/{repo}/manifests/v1").status_code == 404, "no image from bad input"


def test_lying_server(ch: CargoholdCLI, liar: LyingRegistry, tmp_path: Path) -> None:
    out = tmp_path / "out"
    error = ch.fails("pull", f"{liar.host}/lie/app:v1", f"oci:{out}:v1", "--retries", "0")
    assert "hashes to" in error, error
    # the config (true) may be kept; the lying layer is not, nor a temp file, nor an index entry
    if out.exists():
        names = leftovers(out)
        assert not [n for n in names if ".tmp-" in n], names
        assert json.loads((out / "index.json").read_text())["manifests"] == []
        layer = json.loads(liar.manifest)["layers"][0]["digest"].split(":")[1]
        assert f"blobs/sha256/{layer}" not in names

    tarball = tmp_path / "lie.tar"
    assert "hashes to" in ch.fails("pull", f"{liar.host}/lie/app:v1", tarball, "--retries", "0")
    assert not tarball.exists() and not list(tmp_path.glob(".tmp-*"))

    by_digest = ch.fails("inspect", f"{liar.host}/lie/app@{liar.digest}", "--retries", "0")
    assert "whose digest is" in by_digest, by_digest


def test_retries_honour_retry_after(ch: CargoholdCLI) -> None:
    flaky = FlakyRegistry().start()
    try:
        started = time.monotonic()
        info = ch.json("inspect", f"{flaky.host}/flaky/app:v1")
        elapsed = time.monotonic() - started
        assert info["digest"] == flaky.image.digest and flaky.hits == 4
        assert elapsed >= 3, f"three Retry-After: 1 answers, yet done in {elapsed:.1f}s"
        flaky.hits = 0
        error = ch.fails("inspect", f"{flaky.host}/flaky/app:v1", "--retries", "1")
        assert "503" in error and "busy" in error and flaky.hits == 2
    finally:
        flaky.stop()


def test_retry_delay() -> None:
    response = httpx.Response(503, headers={"retry-after": "2"})
    assert retry_delay(0, 0.5, response) == 2
    assert retry_delay(0, 0.5, httpx.Response(429, headers={"retry-after": "3600"})) == 30, "capped"
    later = email.utils.format_datetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5), True)
    assert 3 <= retry_delay(0, 0.5, httpx.Response(503, headers={"retry-after": later})) <= 5
    assert 0.375 <= retry_delay(0, 0.5) <= 0.625 and 1.5 <= retry_delay(2, 0.5) <= 2.5
