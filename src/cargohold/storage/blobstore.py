"""The local-filesystem blob store (`interfaces.BlobStore`; the S3 one is `s3.py`).

Blobs live under `blobs/<algorithm>/<first two hex>/<hex>`; upload sessions under
`uploads/<id>`; upload files a request gave up on wait in `trash/` to be freed off the
request path. A blob appears at its final key only by an atomic rename of a file whose
digest was already verified, so readers never see partial content. Keys are built only
from validated digests and upload ids, never from request text, so they cannot escape
the root.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from ..oci.digest import Digest
from ..oci.errors import RegistryError
from .records import is_upload_id
from .uploadfile import UploadWriter
from .verify import verified_chunks

__all__ = ["FilesystemBlobStore", "UploadWriter"]

_PUT_CHUNK = 1 << 20


def check_upload_id(upload_id: str) -> str:
    if not is_upload_id(upload_id):
        raise ValueError(f"malformed upload id {upload_id[:80]!r}")
    return upload_id


class FilesystemBlobStore:
    keeps_hash_state = False  # an upload file can always be hashed again

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        self._trash = self.root / "trash"
        for directory in (self._blobs, self._uploads, self._trash):
            directory.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        pass  # the directories were made (or refused) when the store opened

    def close(self) -> None:
        pass

    def _upload_path(self, upload_id: str) -> Path:
        return self._uploads / check_upload_id(upload_id)

    def blob_path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.encoded[:2] / digest.encoded

    def local_file(self, digest: Digest) -> Path:
        return self.blob_path(digest)

    def open_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> BinaryIO:
        f = open(self.blob_path(digest), "rb")  # noqa: SIM115 - the caller closes it
        f.seek(offset)
        return f if length is None else cast(BinaryIO, _Limited(f, length))

    def blob_url(self, digest: Digest) -> None:
        return None

    def create_upload(self, upload_id: str) -> None:
        fd = os.open(self._upload_path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)

    def open_upload(self, upload_id: str) -> UploadWriter:
        return UploadWriter(self._upload_path(upload_id), self.fsync)

    def read_upload(self, upload_id: str) -> BinaryIO:
        return open(self._upload_path(upload_id), "rb")

    def commit_upload(self, upload_id: str, digest: Digest) -> bool:
        """Move a verified upload to its blob key. Call inside `publishing(digest)`.

        Returns False when an intact copy was already stored: the upload goes to the trash
        instead, because replacing would free the old file inside the rename, which takes
        tens of milliseconds for a large one.
        """
        source, target = self._upload_path(upload_id), self.blob_path(digest)
        with contextlib.suppress(FileNotFoundError):
            if target.stat().st_size == source.stat().st_size:
                self.trash_upload(upload_id)
                return False
        # Absent, or damaged (its size is wrong): the verified upload takes its place.
        os.replace(source, target)
        if self.fsync:
            _fsync_dir(target.parent)
        return True

    def put_blob(self, digest: Digest, source: BinaryIO, size: int) -> bool:
        """Write the blob to a file in `trash/` (so a crash leaves nothing `empty_trash` does not
        free), verified on the way, then rename it to its key. Call inside `publishing(digest)`."""
        if self.blob_size(digest) == size:
            return False
        temporary = self._trash / f"put-{os.urandom(16).hex()}"
        try:
            with open(temporary, "xb") as out:
                for chunk in verified_chunks(source, digest, size, _PUT_CHUNK):
                    out.write(chunk)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            target = self.blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        if self.fsync:
            _fsync_dir(target.parent)
        return True

    @contextlib.contextmanager
    def _prefix_lock(self, digest: Digest, mode: int) -> Iterator[None]:
        directory = self.blob_path(digest).parent
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def publishing(self, digest: Digest) -> contextlib.AbstractContextManager[None]:
        """Held (shared) while a blob's file is put in place and its record written, so garbage
        collection cannot unlink a file between a new upload's rename and its record."""
        return self._prefix_lock(digest, fcntl.LOCK_SH)

    def reclaim(self, digests: Iterable[Digest], unrecorded: Callable[[Digest], bool]) -> list[Digest]:
        """Unlink the files of those blobs for which, with publishing locked out, `unrecorded`
        still holds; returns them. One lock per digest-prefix directory, not per blob."""
        by_prefix: dict[Path, list[Digest]] = {}
        for digest in digests:
            by_prefix.setdefault(self.blob_path(digest).parent, []).append(digest)
        reclaimed = []
        for group in by_prefix.values():
            with self._prefix_lock(group[0], fcntl.LOCK_EX):
                for digest in group:
                    if unrecorded(digest):
                        self.delete_blob(digest)
                        reclaimed.append(digest)
        return reclaimed

    def blob_mtime(self, digest: Digest) -> float | None:
        try:
            return self.blob_path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def delete_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._upload_path(upload_id).unlink()

    def trash_upload(self, upload_id: str) -> None:
        """Take an upload file out of `uploads/` at once (a rename); `empty_trash` frees it."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._upload_path(upload_id), self._trash / upload_id)

    def empty_trash(self) -> None:
        """Free the trashed files (slow for large ones: run it off the request path). A
        crash may leave some behind; the next call frees them."""
        with os.scandir(self._trash) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def space(self) -> tuple[int, int]:
        """(bytes an upload could still use, bytes the store's filesystem holds in all)."""
        stats = os.statvfs(self._uploads)
        return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize

    def blob_size(self, digest: Digest) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def delete_blob(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def upload_ids(self) -> list[str]:
        return [p.name for p in self._uploads.iterdir() if is_upload_id(p.name)]

    def upload_idle_since(self, upload_id: str) -> float | None:
        """When the upload last received bytes (its file's mtime), or None if it has no file."""
        try:
            return self._upload_path(upload_id).stat().st_mtime
        except FileNotFoundError:
            return None

    def blob_files(self) -> Iterator[Digest]:
        """The digests of every blob file present, whatever the database says."""
        for name in self.blob_file_names():
            try:
                yield Digest.parse(name)
            except RegistryError:
                continue  # not a blob of ours (the prefix lock, say); leave it alone

    def blob_file_names(self) -> Iterator[str]:
        """`<algorithm>:<file name>` for every file under blobs/, unparsed: garbage collection
        walks the whole store on every pass, and only the few unrecorded names need parsing.
        (os.scandir, not pathlib: a Path per file cost most of a pass on a large store.)"""
        for algorithm_dir in os.scandir(self._blobs):
            if not algorithm_dir.is_dir():
                continue
            for prefix_dir in os.scandir(algorithm_dir.path):
                if not prefix_dir.is_dir():
                    continue
                with os.scandir(prefix_dir.path) as entries:
                    for entry in entries:
                        yield f"{algorithm_dir.name}:{entry.name}"


class _Limited:
    """The first `length` bytes of an open file."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Limited:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
