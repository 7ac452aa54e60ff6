"""Blob reads (with byte ranges) and blob deletion."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from .http import Request, Responder
from .routes import Route

if TYPE_CHECKING:
    from .app import Registry

log = logging.getLogger("cargohold.registry")
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})\Z")


def parse_range(header: str, size: int) -> tuple[int, int]:
    """(offset, length) of a single `bytes=` range; 416 when it cannot be served (the spec's
    table has no code for it, so the answer is the status and a plain message)."""
    found = _RANGE.match(header.strip())
    unsatisfiable = RegistryError.plain(
        416,
        f"range {header[:60]!r} cannot be served from a blob of {size} bytes",
        headers={"content-range": f"bytes */{size}"},
    )
    if not found or (not found[1] and not found[2]):
        raise unsatisfiable
    first, last = found[1], found[2]
    if not first:  # suffix range: the last N bytes
        length = min(int(last), size)
        if length == 0:
            raise unsatisfiable
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise unsatisfiable
    return start, end - start + 1


async def get(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, digest = route.name, Digest.parse(route.arg)
    # A blob someone reads may be about to be referenced: keep it out of garbage collection.
    size = registry.meta.blob_size(name, str(digest), refresh_before=time.time() - registry.config.gc_grace / 2)
    if size is None:
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in {name}")
    stored = registry.blobs.blob_size(digest)
    if stored != size:
        # Never serve content that cannot be what was pushed; say so where operators look.
        log.error("blob %s is damaged: recorded %d bytes, stored %s; run `cargohold scrub`", digest, size, stored)
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is damaged in storage and cannot be served")
    path = registry.blobs.blob_path(digest)
    headers = {
        "content-type": "application/octet-stream",
        "docker-content-digest": str(digest),
        "accept-ranges": "bytes",
        "etag": f'"{digest}"',
        "cache-control": "max-age=31536000",
    }
    offset, length, status = 0, size, 200
    range_header = request.headers.get("range")
    if range_header:
        offset, length = parse_range(range_header, size)
        status = 206
        headers["content-range"] = f"bytes {offset}-{offset + length - 1}/{size}"
    headers["content-length"] = str(length)
    await res.start(status, headers)
    if request.method == "HEAD":
        await res.body(b"")
        return
    await res.file(str(path), offset, length)


async def delete(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, digest = route.name, Digest.parse(route.arg)
    if not registry.meta.unlink_blob(name, str(digest), registry.actor(request)):
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in {name}")
    await res.empty(202, {"docker-content-digest": str(digest)})
