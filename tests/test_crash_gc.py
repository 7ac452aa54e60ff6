"""kill -9 at random moments while pushes, deletes and garbage collection run, round after round.

Each round runs the registry (one or two worker processes, each with its own scheduled GC every
0.2 s and a 1 s grace period) and a second collector looping in another process, lets clients
push and delete images, then SIGKILLs both process groups at a random moment. After each
restart: `cargohold scrub` finds nothing corrupt or missing, the store holds only whole files,
every push that got its 201 (and was not deleted) pulls back intact, and an image whose push or
delete was cut off is all there or all gone.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.oci import OCI_MANIFEST, Image, canonical, image_of, sha256, with_query
from tests.support.servers import Cargohold
from tests.support.store import assert_store_consistent

ROUNDS = 20
PUSHERS = 3
GRACE = 1.0

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow

# A collector in a process of its own, as `cargohold gc` run from cron would be, but looping.
COLLECTOR_LOOP = """
import sys
import time
from pathlib import Path
from cargohold.lifecycle.gc import collect_garbage
from cargohold.storage.blobstore import FilesystemBlobStore
from cargohold.storage.metadata import SQLiteMetadataStore
data = Path(sys.argv[1])
meta, store = SQLiteMetadataStore(data / "metadata.sqlite3"), FilesystemBlobStore(data)
while True:
    collect_garbage(meta, store, grace=float(sys.argv[2]))
    time.sleep(0.02)
"""


@dataclass
class Ledger:
    """What the clients know: acknowledged pushes, acknowledged deletes, and the cut-off ones."""

    images: dict[str, Image] = field(default_factory=dict)  # repo:tag -> image
    committed: set[str] = field(default_factory=set)  # manifest PUT answered 201
    deleted: set[str] = field(default_factory=set)  # DELETE answered 202
    uncertain: set[str] = field(default_factory=set)  # a push or delete the kill cut off
    errors: list[str] = field(default_factory=list)  # answers no registry should give
    lock: threading.Lock = field(default_factory=threading.Lock)


def new_image(rng: random.Random, shared: list[bytes]) -> Image:
    config = canonical({"architecture": "amd64", "os": "linux", "nonce": rng.randbytes(8).hex()})
    layers = [rng.choice(shared), rng.randbytes(rng.randrange(1_000, 8_000))]
    return image_of(config, layers)


def push(client: httpx.Client, repo: str, tag: str, image: Image, rng: random.Random, ledger: Ledger) -> bool:
    """HEAD, upload what is missing (POST + PUT), PUT the manifest; retry a manifest refused
    because GC took a blob of a push that outlasted the grace period. Raises on a dead server."""
    for _ in range(5):
        for blob in [image.config, *image.layers]:
            digest = sha256(blob)
            if client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
                continue
            start = client.post(f"/v2/{repo}/blobs/uploads/")
            if start.status_code != 202:
                ledger.errors.append(f"upload start in {repo}: {start.status_code} {start.text[:200]}")
                return False
            done = client.put(with_query(start.headers["location"], digest=digest), content=blob)
            if done.status_code != 201:
                ledger.errors.append(f"upload finish in {repo}: {done.status_code} {done.text[:200]}")
                return False
            time.sleep(rng.uniform(0, 0.02))
        response = client.put(
            f"/v2/{repo}/manifests/{tag}", content=image.manifest, headers={"content-type": OCI_MANIFEST}
        )
        if response.status_code == 201:
            return True
        if response.status_code != 400 or "MANIFEST_BLOB_UNKNOWN" not in response.text:
            ledger.errors.append(f"manifest PUT {repo}:{tag}: {response.status_code} {response.text[:200]}")
            return False
    ledger.errors.append(f"manifest PUT {repo}:{tag}: refused five times")
    return False


def client_loop(url: str, worker: int, round_no: int, rng: random.Random, shared: list[bytes], ledger: Ledger) -> None:
    """Push images, deleting every other one after its push, until the registry dies."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(1_000_000):
            repo, tag = f"crash/app{worker}", f"r{round_no}-{n}"
            reference = f"{repo}:{tag}"
            image = new_image(rng, shared)
            with ledger.lock:
                ledger.images[reference] = image
                ledger.uncertain.add(reference)
            try:
                if not push(client, repo, tag, image, rng, ledger):
                    with ledger.lock:
                        ledger.uncertain.discard(reference)  # refused, and the error recorded
                    return
                with ledger.lock:
                    ledger.committed.add(reference)
                    ledger.uncertain.discard(reference)
                if n % 2 == 1:
                    with ledger.lock:
                        ledger.uncertain.add(reference)
                    status = client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code
                    with ledger.lock:
                        ledger.uncertain.discard(reference)
                        if status == 202:
                            ledger.deleted.add(reference)
                        else:
                            ledger.errors.append(f"DELETE {reference}: {status}")
            except httpx.TransportError:
                return  # the kill: whatever was in flight stays in `uncertain`


def pulls_intact(client: httpx.Client, reference: str, image: Image) -> str | None:
    """None if the manifest by tag is the pushed one and every blob comes back whole."""
    repo, tag = reference.split(":")
    manifest = client.get(f"/v2/{repo}/manifests/{tag}", headers={"accept": OCI_MANIFEST})
    if manifest.status_code != 200 or manifest.content != image.manifest:
        return f"manifest: {manifest.status_code}"
    if manifest.headers.get("docker-content-digest") != image.digest:
        return "wrong Docker-Content-Digest"
    return broken_blob(client, repo, image)


def all_or_nothing(client: httpx.Client, reference: str, image: Image) -> str | None:
    """A push or delete the kill cut off: the manifest is gone, or it is there and pulls whole."""
    repo = reference.split(":")[0]
    if client.get(f"/v2/{repo}/manifests/{image.digest}").status_code == 404:
        return None
    broken = broken_blob(client, repo, image)
    return None if broken is None else f"manifest stored, but {broken}"


def broken_blob(client: httpx.Client, repo: str, image: Image) -> str | None:
    """The first of the image's blobs that does not come back whole, or None."""
    for blob in [image.config, *image.layers]:
        got = client.get(f"/v2/{repo}/blobs/{sha256(blob)}")
        if got.status_code != 200 or sha256(got.content) != sha256(blob):
            return f"blob {sha256(blob)}: {got.status_code}"
    return None


def stays_deleted(client: httpx.Client, reference: str, image: Image) -> str | None:
    repo, tag = reference.split(":")
    return None if client.get(f"/v2/{repo}/manifests/{tag}").status_code == 404 else "deleted, yet still served"


def verify(server: Cargohold, ledger: Ledger) -> list[str]:
    """Every reference the clients know about, checked by what they were told; the problems."""
    checks = [(r, pulls_intact) for r in ledger.committed - ledger.deleted - ledger.uncertain]
    checks += [(r, all_or_nothing) for r in ledger.uncertain]
    checks += [(r, stays_deleted) for r in ledger.deleted - ledger.uncertain]
    with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(4) as pool:
        found = pool.map(lambda check: (check[0], check[1](client, check[0], ledger.images[check[0]])), checks)
        return sorted(f"{reference}: {problem}" for reference, problem in found if problem)


def scrub(data: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "cargohold", "scrub", "--json", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    assert done.returncode == (0 if report["healthy"] else 1), done.stderr
    return report


def test_kill_9_during_pushes_and_gc_twenty_times(tmp_path: Path) -> None:
    seed = int(os.environ.get("CARGOHOLD_CRASH_SEED") or random.randrange(1 << 32))
    print(f"crash seed {seed} (rerun with CARGOHOLD_CRASH_SEED={seed})")
    rng = random.Random(seed)
    shared = [rng.randbytes(16_000) for _ in range(4)]
    ledger = Ledger()
    env = {"CARGOHOLD_GC_INTERVAL": "0.2s", "CARGOHOLD_GC_GRACE": f"{GRACE:g}s", "CARGOHOLD_UPLOAD_MAX_AGE": "1h"}
    server = Cargohold(tmp_path / "registry", extra_env=env)
    started = time.monotonic()
    collector: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        for round_no in range(ROUNDS):
            collector = subprocess.Popen(
                [sys.executable, "-c", COLLECTOR_LOOP, str(server.data), str(GRACE)], start_new_session=True
            )
            clients = [
                threading.Thread(
                    target=client_loop,
                    args=(server.url, w, round_no, random.Random(rng.random()), shared, ledger),
                )
                for w in range(PUSHERS)
            ]
            for thread in clients:
                thread.start()
            time.sleep(rng.uniform(0.3, 1.3))
            # Both crash together, mid-whatever: the server with its workers, and the collector.
            os.killpg(collector.pid, signal.SIGKILL)
            server.kill()
            collector.wait(10)
            for thread in clients:
                thread.join(60)
            assert ledger.errors == [], ledger.errors

            # One worker process or two (each with its scheduled GC) in the next life.
            server.extra_env["CARGOHOLD_WORKERS"] = str(rng.choice([1, 2]))
            server.start()  # its scheduled GC starts at once: the checks below run beside it
            with ThreadPoolExecutor(1) as background:
                scrubbed = background.submit(scrub, server.data)
                assert_store_consistent(server.data, crashed=True)
                problems = verify(server, ledger)
                report = scrubbed.result()
            assert report["healthy"], f"round {round_no}: {report}"
            assert problems == [], f"round {round_no} (seed {seed}): {problems[:10]}"
        elapsed = time.monotonic() - started
        committed = len(ledger.committed)
        ever = {sha256(b) for image in ledger.images.values() for b in [image.config, *image.layers]}
        with sqlite3.connect(server.data / "metadata.sqlite3") as db:
            stored = db.execute("SELECT count(*) FROM blob").fetchone()[0]
        print(
            f"{ROUNDS} kill -9 rounds in {elapsed:.0f}s: {committed} pushes acknowledged, "
            f"{len(ledger.deleted)} deleted, {len(ledger.uncertain)} cut off by a kill; "
            f"{len(ever)} distinct blobs in the images, {stored} still recorded (the rest collected)"
        )
        assert committed >= ROUNDS, "the clients should have completed pushes in most rounds"

        # Once the grace period is past, the leftovers of the crashes are collectable: one
        # collection and one upload expiry later the store is strictly consistent.
        time.sleep(GRACE + 0.5)
        server.stop()
        for command in (["gc", "--grace", f"{GRACE:g}s"], ["expire-uploads", "--older-than", f"{GRACE:g}s"]):
            subprocess.run(
                [sys.executable, "-m", "cargohold", *command, "--data", str(server.data)], check=True, timeout=120
            )
        assert_store_consistent(server.data)
        server.start()
        assert verify(server, ledger) == []
    finally:
        if collector is not None and collector.poll() is None:
            os.killpg(collector.pid, signal.SIGKILL)
        server.stop()
