"""The blob store contract and its local-filesystem implementation.

Blobs live under `blobs/<algorithm>/<first two hex>/<hex>`; upload sessions under
`uploads/<id>`. A blob appears at its final key only by an atomic rename of a file whose
digest was already verified, so readers never see partial content. Keys are built only
from validated digests and upload ids, never from request text, so they cannot escape
the root.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from ..oci.digest import Digest

_UPLOAD_ID = re.compile(r"^[a-f0-9]{32}$")
_WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return function


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask Linux to begin writing a range to disk without waiting for it (a hint only)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class StorageFullError(OSError):
    """The blob store ran out of space."""


class BlobStore(Protocol):
    def create_upload(self, upload_id: str) -> None: ...
    def upload_size(self, upload_id: str) -> int | None: ...
    def open_upload(self, upload_id: str) -> UploadWriter: ...
    def read_upload(self, upload_id: str) -> BinaryIO: ...
    def commit_upload(self, upload_id: str, digest: Digest) -> None: ...
    def delete_upload(self, upload_id: str) -> None: ...
    def blob_path(self, digest: Digest) -> Path: ...
    def blob_size(self, digest: Digest) -> int | None: ...
    def delete_blob(self, digest: Digest) -> None: ...


def is_upload_id(upload_id: str) -> bool:
    return bool(_UPLOAD_ID.match(upload_id))


def check_upload_id(upload_id: str) -> str:
    if not is_upload_id(upload_id):
        raise ValueError(f"malformed upload id {upload_id[:80]!r}")
    return upload_id


class UploadBusyError(Exception):
    """Another request, in this or another worker process, is writing to the upload."""


class UploadWriter:
    """Exclusive append access to an upload file; `truncate` undoes an abandoned write.

    The exclusive flock makes two requests on one session (from any worker process) take
    turns, so their bytes never interleave and the size read here is the true offset.
    """

    def __init__(self, path: Path, fsync: bool) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UploadBusyError(path.name) from None
        self._fsync = fsync
        self.size = os.fstat(self._fd).st_size
        self._flushed = self.size

    def write_parts(self, parts: list[bytes]) -> None:
        total = sum(len(p) for p in parts)
        try:
            written = os.writev(self._fd, parts)
            if written < total:  # a short write: finish the rest piece by piece
                rest = memoryview(b"".join(parts))[written:]
                while rest:
                    n = os.write(self._fd, rest)
                    rest = rest[n:]
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(err.errno, "no space left in the blob store") from err
            raise
        self.size += total
        if self._fsync and self.size - self._flushed >= _WRITEBACK_STEP:
            # Start writing back now, so the fsync at the end has little left to wait for.
            start_writeback(self._fd, self._flushed, self.size - self._flushed)
            self._flushed = self.size

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self.size = size

    def sync(self) -> None:
        """Make the bytes durable before the blob becomes visible (when configured)."""
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FilesystemBlobStore:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)

    def _upload_path(self, upload_id: str) -> Path:
        return self._uploads / check_upload_id(upload_id)

    def blob_path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.encoded[:2] / digest.encoded

    def create_upload(self, upload_id: str) -> None:
        fd = os.open(self._upload_path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)

    def upload_size(self, upload_id: str) -> int | None:
        try:
            return self._upload_path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def open_upload(self, upload_id: str) -> UploadWriter:
        return UploadWriter(self._upload_path(upload_id), self.fsync)

    def read_upload(self, upload_id: str) -> BinaryIO:
        return open(self._upload_path(upload_id), "rb")

    def commit_upload(self, upload_id: str, digest: Digest) -> None:
        target = self.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same content, same name: if the blob is already there, replacing it is harmless.
        os.replace(self._upload_path(upload_id), target)
        if self.fsync:
            _fsync_dir(target.parent)

    def delete_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._upload_path(upload_id).unlink()

    def blob_size(self, digest: Digest) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def delete_blob(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def upload_ids(self) -> list[str]:
        return [p.name for p in self._uploads.iterdir() if _UPLOAD_ID.match(p.name)]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
