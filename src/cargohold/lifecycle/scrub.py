"""Scrub: re-hash every stored blob and report what is corrupt, missing or unrecorded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..oci.digest import Digest
from ..storage.interfaces import BlobStore, MetadataStore

_CHUNK = 1 << 20


@dataclass
class ScrubReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)  # content does not hash to its digest
    wrong_size: list[str] = field(default_factory=list)  # stored size differs from the record
    missing: list[str] = field(default_factory=list)  # recorded, but no file
    unrecorded: list[str] = field(default_factory=list)  # a file the database does not know

    @property
    def healthy(self) -> bool:
        return not (self.corrupt or self.wrong_size or self.missing)


def _hash_file(store: BlobStore, digest: Digest) -> str:
    hasher = hashlib.new(digest.algorithm)
    with store.open_blob(digest) as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def scrub(meta: MetadataStore, store: BlobStore) -> ScrubReport:
    """Check every recorded blob against its file. Unrecorded files are listed, not judged:
    an upload finishing right now writes its file just before its record.

    Garbage collection may run meanwhile: it deletes a blob's record and then its file, so a
    file that vanished is reported missing only if its record is still there. (The records
    are read into a list first: an open cursor would keep the snapshot it started with.)"""
    report = ScrubReport()
    records = list(meta.blob_records())
    recorded = {text for text, _ in records}
    for text, size in records:
        digest = Digest.parse(text)
        stored_size = store.blob_size(digest)
        if stored_size is not None and stored_size != size:
            report.wrong_size.append(text)
            continue
        try:
            actual = None if stored_size is None else _hash_file(store, digest)
        except FileNotFoundError:
            actual = None
        if actual is None:
            if meta.blob_recorded(text):
                report.missing.append(text)
            continue
        report.checked += 1
        report.bytes_checked += size
        if actual != digest.encoded:
            report.corrupt.append(text)
    report.unrecorded = sorted(str(d) for d in store.blob_files() if str(d) not in recorded)
    return report
