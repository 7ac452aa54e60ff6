#!/usr/bin/env python3
"""Push and pull of a 5-layer image with cargohold's client and with skopeo, against one cargohold
registry started here, in the same run; reports MB/s and each client's peak RSS.

    .venv/bin/python bench/client_bench.py                 # 5 x 100 MiB layers, 2 rounds
    .venv/bin/python bench/client_bench.py --quick         # 5 x 4 MiB, 1 round (smoke)
    .venv/bin/python bench/client_bench.py --json bench/results/client.json

Method: each round builds two fresh images of random data (so no client can skip or mount a
blob it saw before; skopeo keeps a blob-info cache across runs), pushes one with each client
from an OCI layout to a new repository, then pulls the same image with each client into an
empty OCI layout. Layers are gzip streams of stored (uncompressed) deflate blocks, valid gzip
that skopeo does not recompress. The order of the clients alternates between rounds. Peak
RSS is the client process (and its children) sampled every 20 ms. MB is 10^6 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import psutil

from registry_bench import cargohold_server

ROOT = Path(__file__).resolve().parent.parent
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def gzip_stored(size: int, out: Path) -> tuple[str, int]:
    """Write `size` random bytes as a valid gzip stream without compression; returns (digest, length)."""
    digest = hashlib.sha256()
    length = 0
    compressor = zlib.compressobj(0, zlib.DEFLATED, 31)
    with open(out, "wb") as handle:
        left = size
        while left:
            piece = compressor.compress(os.urandom(min(left, 4 << 20)))
            left -= min(left, 4 << 20)
            handle.write(piece)
            digest.update(piece)
            length += len(piece)
        tail = compressor.flush()
        handle.write(tail)
        digest.update(tail)
        length += len(tail)
    return f"sha256:{digest.hexdigest()}", length


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def build_image(layout: Path, layers: int, layer_size: int) -> int:
    """An OCI layout tagged v1 with `layers` random layers; returns the total bytes of its blobs."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descriptors = []
    total = 0
    for number in range(layers):
        temp = layout / f"layer{number}"
        digest, length = gzip_stored(layer_size, temp)
        temp.rename(blob_path(layout, digest))
        descriptors.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": length}
        )
        total += length
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": os.urandom(8).hex(),
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    blob_path(layout, config_digest).write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    blob_path(layout, manifest_digest).write_bytes(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return total + len(config)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run a client; (seconds, peak RSS in MB of it and its children)."""
    peak = 0
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(process.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                rss = watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}): {stderr.decode()[-2000:]}")
    return elapsed, peak / 1e6


def report(round_number: int, tool: str, verb: str, mbps: float, rss: float) -> None:
    print(f"round {round_number + 1} {tool:9} {verb} {mbps:7.0f} MB/s  peak RSS {rss:5.0f} MB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 x 4 MiB layers, one round (a smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds (default 2, quick 1)")
    parser.add_argument("--layer-mib", type=int, help="MiB per layer (default 100, quick 4)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    layer_mib = args.layer_mib or (4 if args.quick else 100)
    rounds = args.rounds or (1 if args.quick else 2)
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        print("skopeo is not installed: run scripts/system-deps.sh", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="client-bench-"))
    home = work / "home"
    home.mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(home / "docker"), "HOME": str(home)}
    policy = home / ".config" / "containers" / "policy.json"
    policy.parent.mkdir(parents=True)
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    # Auth off: this measures the clients' transfers, not what auth costs (bench/auth_bench.py).
    registry = cargohold_server(work / "registry", sys.executable, {"CARGOHOLD_ACCESS_LOG": "false"})
    registry.start()
    host = f"127.0.0.1:{registry.port}"
    results: dict[str, dict[str, list[float]]] = {
        tool: {"push_MBps": [], "pull_MBps": [], "push_rss_MB": [], "pull_rss_MB": []}
        for tool in ("cargohold", "skopeo")
    }
    image_bytes = 0
    try:
        for round_number in range(rounds):
            order = ["cargohold", "skopeo"] if round_number % 2 == 0 else ["skopeo", "cargohold"]
            for tool in order:
                layout = work / f"img-{round_number}-{tool}"
                image_bytes = build_image(layout, 5, layer_mib << 20)
                repo = f"bench/{tool}-{round_number}"
                if tool == "cargohold":
                    argv = [sys.executable, "-m", "cargohold", "push", "-q", f"oci:{layout}:v1", f"{host}/{repo}:v1"]
                else:
                    argv = [
                        skopeo,
                        "copy",
                        "-q",
                        "--dest-tls-verify=false",
                        f"oci:{layout}:v1",
                        f"docker://{host}/{repo}:v1",
                    ]
                seconds, rss = timed(argv, env)
                results[tool]["push_MBps"].append(image_bytes / seconds / 1e6)
                results[tool]["push_rss_MB"].append(rss)
                report(round_number, tool, "push", image_bytes / seconds / 1e6, rss)
            # both pull the image cargohold pushed this round into empty layouts
            source = f"{host}/bench/cargohold-{round_number}:v1"
            for tool in order:
                out = work / f"pull-{round_number}-{tool}"
                if tool == "cargohold":
                    argv = [sys.executable, "-m", "cargohold", "pull", "-q", source, f"oci:{out}:v1"]
                else:
                    argv = [skopeo, "copy", "-q", "--src-tls-verify=false", f"docker://{source}", f"oci:{out}:v1"]
                seconds, rss = timed(argv, env)
                results[tool]["pull_MBps"].append(image_bytes / seconds / 1e6)
                results[tool]["pull_rss_MB"].append(rss)
                report(round_number, tool, "pull", image_bytes / seconds / 1e6, rss)
                shutil.rmtree(out)
            for tool in order:
                shutil.rmtree(work / f"img-{round_number}-{tool}")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary: dict[str, Any] = {"image_bytes": image_bytes, "layers": 5, "rounds": rounds, "figures": {}}
    print(f"\n{image_bytes / 1e6:.0f} MB image, 5 layers, median of {rounds} round(s):")
    print(f"{'figure':<14}{'cargohold':>12}{'skopeo':>12}{'ratio':>8}")
    for key in ("push_MBps", "pull_MBps", "push_rss_MB", "pull_rss_MB"):
        ours = statistics.median(results["cargohold"][key])
        theirs = statistics.median(results["skopeo"][key])
        summary["figures"][key] = {
            "cargohold": round(ours, 1),
            "skopeo": round(theirs, 1),
            "ratio": round(ours / theirs, 2),
        }
        print(f"{key:<14}{ours:>12.0f}{theirs:>12.0f}{ours / theirs:>8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
