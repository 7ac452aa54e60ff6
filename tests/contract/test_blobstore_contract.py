"""What every blob store guarantees: content-addressed blobs appear whole or not at all, two
uploads of one digest finishing at once leave one intact blob and no upload behind, and an
upload's bytes stay private to it until it is committed."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from typing import BinaryIO, cast

import pytest

from cargohold.oci.digest import Digest
from cargohold.storage.interfaces import BlobStore
from cargohold.storage.records import BlobMismatchError, UploadBusyError


def upload(store: BlobStore, upload_id: str, data: bytes) -> None:
    store.create_upload(upload_id)
    writer = store.open_upload(upload_id)
    try:
        writer.write_parts([data[: len(data) // 2], data[len(data) // 2 :]])
        writer.sync()
    finally:
        writer.close()


def stored(store: BlobStore, digest: Digest) -> bytes:
    with store.open_blob(digest) as f:
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
        writer.truncate(0)
        assert writer.size == 0, "a chunk that is given up is cut away"
        writer.write_parts([b"de"])
    finally:
        writer.close()
    again = blob_store.open_upload("d" * 32)
    try:
        assert again.size == 2
        again.write_parts([b"fgh"])
        again.truncate(2)
        assert again.size == 2, "back to where this request began, not to zero"
        again.write_parts([b"ijk"])
        again.sync()  # made durable to be judged, then refused (the database went away)
        again.truncate(2)
        assert again.size == 2, "even after a sync, the request's bytes can be undone"
    finally:
        again.close()
    with blob_store.publishing(Digest.of(b"de")):
        assert blob_store.commit_upload("d" * 32, Digest.of(b"de"))
    assert stored(blob_store, Digest.of(b"de")) == b"de"


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


def test_an_upload_continues_across_handles_and_parts(blob_store: BlobStore) -> None:
    """Chunks of odd sizes from several requests (as from several replicas), one of them given
    up halfway: the blob is exactly the bytes that were kept, in order."""
    upload_id = "9" * 32
    blob_store.create_upload(upload_id)
    pieces = [os.urandom(n) for n in (1 << 20, (4 << 20) + 17, 3, (7 << 20) + 5, 100_000)]
    for number, piece in enumerate(pieces):
        writer = blob_store.open_upload(upload_id)
        try:
            start = writer.size
            if number == 2:  # a request whose body broke off: its bytes are undone
                writer.write_parts([os.urandom(6 << 20)])
                writer.truncate(start)
            writer.write_parts([piece[: len(piece) // 3], piece[len(piece) // 3 :]])
            writer.sync()
        finally:
            writer.close()
    data = b"".join(pieces)
    reopened = blob_store.open_upload(upload_id)
    assert reopened.size == len(data)
    reopened.close()
    digest = Digest.of(data)
    with blob_store.publishing(digest):
        assert blob_store.commit_upload(upload_id, digest)
    assert blob_store.blob_size(digest) == len(data)
    assert hashlib.sha256(stored(blob_store, digest)).hexdigest() == digest.encoded
    assert upload_id not in blob_store.upload_ids()


def test_ranges_of_a_blob(blob_store: BlobStore) -> None:
    data = os.urandom(50_000)
    digest = Digest.of(data)
    upload(blob_store, "8" * 32, data)
    with blob_store.publishing(digest):
        blob_store.commit_upload("8" * 32, digest)
    with blob_store.open_blob(digest, 1000, 2345) as f:
        assert f.read() == data[1000:3345]
    with blob_store.open_blob(digest, 49_990) as f:
        assert f.read() == data[49_990:]
    with pytest.raises(FileNotFoundError):
        blob_store.open_blob(Digest.of(b"never stored"))


def test_the_hash_state_kept_is_the_one_given(blob_store: BlobStore) -> None:
    """A store that cannot read an unfinished upload back keeps the hash state with its bytes."""
    blob_store.create_upload("7" * 32)
    writer = blob_store.open_upload("7" * 32)
    writer.write_parts([b"first"])
    writer.keep_hash_state(b"state after first")
    writer.close()
    again = blob_store.open_upload("7" * 32)
    try:
        kept = again.hash_state
        assert kept == (b"state after first" if blob_store.keeps_hash_state else None)
        again.write_parts([b"second"])
        again.keep_hash_state(b"state after second")
        again.truncate(5)
        assert again.hash_state == kept, "an undone chunk takes its hash state with it"
    finally:
        again.close()


def test_expired_and_cancelled_uploads_leave_nothing(blob_store: BlobStore) -> None:
    blob_store.create_upload("6" * 32)
    writer = blob_store.open_upload("6" * 32)
    writer.write_parts([os.urandom(6 << 20)])
    writer.close()
    assert "6" * 32 in blob_store.upload_ids()
    assert blob_store.upload_idle_since("6" * 32) is not None
    blob_store.delete_upload("6" * 32)
    blob_store.empty_trash()
    assert "6" * 32 not in blob_store.upload_ids()
    assert blob_store.upload_idle_since("6" * 32) is None
    with pytest.raises(FileNotFoundError):
        blob_store.open_upload("6" * 32)


def test_an_upload_read_back_can_still_be_committed(blob_store: BlobStore) -> None:
    """Reading an upload back (to verify a digest other than SHA-256; an object store first
    assembles its parts) leaves a session that reopens whole and commits, as a retried
    completion does after the store failed in the middle of one."""
    upload_id = "5" * 32
    data = os.urandom((6 << 20) + 11)
    blob_store.create_upload(upload_id)
    writer = blob_store.open_upload(upload_id)
    writer.write_parts([data])
    writer.keep_hash_state(b"after all of it")
    writer.close()
    with blob_store.read_upload(upload_id) as f:
        assert hashlib.sha512(f.read()).digest() == hashlib.sha512(data).digest()
    again = blob_store.open_upload(upload_id)
    try:
        assert again.size == len(data)
        assert again.hash_state == (b"after all of it" if blob_store.keeps_hash_state else None)
        again.sync()
    finally:
        again.close()
    with blob_store.publishing(Digest.of(data)):
        assert blob_store.commit_upload(upload_id, Digest.of(data))
    assert stored(blob_store, Digest.of(data)) == data


class _Unreadable(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise AssertionError("a blob already stored is not read again")


@pytest.mark.parametrize("size", [0, 1000, (11 << 20) + 3])  # empty, one request, S3 parts and a tail
def test_put_blob_streams_a_verified_blob_once(blob_store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    digest = Digest.of(data)
    with blob_store.publishing(digest):
        assert blob_store.put_blob(digest, io.BytesIO(data), size)
    assert blob_store.blob_size(digest) == size and stored(blob_store, digest) == data
    with blob_store.publishing(digest):
        assert not blob_store.put_blob(digest, cast(BinaryIO, _Unreadable()), size), "a copy was there"
    assert list(blob_store.blob_files()) == [digest]


@pytest.mark.parametrize("size", [1000, (11 << 20) + 3])
def test_put_blob_refuses_bytes_that_are_not_the_blob(blob_store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    digest = Digest.of(data)
    damaged = bytearray(data)
    damaged[size // 2] ^= 1
    for offered, claimed, why in [
        (bytes(damaged), size, "hashes to"),
        (data[:-1], size, f"{size - 1} bytes"),
        (data + b"x", size, "longer than"),
    ]:
        with pytest.raises(BlobMismatchError, match=why) as refused:
            blob_store.put_blob(digest, io.BytesIO(offered), claimed)
        assert refused.value.digest == str(digest)
        assert blob_store.blob_size(digest) is None, "nothing of a refused blob is stored"
    blob_store.empty_trash()
    assert list(blob_store.blob_files()) == []
    assert blob_store.upload_ids() == []
