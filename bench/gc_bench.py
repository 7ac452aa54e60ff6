"""Garbage collection on a large store: 100,000 blobs and 10,000 manifests by default.

Builds the store through the library (the same metadata store and blob store the registry
uses, files on disk included), deletes half of the manifests, then times one collection,
reporting the database part (marking and deleting records) and the storage part (unlinking
files) separately. Target on the project's 2-core machine: under 30 s in all.

    .venv/bin/python bench/gc_bench.py [--blobs 100000] [--manifests 10000] [--keep-temp]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from cargohold.lifecycle.gc import collect_garbage
from cargohold.oci.digest import Digest
from cargohold.storage.blobstore import FilesystemBlobStore
from cargohold.storage.metadata import ManifestRecord, SQLiteMetadataStore

TARGET_SECONDS = 30.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def build(root: Path, blobs: int, manifests: int) -> tuple[SQLiteMetadataStore, FilesystemBlobStore, list[str]]:
    meta = SQLiteMetadataStore(root / "metadata.sqlite3")
    store = FilesystemBlobStore(root, fsync=False)
    per_manifest = max(1, blobs // manifests)
    two_hours_ago = time.time() - 7200
    digests: list[tuple[str, int]] = []
    for i in range(blobs):
        content = os.urandom(16) + i.to_bytes(8, "big")
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
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": own[0][0], "size": 24},
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
    parser.add_argument("--blobs", type=int, default=100_000)
    parser.add_argument("--manifests", type=int, default=10_000)
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
