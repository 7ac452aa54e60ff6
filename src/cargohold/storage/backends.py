"""Opening the configured stores: the one place that names an implementation. Everything else
takes a `MetadataStore` and a `BlobStore` (`interfaces.py`)."""

from __future__ import annotations

from pathlib import Path

from .blobstore import FilesystemBlobStore
from .interfaces import BlobStore, MetadataStore
from .metadata import SQLiteMetadataStore


def open_metadata(database: Path) -> MetadataStore:
    return SQLiteMetadataStore(database)


def open_blob_store(root: Path, fsync: bool = True) -> BlobStore:
    return FilesystemBlobStore(root, fsync=fsync)
