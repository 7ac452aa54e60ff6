"""Online garbage collection: safe while pushes run, never from a storage walk alone.

Unreachable manifests go first (referrers whose subject is gone; untagged manifests past an
age, when configured), which may leave their blobs unreferenced. A blob goes when no
manifest in any repository references it and nothing has used it for the grace period.
Its record goes first, in small transactions that re-check the condition; its file goes
after, under the digest prefix's lock, and only if no new record appeared meanwhile
(docs/architecture.md explains the race this closes). Files with no record at all, left by
a crash between the two steps, go once they are older than the grace period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..oci.digest import Digest
from ..oci.errors import RegistryError
from ..storage.interfaces import BlobStore, MetadataStore

BATCH = 500


@dataclass
class GCReport:
    dry_run: bool
    manifests: int = 0
    manifest_list: list[str] = field(default_factory=list)  # as repo@digest
    blobs: int = 0
    bytes: int = 0
    orphan_files: int = 0
    database_seconds: float = 0.0
    storage_seconds: float = 0.0

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        return (
            f"{verb} {self.manifests} manifest(s), {self.blobs} blob(s), {self.bytes:,} bytes, "
            f"and {self.orphan_files} unrecorded file(s) "
            f"(database {self.database_seconds:.2f}s, storage {self.storage_seconds:.2f}s)"
        )


def collect_garbage(
    meta: MetadataStore,
    store: BlobStore,
    grace: float,
    dry_run: bool = False,
    now: float | None = None,
    untagged_age: float = 0,
) -> GCReport:
    """Collect manifests nothing keeps alive (see `delete_unreachable_manifests`; untagged
    ones only when `untagged_age` > 0), then blobs nothing references, then stray files.

    A dry run reports the same three, including the blobs that only the doomed manifests
    reference, and changes nothing."""
    now = time.time() if now is None else now
    cutoff = now - grace
    report = GCReport(dry_run)
    untagged_before = now - untagged_age if untagged_age > 0 else None

    def unrecorded(digest: Digest) -> bool:
        return not meta.blob_recorded(str(digest))

    if dry_run:
        started = time.perf_counter()
        report.manifest_list, blobs = meta.collection_preview(cutoff, untagged_before, cutoff)
        report.manifests = len(report.manifest_list)
        report.blobs = len(blobs)
        report.bytes = sum(size for _, size in blobs)
        report.database_seconds += time.perf_counter() - started
    else:
        started = time.perf_counter()
        report.manifest_list = meta.delete_unreachable_manifests(cutoff, untagged_before)
        report.manifests = len(report.manifest_list)
        report.database_seconds += time.perf_counter() - started
        while True:
            started = time.perf_counter()
            batch = meta.delete_unreferenced_blobs(cutoff, BATCH)
            report.database_seconds += time.perf_counter() - started
            started = time.perf_counter()
            sizes = {Digest.parse(text): size for text, size in batch}
            gone = store.reclaim(sizes, unrecorded)
            report.blobs += len(gone)
            report.bytes += sum(sizes[digest] for digest in gone)
            report.storage_seconds += time.perf_counter() - started
            if len(batch) < BATCH:
                break

    # Files with no record: compare the walk with one snapshot of the records, then look
    # closer (age, a locked re-check in `reclaim`) only at the few names it lacks.
    started = time.perf_counter()
    recorded = meta.blob_digests()
    strays = []
    for name in store.blob_file_names():
        if name in recorded:
            continue
        try:
            digest = Digest.parse(name)
        except RegistryError:
            continue  # not a blob (the prefix lock file)
        if (mtime := store.blob_mtime(digest)) is not None and mtime < cutoff and unrecorded(digest):
            strays.append(digest)
    report.orphan_files = len(strays) if dry_run else len(store.reclaim(strays, unrecorded))
    report.storage_seconds += time.perf_counter() - started
    return report
