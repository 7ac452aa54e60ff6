"""The backends every storage contract test runs against. A new backend is one more parameter
here; its store must then pass every test of the suite unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cargohold.storage.backends import open_database, open_metadata
from cargohold.storage.blobstore import FilesystemBlobStore
from cargohold.storage.interfaces import BlobStore, MetadataStore
from cargohold.storage.locks import FileLocks, Locks, PostgresLocks
from cargohold.storage.s3 import MIN_PART_SIZE, S3BlobStore, s3_client
from cargohold.storage.sql import Database
from tests.support.postgres import PostgresServer
from tests.support.s3 import REGION, S3Server

# Opens one more handle on the same database, as another worker process or replica would.
OpenMetadata = Callable[[], MetadataStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_metadata_handle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenMetadata]:
    opened: list[MetadataStore] = []
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database()

    def open_one() -> MetadataStore:
        store = open_metadata(url if request.param == "postgresql" else tmp_path / "metadata.sqlite3")
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def meta(open_metadata_handle: OpenMetadata) -> MetadataStore:
    return open_metadata_handle()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a database lives: what `open_database` takes, to open as many handles as a test needs."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.create_database()
    return tmp_path / "metadata.sqlite3"


@pytest.fixture
def database(database_target: str | Path) -> Iterator[Database]:
    """A database handle, as the access-control store gets one."""
    handle = open_database(database_target)
    yield handle
    handle.close()


@pytest.fixture(params=["filesystem", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "filesystem":
        yield FilesystemBlobStore(tmp_path / "blobs-root", fsync=False)
        return
    server: S3Server = request.getfixturevalue("s3")
    locks = FileLocks(tmp_path / "locks")
    # The smallest part S3 allows, so a few MiB exercise parts, tails and their joins.
    yield S3BlobStore(s3_client(server.endpoint, REGION), server.create_bucket(), "cargohold", locks, MIN_PART_SIZE)
    locks.close()


@pytest.fixture(params=["files", "postgresql"])
def locks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Locks]:
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        held: Locks = PostgresLocks(server.create_database())
    else:
        held = FileLocks(tmp_path / "locks")
    yield held
    held.close()
