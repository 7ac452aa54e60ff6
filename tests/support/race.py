"""The GC race of issue 4, for any registry: clients push images (shared and unique layers)
in parallel while a garbage collector runs in a loop in another process and other clients
delete images; then every image whose tag survives is pulled through skopeo.

Used by tests/test_gc_race.py (which asserts cargohold's side strictly) and by
bench/gc_race.py (which runs it against cargohold and Debian's docker-registry side by side).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.oci import OCI_MANIFEST, Image, canonical, image_of, sha256, with_query


@dataclass(frozen=True)
class RaceTarget:
    """A running registry, the command that collects its garbage, and a way to list its blob files."""

    name: str
    url: str
    host: str
    gc_command: list[str]
    blob_files: Callable[[], set[str]]  # digests of every blob file in its storage
    manifests_in_blob_store: bool  # Distribution stores manifests as blobs; cargohold in its database
    freed: Callable[[str], int]  # blobs one collector run says it deleted, from its output


@dataclass
class RaceResult:
    registry: str
    gc_pause: float = 0.0  # seconds between the end of one collector run and the next
    images: int = 0
    pushed: int = 0  # manifest PUT answered 201 (possibly after retries)
    push_failures: list[str] = field(default_factory=list)  # never got their 201
    manifest_retries: int = 0  # manifest PUTs refused because a blob had gone, then sent again
    uploads_refused: int = 0  # blob uploads that did not end in 201
    deleted: int = 0  # DELETE answered 202
    tags_expected: int = 0  # pushed and not deleted
    tags_surviving: int = 0  # tags the registry lists afterwards
    lost_tags: list[str] = field(default_factory=list)  # pushed, never deleted, but gone
    undead_tags: list[str] = field(default_factory=list)  # deleted, but still listed
    pull_failures: list[str] = field(default_factory=list)  # listed, but skopeo cannot pull it intact
    gc_runs: int = 0
    gc_freed_blobs: int = 0  # what the collector loop deleted while the pushes ran
    gc_failures: int = 0  # collector runs that exited non-zero
    gc_errors: list[str] = field(default_factory=list)  # a few of their messages
    unreferenced_blobs: int = 0  # blob files no surviving image uses, after a final quiet collection
    missing_blobs: int = 0  # blobs surviving images use that have no file
    push_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def images_failing(self) -> int:
        return len(self.lost_tags) + len(self.pull_failures)


def image_with(shared: list[bytes], rng: random.Random, unique_size: int) -> Image:
    """An image with one or two of the shared layers and one layer and config of its own."""
    config = canonical({"architecture": "amd64", "os": "linux", "nonce": rng.randbytes(16).hex()})
    layers = [*rng.sample(shared, rng.randint(1, 2)), rng.randbytes(unique_size)]
    return image_of(config, layers)


def make_images(count: int, repos: int, seed: int) -> dict[str, Image]:
    """`repo:tag` -> image; every third one (t0, t3, ...) is deleted during the race."""
    rng = random.Random(seed)
    shared = [rng.randbytes(24_000) for _ in range(6)]
    return {f"race/app{i % repos}:t{i}": image_with(shared, rng, 2_000 + rng.randrange(6_000)) for i in range(count)}


def doomed(reference: str) -> bool:
    return int(reference.rsplit(":t", 1)[1]) % 3 == 0


def _upload(client: httpx.Client, repo: str, blob: bytes) -> bool:
    """POST then PUT with the body: the monolithic upload every registry supports."""
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    if start.status_code != 202:
        return False
    done = client.put(with_query(start.headers["location"], digest=sha256(blob)), content=blob)
    return done.status_code == 201


def push(client: httpx.Client, reference: str, image: Image, rng: random.Random) -> tuple[bool, int, int]:
    """Push like a real client: HEAD each blob, upload the missing ones, PUT the manifest. A
    registry that lost a blob in between refuses the manifest; the client then checks its blobs
    again and resends. Returns (got 201, manifest retries, blob uploads refused)."""
    repo, tag = reference.split(":")
    retries = refused = 0
    for attempt in range(8):
        for blob in [image.config, *image.layers]:
            if client.head(f"/v2/{repo}/blobs/{sha256(blob)}").status_code != 200 and not _upload(client, repo, blob):
                refused += 1
            time.sleep(rng.uniform(0, 0.03))  # clients pause between requests; it widens the race
        response = client.put(
            f"/v2/{repo}/manifests/{tag}", content=image.manifest, headers={"content-type": OCI_MANIFEST}
        )
        if response.status_code == 201:
            return True, retries, refused
        retries += 1
        time.sleep(0.05 * (attempt + 1))
    return False, retries, refused


class CollectorLoop:
    """Runs the registry's garbage collector again and again in child processes until stopped."""

    def __init__(
        self,
        command: list[str],
        freed: Callable[[str], int],
        env: Mapping[str, str] | None = None,
        pause: float = 0.0,
    ) -> None:
        self.command = command
        self.pause = pause
        self.parse_freed = freed
        self.env = dict(env) if env is not None else None
        self.runs = 0
        self.freed = 0
        self.failures = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(self.command, capture_output=True, text=True, env=self.env, timeout=300)
            self.runs += 1
            self.freed += self.parse_freed(done.stdout)
            if done.returncode != 0:
                self.failures += 1
                if len(self.errors) < 3:
                    self.errors.append((done.stderr or done.stdout)[-400:])
            self._stop.wait(self.pause)

    def __enter__(self) -> CollectorLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def skopeo_pull(host: str, reference: str, image: Image, env: Mapping[str, str] | None) -> str | None:
    """Copy the tag into a dir: layout with skopeo (which checks every blob's digest as it reads),
    then check the manifest is the pushed one and every blob file is intact; None if all is well,
    else what went wrong."""
    out = Path(tempfile.mkdtemp(prefix="race-pull-"))
    try:
        done = subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
             f"docker://{host}/{reference}", f"dir:{out}/image"],
            capture_output=True, text=True, env=dict(env) if env else None, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        manifest = (out / "image" / "manifest.json").read_bytes()
        if sha256(manifest) != image.digest:
            return f"manifest {sha256(manifest)} is not the pushed {image.digest}"
        for blob in [image.config, *image.layers]:
            path = out / "image" / sha256(blob).removeprefix("sha256:")
            if not path.exists() or hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(blob).digest():
                return f"blob {sha256(blob)} missing or altered"
        return None
    finally:
        shutil.rmtree(out, ignore_errors=True)


def listed_tags(client: httpx.Client, repos: set[str]) -> set[str]:
    found: set[str] = set()
    for repo in repos:
        response = client.get(f"/v2/{repo}/tags/list")
        if response.status_code == 200:
            found |= {f"{repo}:{tag}" for tag in response.json().get("tags") or []}
    return found


def run_race(
    target: RaceTarget,
    images: dict[str, Image],
    *,
    grace: float,
    pushers: int = 16,
    seed: int = 0,
    gc_pause: float = 0.0,
    collector_env: Mapping[str, str] | None = None,
    skopeo_env: Mapping[str, str] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> RaceResult:
    started = time.monotonic()
    result = RaceResult(target.name, gc_pause, images=len(images))
    deletions: queue.Queue[str | None] = queue.Queue()
    deleted: set[str] = set()
    pushed: set[str] = set()
    lock = threading.Lock()

    def push_one(reference: str) -> None:
        rng = random.Random(f"{seed}:{reference}")
        with httpx.Client(base_url=target.url, timeout=120) as client:
            ok, retries, refused = push(client, reference, images[reference], rng)
        with lock:
            result.manifest_retries += retries
            result.uploads_refused += refused
            if ok:
                pushed.add(reference)
            else:
                result.push_failures.append(reference)
        if ok and doomed(reference):
            deletions.put(reference)

    def deleter() -> None:
        with httpx.Client(base_url=target.url, timeout=120) as client:
            while (reference := deletions.get()) is not None:
                repo = reference.split(":")[0]
                # By digest: Distribution cannot delete a tag alone; both drop the manifest's tags.
                if client.delete(f"/v2/{repo}/manifests/{images[reference].digest}").status_code == 202:
                    with lock:
                        deleted.add(reference)

    with CollectorLoop(target.gc_command, target.freed, collector_env, gc_pause) as collector:
        deleters = [threading.Thread(target=deleter) for _ in range(2)]
        for thread in deleters:
            thread.start()
        with ThreadPoolExecutor(pushers) as pool:
            list(pool.map(push_one, images))
        for _ in deleters:
            deletions.put(None)
        for thread in deleters:
            thread.join()
    result.push_seconds = time.monotonic() - started
    result.gc_runs, result.gc_failures, result.gc_errors = collector.runs, collector.failures, collector.errors
    result.gc_freed_blobs = collector.freed
    result.pushed, result.deleted = len(pushed), len(deleted)
    log(
        f"{target.name}: pushed {len(pushed)}/{len(images)} in {result.push_seconds:.1f}s, "
        f"{collector.runs} collections ({collector.failures} failed) freed {collector.freed} blobs, "
        f"{result.manifest_retries} manifest retries"
    )

    # A final collection once the pushes are over and the grace period has passed: whatever
    # is unreferenced now must go, and nothing referenced may.
    time.sleep(grace + 0.5)
    final = subprocess.run(target.gc_command, capture_output=True, text=True, env=collector_env, timeout=300)
    if final.returncode != 0:
        result.gc_failures += 1
        result.gc_errors.append(final.stderr[-400:])

    expected = pushed - deleted
    needed: set[str] = set()
    for reference in expected:
        image = images[reference]
        needed |= {sha256(b) for b in [image.config, *image.layers]}
        if target.manifests_in_blob_store:
            needed.add(image.digest)
    files = target.blob_files()
    result.unreferenced_blobs = len(files - needed)
    result.missing_blobs = len(needed - files)

    with httpx.Client(base_url=target.url, timeout=60) as client:
        listed = listed_tags(client, {reference.split(":")[0] for reference in images})
    result.tags_expected = len(expected)
    result.tags_surviving = len(listed)
    result.lost_tags = sorted(expected - listed)
    result.undead_tags = sorted(listed & deleted)

    def pull(reference: str) -> tuple[str, str | None]:
        return reference, skopeo_pull(target.host, reference, images[reference], skopeo_env)

    with ThreadPoolExecutor(4) as pool:
        for reference, problem in pool.map(pull, sorted(listed & set(images))):
            if problem is not None:
                result.pull_failures.append(f"{reference}: {problem}")
    result.seconds = time.monotonic() - started
    return result


def cargohold_blob_files(data: Path) -> set[str]:
    return {f"{path.parent.parent.name}:{path.name}" for path in (data / "blobs").glob("*/*/*") if path.name != ".lock"}


def distribution_blob_files(root: Path) -> set[str]:
    """Distribution keeps each blob (manifests included) at docker/registry/v2/blobs/<alg>/<xx>/<hex>/data."""
    blobs = root / "docker" / "registry" / "v2" / "blobs"
    return {f"{path.parent.parent.parent.name}:{path.parent.name}" for path in blobs.glob("*/*/*/data")}


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")


def cargohold_freed(output: str) -> int:
    """Blobs one `cargohold gc --json` run freed."""
    try:
        return int(json.loads(output)["blobs"])
    except (ValueError, KeyError):
        return 0


def distribution_freed(output: str) -> int:
    """Blobs one `docker-registry garbage-collect` run deleted (it prints "N blobs and M manifests
    eligible for deletion" and then a line per blob)."""
    found = re.search(r"(\d+) blobs and \d+ manifests eligible for deletion", output)
    return int(found[1]) if found else 0
