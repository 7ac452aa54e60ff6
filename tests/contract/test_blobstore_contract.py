"""What every blob store guarantees: content-addressed blobs appear whole or not at all, two
uploads of one digest finishing at once leave one intact blob and no upload behind, and an
upload's bytes stay private to it until it is committed."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from cargohold.oci.digest import Digest
from cargohold.storage.interfaces import BlobStore
from cargohold.storage.records import UploadBusyError


def upload(store: BlobStore, upload_id: str, data: bytes) -> None:
    store.create_upload(upload_id)
    writer = store.open_upload(upload_id)
    try:
        writer.write_parts([data[: len(data) // 2], data[len(data) // 2 :]])
        writer.sync()
    finally:
        writer.close()


def stored(store: BlobStore, digest: Digest) -> bytes:
    with open(store.blob_path(digest), "rb") as f:
        return f.read()


def test_a_committed_upload_is_the_blob(blob_store: BlobStore) -> None:
    data = os.urandom(3 << 20)
    digest = Digest.of(data)
    upload(blob_store, "a" * 32, data)
    assert blob_store.blob_size(digest) is None, "nothing is visible before the commit"
    with blob_store.publishing(digest):
        assert blob_store.commit_upload("a" * 32, digest)
    assert blob_store.blob_size(digest) == len(data) and stored(blob_store, digest) == data
    assert "a" * 32 not in blob_store.upload_ids()


def test_two_finishes_of_one_digest_leave_one_intact_blob(blob_store: BlobStore) -> None:
    data = os.urandom(1 << 20)
    digest = Digest.of(data)
    ids = ["b" * 32, "c" * 32]
    for upload_id in ids:
        upload(blob_store, upload_id, data)
    moved: list[bool] = []
    start = threading.Barrier(2)

    def finish(upload_id: str) -> None:
        start.wait()
        with blob_store.publishing(digest):
            moved.append(blob_store.commit_upload(upload_id, digest))

    threads = [threading.Thread(target=finish, args=(upload_id,)) for upload_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Both may place their (identical, verified) copy, the later replacing the earlier in one
    # rename; or the later finds the blob there and trashes its copy. Either way: one blob.
    assert len(moved) == 2 and True in moved
    blob_store.empty_trash()
    assert hashlib.sha256(stored(blob_store, digest)).hexdigest() == digest.encoded
    assert not set(ids) & set(blob_store.upload_ids())


def test_an_upload_is_written_by_one_writer_at_a_time(blob_store: BlobStore) -> None:
    blob_store.create_upload("d" * 32)
    writer = blob_store.open_upload("d" * 32)
    try:
        with pytest.raises(UploadBusyError):
            blob_store.open_upload("d" * 32)
        writer.write_parts([b"abc"])
        writer.truncate(1)
        assert writer.size == 1, "a chunk that is given up is cut away"
    finally:
        writer.close()
    again = blob_store.open_upload("d" * 32)
    try:
        assert again.size == 1
    finally:
        again.close()


def test_reclaim_takes_only_what_is_unrecorded(blob_store: BlobStore) -> None:
    keep, drop = os.urandom(1000), os.urandom(1000)
    for upload_id, data in (("e" * 32, keep), ("f" * 32, drop)):
        upload(blob_store, upload_id, data)
        with blob_store.publishing(Digest.of(data)):
            blob_store.commit_upload(upload_id, Digest.of(data))
    gone = blob_store.reclaim([Digest.of(keep), Digest.of(drop)], lambda d: d == Digest.of(drop))
    assert gone == [Digest.of(drop)]
    assert blob_store.blob_size(Digest.of(keep)) == 1000 and blob_store.blob_size(Digest.of(drop)) is None
    assert set(blob_store.blob_files()) == {Digest.of(keep)}
