"""A proxy cuts the connection in the middle of a layer: the push resumes where the registry's upload
status says it stands, and no finished layer or acknowledged chunk is sent again (bytes counted at the proxy)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import CargoholdCLI
from tests.support.clients import build_umoci_image, layout_blob, layout_digest
from tests.support.proxies import CuttingProxy
from tests.support.servers import Cargohold

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow

MiB = 1024 * 1024
LAYER = 6 * MiB
CHUNK = 2 * MiB
OVERHEAD = 64 * 1024  # request lines and headers of every request in a push, generously


@pytest.fixture
def proxy(cargohold: Cargohold) -> Iterator[CuttingProxy]:
    server = CuttingProxy(cargohold.port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[int]]:
    """Three layers of random (incompressible) data, about 6 MiB each."""
    layout = tmp_path_factory.mktemp("img") / "img"
    digest = build_umoci_image(layout, "v1", [{f"f{i}.bin": os.urandom(LAYER)} for i in range(3)])
    manifest = json.loads(layout_blob(layout, digest))
    sizes = [blob["size"] for blob in [manifest["config"], *manifest["layers"]]]
    return layout, digest, sizes


def test_push_resumes_after_a_cut_without_resending(
    proxy: CuttingProxy, cargohold: Cargohold, image: tuple[Path, str, list[int]], tmp_path: Path
) -> None:
    layout, digest, sizes = image
    ch = CargoholdCLI(tmp_path / "home")
    ref = f"{proxy.host}/resume/{uuid.uuid4().hex[:8]}:v1"
    total = sum(sizes)
    # the second layer, 1 MiB into its third chunk: two chunks of it are acknowledged
    proxy.cut_after(sizes[0] + sizes[1] + 2 * CHUNK + MiB)
    result = ch.json("push", "--jobs", "1", "--chunk-size", "2MiB", f"oci:{layout}:v1", ref)
    assert proxy.cuts == 1, "the proxy cut the upload"
    assert result["digest"] == digest
    resent = proxy.sent - total
    assert resent <= OVERHEAD + CHUNK, f"{resent} bytes beyond the image were sent: more than the cut chunk"

    out = tmp_path / "out"
    ch.run("pull", ref, f"oci:{out}:v1")
    assert layout_digest(out, "v1") == digest


def test_a_second_push_continues_what_a_failed_one_left(
    proxy: CuttingProxy, cargohold: Cargohold, image: tuple[Path, str, list[int]], tmp_path: Path
) -> None:
    """The first push gives up (no retries) in the middle of the third blob; the second skips the two
    finished blobs and continues the third one's session from the registry's offset."""
    layout, digest, sizes = image
    ch = CargoholdCLI(tmp_path / "home")
    repo = f"resume/{uuid.uuid4().hex[:8]}"
    ref = f"{proxy.host}/{repo}:v1"
    chunked = ["--jobs", "1", "--chunk-size", "2MiB"]
    proxy.cut_after(sizes[0] + sizes[1] + sizes[2] // 2)
    error = ch.fails("push", *chunked, "--retries", "0", f"oci:{layout}:v1", ref)
    assert "upload of blob" in error and "failed" in error
    manifest = json.loads(layout_blob(layout, digest))
    blobs = [manifest["config"], *manifest["layers"]]
    present = [httpx.head(f"{cargohold.url}/v2/{repo}/blobs/{b['digest']}").status_code == 200 for b in blobs]
    assert present == [True, True, False, False]
    assert httpx.get(f"{cargohold.url}/v2/{repo}/manifests/v1").status_code == 404, "no manifest for half an image"
    assert len(list((tmp_path / "home" / "cache" / "cargohold" / "uploads").iterdir())) == 1, "the session is kept"

    before = proxy.sent
    result = ch.json("push", *chunked, f"oci:{layout}:v1", ref)
    assert result["digest"] == digest and result["blobs"]["skipped"] == 2
    sent = proxy.sent - before
    # at least the first 2 MiB chunk of the third blob was acknowledged before the cut
    assert sent <= sizes[2] - CHUNK + sizes[3] + OVERHEAD, f"{sent} bytes: the acknowledged part was sent again"
    assert not list((tmp_path / "home" / "cache" / "cargohold" / "uploads").iterdir()), "finished: forgotten"
