"""Garbage collection on a large store, and what it costs the pulls served meanwhile.

Default mode: 100,000 blobs and 10,000 manifests, built through the library (the same
metadata store and blob store the registry uses, files on disk included); half of the
manifests are deleted, then one collection is timed, the database part (marking and deleting
records) and the storage part (unlinking files) separately. Target on the project's 2-core
machine: under 30 s in all.

--pull-under-gc: a registry serves a store of 20,000 blobs and 4,000 manifests (half of them
garbage-to-be) while clients pull whole images (manifest by tag, then each blob) for a few
seconds with no GC, then for as long with a collector looping in another process, in
alternating rounds; before each GC window another batch of manifests is deleted so the
collector has garbage to free. Reported: the median pull rate of each, and the median over
rounds of with/without. Target: pulls while GC runs within 20 % of pulls without (ratio >= 0.8).
With --gc-mode serve, the GC windows are served by a second registry process on the same data
whose own scheduled GC runs every second (in a thread of the serving process).

    .venv/bin/python bench/gc_bench.py [--blobs 100000] [--manifests 10000] [--keep-temp]
    .venv/bin/python bench/gc_bench.py --pull-under-gc [--gc-mode loop|serve] [--gc-nice N] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cargohold.lifecycle.gc import collect_garbage
from cargohold.oci.digest import Digest
from cargohold.storage.blobstore import FilesystemBlobStore
from cargohold.storage.metadata import SQLiteMetadataStore
from cargohold.storage.records import ManifestRecord
from registry_bench import ManagedServer, cargohold_server

TARGET_SECONDS = 30.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def build(
    root: Path, blobs: int, manifests: int, blob_bytes: int = 24
) -> tuple[SQLiteMetadataStore, FilesystemBlobStore, list[str]]:
    """A store in `root` (the registry's data directory layout): `manifests` manifests tagged
    t0, t1, ... in repository bench/gc, sharing out `blobs` blobs of `blob_bytes` (at least 24)
    among them, every blob last used two hours ago."""
    meta = SQLiteMetadataStore(root / "metadata.sqlite3")
    store = FilesystemBlobStore(root, fsync=False)
    per_manifest = max(1, blobs // manifests)
    two_hours_ago = time.time() - 7200
    digests: list[tuple[str, int]] = []
    for i in range(blobs):
        content = os.urandom(max(16, blob_bytes - 8)) + i.to_bytes(8, "big")
        digest = Digest("sha256", hashlib.sha256(content).hexdigest())
        path = store.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        digests.append((str(digest), len(content)))
    with meta.transaction() as db:
        db.execute("INSERT INTO repository(name, created) VALUES ('bench/gc', ?)", (two_hours_ago,))
        db.executemany(
            "INSERT INTO blob(digest, size, created, last_touched) VALUES (?, ?, ?, ?)",
            [(d, size, two_hours_ago, two_hours_ago) for d, size in digests],
        )
        db.executemany(
            "INSERT INTO repository_blob(repo, digest, created) VALUES ('bench/gc', ?, ?)",
            [(d, two_hours_ago) for d, _ in digests],
        )
    manifest_digests = []
    for m in range(manifests):
        own = digests[m * per_manifest : (m + 1) * per_manifest]
        layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s} for d, s in own[1:]]
        payload = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": own[0][0],
                    "size": own[0][1],
                },
                "layers": layers,
            }
        ).encode()
        digest = str(Digest.of(payload))
        blobs_of = ((own[0][0], "config"), *((d, "layer") for d, _ in own[1:]))
        record = ManifestRecord(digest, OCI_MANIFEST, None, None, payload, blobs_of, ())
        meta.put_manifest("bench/gc", record, f"t{m}")
        manifest_digests.append(digest)
    return meta, store, manifest_digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, help="default 100,000; --pull-under-gc 20,000")
    parser.add_argument("--manifests", type=int, help="default 10,000; --pull-under-gc 4,000")
    parser.add_argument("--keep-temp", action="store_true")
    parser.add_argument("--pull-under-gc", action="store_true", help="pull throughput with and without GC running")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each pull window (--pull-under-gc)")
    parser.add_argument("--rounds", type=int, default=5, help="windows of each kind, alternating (--pull-under-gc)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent pulling connections (--pull-under-gc)")
    parser.add_argument(
        "--gc-mode",
        choices=["loop", "serve"],
        default="loop",
        help="--pull-under-gc: a collector looping in another process, or serve's own GC every second",
    )
    parser.add_argument(
        "--gc-nice", type=int, default=10, help="niceness of the collector loop; 10 is what `cargohold gc` takes"
    )
    parser.add_argument("--quick", action="store_true", help="a small store and 1 s windows: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the --pull-under-gc figures as JSON")
    args = parser.parse_args()
    if args.pull_under_gc:
        pull_main(args)
        return
    args.blobs = args.blobs or 100_000
    args.manifests = args.manifests or 10_000
    root = Path(tempfile.mkdtemp(prefix="cargohold-gc-bench-"))
    try:
        started = time.perf_counter()
        meta, store, manifests = build(root, args.blobs, args.manifests)
        print(f"built {args.blobs:,} blobs and {args.manifests:,} manifests in {time.perf_counter() - started:.1f}s")
        for digest in manifests[::2]:
            meta.delete_manifest("bench/gc", digest)
        with meta.transaction() as db:  # pushes long past: outside the grace period
            db.execute("UPDATE blob SET last_touched = last_touched - 7200")
        os.sync()
        dry = collect_garbage(meta, store, grace=3600, dry_run=True)
        started = time.perf_counter()
        report = collect_garbage(meta, store, grace=3600)
        total = time.perf_counter() - started
        print(f"dry run: {dry.summary()}")
        print(f"collect: {report.summary()}")
        verdict = "PASS" if total < TARGET_SECONDS else "MISS"
        print(
            f"total {total:.2f}s (database {report.database_seconds:.2f}s, storage {report.storage_seconds:.2f}s); "
            f"goal < {TARGET_SECONDS:g}s: {verdict}"
        )
        meta.close()
    finally:
        if args.keep_temp:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- pull throughput while GC runs

# A collector in its own process, looping like `cargohold gc` run back to back (which lowers its
# own priority by 10, as --gc-nice does by default); it says when
# its imports are done so that start-up is not counted in the window.
COLLECTOR_LOOP = """
import os, signal, sys
from pathlib import Path
from cargohold.lifecycle.gc import collect_garbage
from cargohold.storage.blobstore import FilesystemBlobStore
from cargohold.storage.metadata import SQLiteMetadataStore
data = Path(sys.argv[1])
os.nice(int(sys.argv[2]))
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job inherits it ignored
meta, store = SQLiteMetadataStore(data / "metadata.sqlite3"), FilesystemBlobStore(data)
print("ready", flush=True)
passes = freed = 0
try:
    while True:
        freed += collect_garbage(meta, store, grace=3600).blobs
        passes += 1
except KeyboardInterrupt:
    print(passes, freed, flush=True)
"""


def start_registry(root: Path, name: str, gc_interval: str = "0") -> ManagedServer:
    """cargohold serving the store at `root`, logging to `root/name/server.log`; its own
    scheduled GC is off unless `gc_interval` says otherwise."""
    # Auth off: this measures what GC costs pulls, not what auth costs.
    server = cargohold_server(root / name, sys.executable, {"CARGOHOLD_GC_INTERVAL": gc_interval}, data=root)
    server.start()
    return server


def _pull_worker(port: int, tags: list[str], seconds: float, threads: int, results: Any) -> None:
    """One client process: `threads` keep-alive connections, each pulling random whole images
    (manifest by tag, then every blob) until the time is up."""
    deadline = time.monotonic() + seconds
    totals = {"images": 0, "requests": 0, "bytes": 0, "errors": 0}
    lock = threading.Lock()

    def puller(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        images = requests = size = errors = 0
        while time.monotonic() < deadline:
            conn.request("GET", f"/v2/bench/gc/manifests/{rng.choice(tags)}", headers={"Accept": OCI_MANIFEST})
            response = conn.getresponse()
            body = response.read()
            requests += 1
            if response.status != 200:
                errors += 1
                continue
            manifest = json.loads(body)
            for descriptor in [manifest["config"], *manifest["layers"]]:
                conn.request("GET", f"/v2/bench/gc/blobs/{descriptor['digest']}")
                response = conn.getresponse()
                blob = response.read()
                requests += 1
                size += len(blob)
                if response.status != 200 or len(blob) != descriptor["size"]:
                    errors += 1
            images += 1
        conn.close()
        with lock:
            for key, value in zip(totals, (images, requests, size, errors), strict=True):
                totals[key] += value

    workers = [threading.Thread(target=puller, args=(os.getpid() * 1000 + i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(totals)


def pull_window(port: int, tags: list[str], seconds: float, clients: int) -> dict[str, float]:
    """Pull for `seconds` from two client processes (one process alone is GIL-bound)."""
    results: multiprocessing.Queue[dict[str, int]] = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=_pull_worker, args=(port, tags, seconds, max(1, clients // 2), results))
        for _ in range(2)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    totals = [results.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    elapsed = max(time.monotonic() - started, seconds)
    summed = {key: sum(t[key] for t in totals) for key in totals[0]}
    return {
        "images_per_s": summed["images"] / elapsed,
        "requests_per_s": summed["requests"] / elapsed,
        "MBps": summed["bytes"] / elapsed / 1e6,
        "errors": summed["errors"],
    }


def pull_main(args: argparse.Namespace) -> None:
    blobs = args.blobs or (500 if args.quick else 20_000)
    manifests = args.manifests or (100 if args.quick else 4_000)
    seconds = 1.0 if args.quick else args.seconds
    rounds = 1 if args.quick else args.rounds
    root = Path(tempfile.mkdtemp(prefix="cargohold-pull-gc-bench-"))
    server: ManagedServer | None = None
    try:
        started = time.perf_counter()
        meta, _, digests = build(root, blobs, manifests, blob_bytes=16 * 1024)
        # The first half is pulled; the second half is garbage-to-be, deleted batch by batch.
        kept = [f"t{m}" for m in range(manifests // 2)]
        doomed = list(range(manifests // 2, manifests))
        batch = max(1, len(doomed) // (rounds + 1))
        with meta.transaction() as db:  # the garbage-to-be was last used long ago (the tags kept it)
            db.executemany(
                "UPDATE blob SET last_touched = last_touched - 7200 WHERE digest IN "
                "(SELECT child FROM manifest_ref WHERE repo = 'bench/gc' AND manifest = ?)",
                [(digests[m],) for m in doomed],
            )
        collector_text = "serve's own GC every second" if args.gc_mode == "serve" else f"a loop at nice {args.gc_nice}"
        print(
            f"built {blobs:,} blobs of 16 KiB and {manifests:,} manifests in {time.perf_counter() - started:.1f}s; "
            f"pulling the {len(kept):,} kept images with {args.clients} connections, {rounds} round(s) of "
            f"{seconds:g} s without and with GC ({collector_text}); {batch} manifests deleted before each GC window"
        )
        server = start_registry(root, "server")
        port = server.port
        # Warm-up: the page cache, and the first read of each kept blob refreshes its last use.
        pull_window(port, kept, max(1.0, seconds / 2), args.clients)
        without: list[dict[str, float]] = []
        with_gc: list[dict[str, float]] = []
        passes = freed = 0
        for round_no in range(rounds):
            # Alternate which goes first, so drift in the machine's speed hits both alike.
            for gc_on in (False, True) if round_no % 2 == 0 else (True, False):
                if not gc_on:
                    without.append(pull_window(port, kept, seconds, args.clients))
                    print(f"  round {round_no + 1} without GC: {fmt_window(without[-1])}")
                    continue
                if args.gc_mode == "serve":
                    # A second server on the same data, collecting every second in a thread of
                    # the serving process, serves this window; the first one has GC off.
                    gc_server = start_registry(root, f"server-gc-{round_no}", gc_interval="1s")
                    for m in doomed[:batch]:
                        meta.delete_manifest("bench/gc", digests[m])
                    doomed = doomed[batch:]
                    with_gc.append(pull_window(gc_server.port, kept, seconds, args.clients))
                    gc_server.stop()
                    round_freed = sum(
                        int(n) for n in re.findall(r"manifest\(s\), (\d+) blob", gc_server.log.read_text())
                    )
                    freed += round_freed
                    with_gc[-1] |= {"gc_freed_blobs": round_freed}
                    print(f"  round {round_no + 1} with GC:    {fmt_window(with_gc[-1])}, "
                          f"serve's GC freed {round_freed} blobs")  # fmt: skip
                    continue
                for m in doomed[:batch]:
                    meta.delete_manifest("bench/gc", digests[m])
                doomed = doomed[batch:]
                collector = subprocess.Popen(
                    [sys.executable, "-c", COLLECTOR_LOOP, str(root), str(args.gc_nice)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert collector.stdout is not None
                if collector.stdout.readline().strip() != "ready":
                    raise SystemExit("the collector loop did not start")
                with_gc.append(pull_window(port, kept, seconds, args.clients))
                collector.send_signal(signal.SIGINT)
                done, _ = collector.communicate(timeout=60)
                round_passes, round_freed = (int(x) for x in done.split())
                passes += round_passes
                freed += round_freed
                with_gc[-1] |= {"gc_passes": round_passes, "gc_freed_blobs": round_freed}
                print(f"  round {round_no + 1} with GC:    {fmt_window(with_gc[-1])}, "
                      f"{round_passes} GC passes freed {round_freed} blobs")  # fmt: skip
        meta.close()
        median_without = statistics.median(w["images_per_s"] for w in without)
        median_with = statistics.median(w["images_per_s"] for w in with_gc)
        mbps_without = statistics.median(w["MBps"] for w in without)
        mbps_with = statistics.median(w["MBps"] for w in with_gc)
        # Each round's GC window against the same round's window without: adjacent windows see
        # the same machine, so the median of these pairs resists the machine's drift best.
        pairs = [w["images_per_s"] / o["images_per_s"] for w, o in zip(with_gc, without, strict=True)]
        ratio = statistics.median(pairs)
        errors = sum(w["errors"] for w in without + with_gc)
        verdict = "PASS" if ratio >= 0.8 and errors == 0 else "MISS"
        print(
            f"pulls without GC: {median_without:,.0f} images/s ({mbps_without:,.1f} MB/s); "
            f"with {collector_text}: {median_with:,.0f} images/s ({mbps_with:,.1f} MB/s); "
            f"ratio {ratio:.2f} (median of {rounds} rounds' with/without: "
            f"{', '.join(f'{r:.2f}' for r in pairs)}); "
            + (f"{passes} GC passes " if args.gc_mode == "loop" else "GC ")
            + f"freed {freed} blobs; "
            f"{errors} failed pulls; goal >= 0.80: {verdict}"
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "blobs": blobs,
                        "manifests": manifests,
                        "seconds": seconds,
                        "rounds": rounds,
                        "gc_mode": args.gc_mode,
                        "gc_nice": args.gc_nice,
                        "without_gc": without,
                        "with_gc": with_gc,
                        "images_per_s_without_gc": median_without,
                        "images_per_s_with_gc": median_with,
                        "ratio": ratio,
                        "round_ratios": pairs,
                        "gc_passes": passes,
                        "gc_freed_blobs": freed,
                        "errors": errors,
                    },
                    indent=2,
                )
                + "\n"
            )
    finally:
        if server is not None:
            server.stop()
        if args.keep_temp:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def fmt_window(window: dict[str, float]) -> str:
    return (
        f"{window['images_per_s']:,.0f} images/s, {window['requests_per_s']:,.0f} req/s, "
        f"{window['MBps']:,.1f} MB/s, {window['errors']:.0f} errors"
    )


if __name__ == "__main__":
    main()
