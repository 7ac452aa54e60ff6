"""Opening the configured stores: the one place above the backends that names one. Everything
else takes a `MetadataStore` and a `BlobStore` (`interfaces.py`)."""

from __future__ import annotations

from pathlib import Path

from .blobstore import FilesystemBlobStore
from .interfaces import BlobStore, MetadataStore
from .metadata import SQLMetadataStore
from .sql import Database
from .sqlite import SQLiteDatabase


def open_database(database: Path | str) -> Database:
    """An SQLite file, or a PostgreSQL database by URL (`postgresql://user@host:port/name`)."""
    if isinstance(database, str) and database.startswith("postgresql://"):
        from .postgres import PostgresDatabase  # psycopg loads only for PostgreSQL

        return PostgresDatabase(database)
    return SQLiteDatabase(Path(database))


def open_metadata(database: Path | str | Database) -> MetadataStore:
    """The metadata store on a database (opened here from a path or URL, or a handle shared
    with the access-control store)."""
    handle = database if not isinstance(database, (str, Path)) else open_database(database)
    return SQLMetadataStore(handle)


def open_blob_store(root: Path, fsync: bool = True) -> BlobStore:
    return FilesystemBlobStore(root, fsync=fsync)
