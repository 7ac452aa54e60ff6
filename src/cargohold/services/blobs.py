"""Blob reads and unlinks through a repository."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from ..storage.events import Actor
from ..storage.interfaces import BlobStore, MetadataStore

log = logging.getLogger("cargohold.registry")


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: Digest
    size: int
    path: Path | None  # a file on this machine, when the store keeps one
    url: str | None  # where the client may fetch it directly, when the store offers it


class BlobService:
    def __init__(self, meta: MetadataStore, blobs: BlobStore, gc_grace: float) -> None:
        self.meta = meta
        self.blobs = blobs
        self.gc_grace = gc_grace

    def find(self, name: str, digest: Digest) -> StoredBlob:
        """The blob `name` may serve; BLOB_UNKNOWN when it holds none, or a damaged one."""
        # A blob someone reads may be about to be referenced: keep it out of garbage collection.
        size = self.meta.blob_size(name, str(digest), refresh_before=time.time() - self.gc_grace / 2)
        if size is None:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in {name}")
        stored = self.blobs.blob_size(digest)
        if stored != size:
            # Never serve content that cannot be what was pushed; say so where operators look.
            log.error("blob %s is damaged: recorded %d bytes, stored %s; run `cargohold scrub`", digest, size, stored)
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is damaged in storage and cannot be served")
        return StoredBlob(digest, size, self.blobs.local_file(digest), self.blobs.blob_url(digest))

    def open(self, blob: StoredBlob, offset: int, length: int) -> BinaryIO:
        return self.blobs.open_blob(blob.digest, offset, length)

    def unlink(self, name: str, digest: Digest, actor: Actor) -> None:
        """Take the blob out of `name`; its bytes go at the next GC if nothing else uses them."""
        if not self.meta.unlink_blob(name, str(digest), actor):
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in {name}")
