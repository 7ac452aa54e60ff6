"""The client streams: pushing and pulling a 256 MiB layer peaks at about the memory a 4 MiB one does."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.support.cli import CargoholdCLI
from tests.support.servers import Cargohold

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def one_layer_image(layout: Path, size: int) -> None:
    """An OCI layout tagged v1 whose single layer is `size` random bytes, written without holding them."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    digest = hashlib.sha256()
    temp = layout / "layer"
    with open(temp, "wb") as out:
        for _ in range(size // MiB):
            piece = os.urandom(MiB)
            digest.update(piece)
            out.write(piece)
    layer = f"sha256:{digest.hexdigest()}"
    temp.rename(blobs / layer.split(":")[1])

    def put(data: bytes) -> str:
        name = hashlib.sha256(data).hexdigest()
        (blobs / name).write_bytes(data)
        return f"sha256:{name}"

    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex}).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
    }).encode()  # fmt: skip
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
    }]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))


def peak_rss(ch: CargoholdCLI, *args: str | os.PathLike[str]) -> float:
    """Run a client command; the peak RSS (MiB) of its process, sampled every 10 ms."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cargohold", *map(str, args)], env=ch.env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    watched = psutil.Process(process.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate(timeout=300)
    done.set()
    sampler.join()
    assert process.returncode == 0, stderr.decode()
    return peak / MiB


def test_memory_does_not_grow_with_layer_size(cargohold: Cargohold, tmp_path: Path) -> None:
    ch = CargoholdCLI(tmp_path / "home")
    figures = {}
    for size in (4 * MiB, 256 * MiB):
        layout = tmp_path / f"img-{size}"
        one_layer_image(layout, size)
        ref = f"{cargohold.host}/memory/{uuid.uuid4().hex[:8]}:v1"
        push = peak_rss(ch, "push", "-q", f"oci:{layout}:v1", ref)
        pull = peak_rss(ch, "pull", "-q", ref, f"oci:{tmp_path / f'out-{size}'}:v1")
        figures[size] = (push, pull)
    print({f"{s // MiB} MiB layer": f"push {p:.0f} MiB, pull {q:.0f} MiB peak RSS" for s, (p, q) in figures.items()})
    (small_push, small_pull), (big_push, big_pull) = figures[4 * MiB], figures[256 * MiB]
    # a 64x larger layer may cost the fixed buffers (2 x 2 MiB staging, 1 MiB reads) and allocator slack, no more
    assert big_push - small_push < 24, figures
    assert big_pull - small_pull < 24, figures
