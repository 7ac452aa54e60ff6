"""Reading a blob from a stream while proving it is the blob: `BlobStore.put_blob` of every
store writes what this yields and keeps it only once it has run to the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ..oci.digest import Digest
from .records import BlobMismatchError


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes: fewer only at the end (a socket's read may return less)."""
    pieces: list[bytes] = []
    wanted = size
    while wanted > 0:
        piece = source.read(wanted)
        if not piece:
            break
        pieces.append(piece)
        wanted -= len(piece)
    return b"".join(pieces)


def verified_chunks(source: BinaryIO, digest: Digest, size: int, chunk_size: int) -> Iterator[bytes]:
    """`source` in chunks of `chunk_size` (the last one shorter); raises BlobMismatchError after
    the last when the bytes are not `size` long or do not hash to `digest`, so a caller that
    commits only after the loop never commits a wrong blob."""
    hasher = digest.hasher()
    seen = 0
    while chunk := _read_full(source, min(chunk_size, size + 1 - seen)):
        seen += len(chunk)
        if seen > size:
            raise BlobMismatchError(str(digest), f"longer than the {size} bytes recorded")
        hasher.update(chunk)
        yield chunk
    if seen != size:
        raise BlobMismatchError(str(digest), f"{seen} bytes, not the {size} recorded")
    if hasher.hexdigest() != digest.encoded:
        raise BlobMismatchError(str(digest), f"the content hashes to {digest.algorithm}:{hasher.hexdigest()}")
