"""Opening the configured stores: the one place above the backends that names one. Everything
else takes a `MetadataStore` and a `BlobStore` (`interfaces.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .blobstore import FilesystemBlobStore
from .interfaces import BlobStore, MetadataStore
from .locks import FileLocks, Locks, PostgresLocks
from .metadata import SQLMetadataStore
from .sql import Database
from .sqlite import SQLiteDatabase

# How long a presigned blob URL stays valid: long enough for a slow client to start.
REDIRECT_SECONDS = 600


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


def open_blob_store(
    root: Path, fsync: bool = True, bucket: BucketSettings | None = None, database: Path | str = ""
) -> BlobStore:
    """Files under `root`, or a bucket (its locks as wide as `database` is shared)."""
    if bucket is None:
        return FilesystemBlobStore(root, fsync=fsync)
    from .s3 import S3BlobStore, s3_client  # boto3 loads only for S3

    return S3BlobStore(
        s3_client(bucket.endpoint, bucket.region),
        bucket.bucket,
        bucket.prefix,
        open_locks(database or root / "metadata.sqlite3", root / "locks"),
        redirect_seconds=REDIRECT_SECONDS if bucket.redirect else 0,
    )
