"""Opening the configured stores: the one place above the backends that names one. Everything
else takes a `MetadataStore` and a `BlobStore` (`interfaces.py`)."""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .blobstore import FilesystemBlobStore
from .interfaces import BlobStore, MetadataStore
from .locks import FileLocks, Locks, PostgresLocks
from .metadata import SQLMetadataStore
from .records import BackendUnavailable, StorageFullError
from .sql import Database
from .sqlite import SQLiteDatabase

# How long a presigned blob URL stays valid: long enough for a slow client to start.
REDIRECT_SECONDS = 600

# The default `database_timeout` (config.py): the longest a request waits on the database.
DATABASE_TIMEOUT = 10.0


def open_database(database: Path | str, timeout: float = DATABASE_TIMEOUT) -> Database:
    """An SQLite file, or a PostgreSQL database by URL (`postgresql://user@host:port/name`).
    `timeout` bounds every wait on it (a connection, a statement, the write lock)."""
    if isinstance(database, str) and database.startswith("postgresql://"):
        from .postgres import PostgresDatabase  # psycopg loads only for PostgreSQL

        return PostgresDatabase(database, timeout=timeout)
    return SQLiteDatabase(Path(database), timeout=timeout)


def open_metadata(database: Path | str | Database, timeout: float = DATABASE_TIMEOUT) -> MetadataStore:
    """The metadata store on a database (opened here from a path or URL, or a handle shared
    with the access-control store)."""
    handle = database if not isinstance(database, (str, Path)) else open_database(database, timeout)
    return SQLMetadataStore(handle)


def advance_identities(database: Database, columns: list[tuple[str, str]]) -> None:
    """After rows were inserted with explicit ids, (table, column) pairs: the database's own id
    generation continues past the largest. PostgreSQL's identity sequences must be moved;
    SQLite's INTEGER PRIMARY KEY follows max(id) by itself."""
    if isinstance(database, SQLiteDatabase):
        return
    with database.transaction() as db:
        for table, column in columns:
            db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), max({column})) "
                f"FROM {table} HAVING max({column}) IS NOT NULL"
            )


def open_locks(database: Path | str, directory: Path) -> Locks:
    """Locks as wide as the database is shared: PostgreSQL's for a fleet, files on one machine."""
    if isinstance(database, str) and database.startswith("postgresql://"):
        return PostgresLocks(database)
    return FileLocks(directory)


@dataclass(frozen=True, slots=True)
class BucketSettings:
    bucket: str
    prefix: str = ""
    endpoint: str = ""  # empty for AWS
    region: str = "us-east-1"
    redirect: bool = False  # downloads answered with presigned URLs
    timeout: float = 10.0  # per call, tried twice


def open_blob_store(
    root: Path, fsync: bool = True, bucket: BucketSettings | None = None, database: Path | str = ""
) -> BlobStore:
    """Files under `root`, or a bucket (its locks as wide as `database` is shared)."""
    if bucket is None:
        return FilesystemBlobStore(root, fsync=fsync)
    from .s3 import S3BlobStore, s3_client  # boto3 loads only for S3

    return S3BlobStore(
        s3_client(bucket.endpoint, bucket.region, bucket.timeout),
        bucket.bucket,
        bucket.prefix,
        open_locks(database, root / "locks"),
        redirect_seconds=REDIRECT_SECONDS if bucket.redirect else 0,
    )


def storage_failure(err: BaseException) -> BackendUnavailable | StorageFullError | None:
    """What a backend's own exception means to a caller, when it is one of the two failures that
    are not bugs: out of space, or a dependency busy or down (retry later). The PostgreSQL store
    raises those itself; SQLite's connection is used as it is, so its errors are read here."""
    if isinstance(err, (BackendUnavailable, StorageFullError)):
        return err
    if isinstance(err, sqlite3.OperationalError):
        text = str(err)
        if "full" in text:  # "database or disk is full"
            return StorageFullError(errno.ENOSPC, "the database's disk is full")
        if "locked" in text or "busy" in text:  # another writer held the lock past the busy timeout
            return BackendUnavailable("database", "another writer held the lock too long")
    return None
