"""Opening the configured stores: the one place above the backends that names one. Everything
else takes a `MetadataStore` and a `BlobStore` (`interfaces.py`)."""

from __future__ import annotations

from pathlib import Path

from .blobstore import FilesystemBlobStore
from .interfaces import BlobStore, MetadataStore
from .metadata import SQLiteMetadataStore


def open_metadata(database: Path | str) -> MetadataStore:
    """An SQLite file, or a PostgreSQL database by URL (`postgresql://user@host:port/name`)."""
    if isinstance(database, str) and database.startswith("postgresql://"):
        from .postgres import PostgresMetadataStore  # psycopg loads only for PostgreSQL

        return PostgresMetadataStore(database)
    return SQLiteMetadataStore(Path(database))


def open_blob_store(root: Path, fsync: bool = True) -> BlobStore:
    return FilesystemBlobStore(root, fsync=fsync)
