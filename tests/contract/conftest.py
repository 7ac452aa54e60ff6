"""The backends every storage contract test runs against. A new backend is one more parameter
here; its store must then pass every test of the suite unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cargohold.storage.blobstore import FilesystemBlobStore
from cargohold.storage.metadata import SQLiteMetadataStore

# Opens one more handle on the same database, as another worker process or replica would.
OpenMetadata = Callable[[], SQLiteMetadataStore]


@pytest.fixture(params=["sqlite"])
def open_metadata(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenMetadata]:
    opened: list[SQLiteMetadataStore] = []

    def open_one() -> SQLiteMetadataStore:
        store = SQLiteMetadataStore(tmp_path / "metadata.sqlite3")
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def meta(open_metadata: OpenMetadata) -> SQLiteMetadataStore:
    return open_metadata()


@pytest.fixture(params=["filesystem"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs-root", fsync=False)
