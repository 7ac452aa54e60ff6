"""The blob store on an S3-compatible object store (AWS S3, MinIO, Ceph RGW), through boto3.

Keys, under the configured prefix, are built only from validated digests and upload ids:

    blobs/<algorithm>/<first two hex>/<hex>   a blob, written only once its digest is verified
    uploads/<id>/state                        an upload session: its parts, size and hash state
    uploads/<id>/tail-<n>                     the session's bytes not yet a part (under part size)
    uploads/<id>/data                         the multipart upload the parts go to

A session's bytes go to an S3 multipart upload in parts of `part_size` (S3 wants at least
5 MiB for every part but the last); what is left over after a request (less than a part)
waits in the tail object until the next request makes up a part. The state object is the
session's commit point: it is replaced whole after each request, so a request cut off halfway
leaves the session as it was before it, and a part uploaded by a request that then failed is
overwritten by the next. The running SHA-256 is saved in the state, because no replica can
read an unfinished multipart upload back to hash it again.

Completing an upload completes its multipart upload at `uploads/<id>/data` and copies that
object (server side) to its blob key: the digest is known only at the end, and an object at a
blob key must be the blob. This is what Distribution's S3 driver does too; its cost is measured
in docs/architecture.md.

One request at a time writes a session, and collection cannot take a blob between its
placement and its record: both through `Locks`, held in the database when it is shared.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig

from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from .locks import Locks
from .records import BackendUnavailable, StorageSetupError, UploadBusyError, is_upload_id
from .verify import verified_chunks

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

# 10 MiB parts, as Distribution's default: S3 allows 10,000 parts, so a blob of up to 97 GiB.
PART_SIZE = 10 << 20
MIN_PART_SIZE = 5 << 20
READ_CHUNK = 1 << 20
# An object store has no free-space figure to give; uploads are never refused for room.
UNBOUNDED = 1 << 62
_COPY = TransferConfig(multipart_threshold=5 << 30, multipart_chunksize=512 << 20, max_concurrency=4)
_RETRYABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}


def _unavailable(err: Exception) -> BackendUnavailable | None:
    """The object store being down or overloaded, as the retryable error clients get."""
    if isinstance(err, _RETRYABLE):
        return BackendUnavailable("object store", type(err).__name__)
    if isinstance(err, botocore.exceptions.ClientError) and _code(err) in _UNAVAILABLE_CODES:
        return BackendUnavailable("object store", _code(err))
    return None


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """The store's failures that mean "down or overloaded" raised as `BackendUnavailable`."""
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        unavailable = _unavailable(err)
        if unavailable is not None:
            raise unavailable from err
        raise


def _code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _missing(err: botocore.exceptions.ClientError) -> bool:
    return _code(err) in {"404", "NoSuchKey", "NoSuchUpload", "NotFound"}


def _check_upload_id(upload_id: str) -> str:
    if not is_upload_id(upload_id):
        raise ValueError(f"malformed upload id {upload_id[:80]!r}")
    return upload_id


@dataclass
class _State:
    """What the state object holds; `parts` are (number, etag, size)."""

    multipart: str | None = None
    parts: list[tuple[int, str, int]] = field(default_factory=list)
    tail: str | None = None
    tail_size: int = 0
    hash_state: bytes | None = None

    @property
    def size(self) -> int:
        return sum(part[2] for part in self.parts) + self.tail_size

    def dump(self) -> bytes:
        return json.dumps(
            {
                "multipart": self.multipart,
                "parts": self.parts,
                "tail": self.tail,
                "tail_size": self.tail_size,
                "hash": base64.b64encode(self.hash_state).decode() if self.hash_state else None,
            }
        ).encode()

    @classmethod
    def load(cls, raw: bytes) -> _State:
        doc = json.loads(raw)
        return cls(
            multipart=doc["multipart"],
            parts=[(int(n), str(etag), int(size)) for n, etag, size in doc["parts"]],
            tail=doc["tail"],
            tail_size=int(doc["tail_size"]),
            hash_state=base64.b64decode(doc["hash"]) if doc.get("hash") else None,
        )


def s3_client(endpoint: str, region: str, timeout: float = 10.0) -> S3Client:
    """A client that gives up on a store that does not answer within `timeout`, twice: a
    request then gets a retryable 503 in seconds instead of hanging with its client."""
    config = BotoConfig(
        region_name=region,
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=min(timeout, 5.0),
        read_timeout=timeout,
        max_pool_connections=32,
        # Checksums only where S3 requires them: several S3-compatible servers refuse the
        # trailing checksums boto3 sends by default since 1.36.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        # Presigned URLs in SigV4: regions opened since 2014 accept nothing older.
        signature_version="s3v4",
    )
    return boto3.client("s3", endpoint_url=endpoint or None, config=config)


class S3BlobStore:
    keeps_hash_state = True

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str,
        locks: Locks,
        part_size: int = PART_SIZE,
        redirect_seconds: int = 0,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 parts are at least {MIN_PART_SIZE} bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.locks = locks
        self.part_size = part_size
        self.redirect_seconds = redirect_seconds

    def check(self) -> None:
        where = f"s3://{self.bucket}" + (
            f" at {self.client.meta.endpoint_url}" if self.client.meta.endpoint_url else ""
        )
        try:
            with _store_errors():
                self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.NoCredentialsError:
            raise StorageSetupError(
                f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the AWS files)"
            ) from None
        except botocore.exceptions.ClientError as err:
            if _code(err) in {"404", "NoSuchBucket", "NotFound"}:
                raise StorageSetupError(f"the bucket {where} does not exist: create it first") from None
            if _code(err) in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                raise StorageSetupError(f"access to {where} is denied: check the credentials and policy") from None
            raise StorageSetupError(f"{where} answered {_code(err)}: {err}") from None

    def close(self) -> None:
        self.locks.close()

    # -- keys ----------------------------------------------------------------------------

    def _blob_key(self, digest: Digest) -> str:
        return f"{self.prefix}blobs/{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}"

    def _upload_key(self, upload_id: str, name: str) -> str:
        return f"{self.prefix}uploads/{_check_upload_id(upload_id)}/{name}"

    # -- calls -----------------------------------------------------------------------------

    def _call(self, operation: Callable[..., Any], **arguments: Any) -> Any:
        with _store_errors():
            return operation(Bucket=self.bucket, **arguments)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self._call(self.client.head_object, Key=key))
        except botocore.exceptions.ClientError as err:
            if _missing(err):
                return None
            raise

    def _get(self, key: str, byte_range: str | None = None) -> Any:
        arguments = {"Key": key, **({"Range": byte_range} if byte_range else {})}
        try:
            return self._call(self.client.get_object, **arguments)["Body"]
        except botocore.exceptions.ClientError as err:
            if _missing(err):
                raise FileNotFoundError(key) from None
            raise

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self._call(self.client.delete_objects, Delete={"Objects": batch, "Quiet": True})

    def _list(self, prefix: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            arguments["Delimiter"] = delimiter
        with _store_errors():
            for page in paginator.paginate(**arguments):
                yield cast(dict[str, Any], page)

    # -- upload sessions -------------------------------------------------------------------

    def _read_object(self, key: str) -> bytes:
        """A small object whole (a state, a tail of less than a part)."""
        with _store_errors(), self._get(key) as body:
            return cast(bytes, body.read())

    def _read_state(self, upload_id: str) -> _State:
        return _State.load(self._read_object(self._upload_key(upload_id, "state")))

    def _write_state(self, upload_id: str, state: _State) -> None:
        self._call(self.client.put_object, Key=self._upload_key(upload_id, "state"), Body=state.dump())

    def create_upload(self, upload_id: str) -> None:
        self._write_state(upload_id, _State())

    def open_upload(self, upload_id: str) -> S3UploadHandle:
        held = contextlib.ExitStack()
        try:
            if not held.enter_context(self.locks.exclusive(f"upload-{_check_upload_id(upload_id)}", wait=False)):
                raise UploadBusyError(upload_id)
            return S3UploadHandle(self, upload_id, self._read_state(upload_id), held)
        except BaseException:
            held.close()
            raise

    def read_upload(self, upload_id: str) -> BinaryIO:
        """The session's bytes, for hashing with another algorithm than SHA-256: the multipart
        upload is completed (so no more bytes can follow) and its object read."""
        return cast(BinaryIO, self._get(self._assemble(upload_id, self._read_state(upload_id))))

    def _assemble(self, upload_id: str, state: _State) -> str:
        """Complete the session's multipart upload, the tail its last part; returns the key of
        an object holding the whole session."""
        if state.multipart is None:  # everything is in the tail, or nothing was sent
            if state.tail is None:
                self._call(self.client.put_object, Key=self._upload_key(upload_id, "data"), Body=b"")
                return self._upload_key(upload_id, "data")
            return self._upload_key(upload_id, state.tail)
        data = self._upload_key(upload_id, "data")
        parts = list(state.parts)
        if state.tail is not None:
            number = len(parts) + 1
            copied = self._call(
                self.client.upload_part_copy,
                Key=data,
                UploadId=state.multipart,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": self._upload_key(upload_id, state.tail)},
            )
            parts.append((number, copied["CopyPartResult"]["ETag"], state.tail_size))
        self._call(
            self.client.complete_multipart_upload,
            Key=data,
            UploadId=state.multipart,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag, _ in parts]},
        )
        # Completed: a later look at the state must not try it again.
        self._write_state(upload_id, _State(tail="data", tail_size=state.size, hash_state=state.hash_state))
        return data

    def upload_ids(self) -> list[str]:
        ids = []
        for page in self._list(f"{self.prefix}uploads/", "/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if is_upload_id(name):
                    ids.append(name)
        return ids

    def upload_idle_since(self, upload_id: str) -> float | None:
        head = self._head(self._upload_key(upload_id, "state"))
        return cast(datetime, head["LastModified"]).timestamp() if head else None

    def delete_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            state = self._read_state(upload_id)
            if state.multipart is not None:
                with contextlib.suppress(botocore.exceptions.ClientError):
                    self._call(
                        self.client.abort_multipart_upload,
                        Key=self._upload_key(upload_id, "data"),
                        UploadId=state.multipart,
                    )
        keys = [
            item["Key"] for page in self._list(self._upload_key(upload_id, "")) for item in page.get("Contents", [])
        ]
        self._delete_keys(keys)
        self.locks.forget(f"upload-{upload_id}")

    def trash_upload(self, upload_id: str) -> None:
        self.delete_upload(upload_id)  # nothing to free later: deleting objects is quick

    def empty_trash(self) -> None:
        pass

    # -- blobs -----------------------------------------------------------------------------

    def commit_upload(self, upload_id: str, digest: Digest) -> bool:
        """Place the verified upload at its blob key (call inside `publishing(digest)`);
        False when an intact copy was there already."""
        state = self._read_state(upload_id)
        existing = self._head(self._blob_key(digest))
        if existing is not None and int(existing["ContentLength"]) == state.size:
            self.delete_upload(upload_id)
            return False
        source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": self._assemble(upload_id, state)}
        with _store_errors():
            # One CopyObject up to 5 GiB (S3's limit for it), a multipart copy only beyond: the
            # managed copy's default would split anything over 8 MiB, measured 15x slower on moto.
            self.client.copy(source, self.bucket, self._blob_key(digest), Config=_COPY)
        self.delete_upload(upload_id)
        return True

    def put_blob(self, digest: Digest, source: BinaryIO, size: int) -> bool:
        """Stream the blob to its key, verified on the way: one PutObject when it fits in a part
        (it is hashed before it is sent), else a multipart upload at the key itself, completed
        only once the whole has hashed right (until then S3 shows nothing there) and aborted
        otherwise. One part in memory at a time. Call inside `publishing(digest)`."""
        if self.blob_size(digest) == size:
            return False
        key = self._blob_key(digest)
        chunks = verified_chunks(source, digest, size, self.part_size)
        first = next(chunks, b"")
        if len(first) < self.part_size:  # the whole blob: the generator checks it at its end
            for _ in chunks:
                pass
            self._call(self.client.put_object, Key=key, Body=first)
            return True
        multipart = self._call(self.client.create_multipart_upload, Key=key)["UploadId"]
        try:
            parts = []
            for number, chunk in enumerate(itertools.chain([first], chunks), start=1):
                answer = self._call(self.client.upload_part, Key=key, UploadId=multipart, PartNumber=number, Body=chunk)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._call(
                self.client.complete_multipart_upload, Key=key, UploadId=multipart, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                self._call(self.client.abort_multipart_upload, Key=key, UploadId=multipart)
            raise
        return True

    def publishing(self, digest: Digest) -> contextlib.AbstractContextManager[None]:
        return self.locks.shared(f"blobs-{digest.algorithm}-{digest.encoded[:2]}")

    def reclaim(self, digests: Iterable[Digest], unrecorded: Callable[[Digest], bool]) -> list[Digest]:
        by_prefix: dict[str, list[Digest]] = {}
        for digest in digests:
            by_prefix.setdefault(f"blobs-{digest.algorithm}-{digest.encoded[:2]}", []).append(digest)
        reclaimed = []
        for name, group in by_prefix.items():
            with self.locks.exclusive(name):
                gone = [digest for digest in group if unrecorded(digest)]
                self._delete_keys([self._blob_key(digest) for digest in gone])
                reclaimed.extend(gone)
        return reclaimed

    def blob_size(self, digest: Digest) -> int | None:
        head = self._head(self._blob_key(digest))
        return int(head["ContentLength"]) if head else None

    def blob_mtime(self, digest: Digest) -> float | None:
        head = self._head(self._blob_key(digest))
        return cast(datetime, head["LastModified"]).timestamp() if head else None

    def local_file(self, digest: Digest) -> None:
        return None

    def open_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> BinaryIO:
        if length == 0:
            return io.BytesIO()
        end = "" if length is None else str(offset + length - 1)
        byte_range = f"bytes={offset}-{end}" if offset or length is not None else None
        return cast(BinaryIO, self._get(self._blob_key(digest), byte_range))

    def blob_url(self, digest: Digest) -> str | None:
        if not self.redirect_seconds:
            return None
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._blob_key(digest)},
            ExpiresIn=self.redirect_seconds,
        )

    def delete_blob(self, digest: Digest) -> None:
        self._call(self.client.delete_object, Key=self._blob_key(digest))

    def blob_files(self) -> Iterator[Digest]:
        for name in self.blob_file_names():
            try:
                yield Digest.parse(name)
            except RegistryError:
                continue

    def blob_file_names(self) -> Iterator[str]:
        start = len(f"{self.prefix}blobs/")
        for page in self._list(f"{self.prefix}blobs/"):
            for item in page.get("Contents", []):
                algorithm, _, rest = item["Key"][start:].partition("/")
                yield f"{algorithm}:{rest.rpartition('/')[2]}"

    def space(self) -> tuple[int, int]:
        return UNBOUNDED, UNBOUNDED


class S3UploadHandle:
    """One request's exclusive use of a session. Bytes go out in whole parts as they arrive;
    `sync` (and `close`) write the rest as the tail and commit the state."""

    def __init__(self, store: S3BlobStore, upload_id: str, state: _State, held: contextlib.ExitStack) -> None:
        self._store = store
        self._id = upload_id
        self._original = state  # as this request found it
        self._opened = state  # as last committed
        self._tails = {state.tail} if state.tail else set()  # tail objects this request saw or made
        self._held: contextlib.ExitStack | None = held  # the session's lock
        self._reset()
        self._guard = threading.Lock()  # writes come from pool threads, one batch at a time

    def _reset(self) -> None:
        opened = self._opened
        self._parts = list(opened.parts)
        self._multipart = opened.multipart
        self._buffer: bytearray | None = None  # the tail, loaded when the first bytes arrive
        self._hash_state = opened.hash_state
        self._dirty = False

    @property
    def size(self) -> int:
        parts = sum(part[2] for part in self._parts)
        return parts + (len(self._buffer) if self._buffer is not None else self._opened.tail_size)

    @property
    def hash_state(self) -> bytes | None:
        """The saved SHA-256 state after exactly `size` bytes."""
        return self._hash_state

    def keep_hash_state(self, state: bytes) -> None:
        self._hash_state = state
        self._dirty = True

    def _tail(self) -> bytearray:
        if self._buffer is None:
            opened = self._opened
            if opened.tail == "data":
                raise RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, f"upload {self._id} is being completed")
            self._buffer = bytearray()
            if opened.tail is not None and opened.tail_size:
                self._buffer += self._store._read_object(self._store._upload_key(self._id, opened.tail))
        return self._buffer

    def write_parts(self, parts: list[bytes]) -> None:
        """Fill the part buffer; a full one is sent as it is and a new one begun, so an upload
        holds at most one part in memory (no copy of it is made to send it)."""
        size = self._store.part_size
        with self._guard:
            buffer = self._tail()
            for part in parts:
                view = memoryview(part)
                self._dirty = self._dirty or bool(view)
                while view:
                    room = size - len(buffer)
                    buffer += view[:room]
                    view = view[room:]
                    if len(buffer) == size:
                        self._upload_part(buffer)
                        buffer = self._buffer = bytearray()

    def _upload_part(self, data: bytearray) -> None:
        store = self._store
        key = store._upload_key(self._id, "data")
        if self._multipart is None:
            self._multipart = store._call(store.client.create_multipart_upload, Key=key)["UploadId"]
        number = len(self._parts) + 1
        answer = store._call(store.client.upload_part, Key=key, UploadId=self._multipart, PartNumber=number, Body=data)
        self._parts.append((number, answer["ETag"], len(data)))

    def truncate(self, size: int) -> None:
        """Undo this request's bytes: the session goes back to what it held when the request
        began (committed again if `sync` had committed them), or at its last commit."""
        if size == self._opened.size:
            self._reset()
        elif size == self._original.size:
            self._store._write_state(self._id, self._original)
            self._opened = self._original
            self._reset()
        else:
            raise ValueError(f"an S3 upload goes back only to where the request began ({self._original.size} bytes)")

    def sync(self) -> None:
        """Commit: the tail object, then the state that names it."""
        if not self._dirty:
            return
        store = self._store
        opened = self._opened
        tail, tail_size = opened.tail, opened.tail_size
        if self._buffer is not None:
            number = max((int(t.rsplit("-", 1)[1]) for t in self._tails if t.startswith("tail-")), default=0) + 1
            tail, tail_size = (f"tail-{number}", len(self._buffer)) if self._buffer else (None, 0)
            if tail is not None:
                store._call(store.client.put_object, Key=store._upload_key(self._id, tail), Body=bytes(self._buffer))
        state = _State(self._multipart, list(self._parts), tail, tail_size, self._hash_state)
        store._write_state(self._id, state)
        if tail is not None:
            self._tails.add(tail)
        self._opened = state
        self._reset()

    def close(self) -> None:
        if self._held is None:
            return
        try:
            self.sync()
            # Tails replaced by this request go only now: until the end it may be undone.
            stale = [self._store._upload_key(self._id, t) for t in self._tails - {self._opened.tail, "data"}]
            self._store._delete_keys(stale)
        finally:
            held, self._held = self._held, None
            held.close()
