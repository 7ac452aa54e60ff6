"""Blob endpoints: reads (with byte ranges) and unlinks over `BlobService`."""

from __future__ import annotations

import re

from ..oci.digest import Digest
from ..oci.errors import RegistryError
from ..services import Services
from .access import caller_actor
from .http import Request, Responder
from .routes import Route

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


async def get(services: Services, request: Request, res: Responder, route: Route) -> None:
    blob = services.blobs.find(route.name, Digest.parse(route.arg))
    if blob.url is not None and request.method == "GET":
        # The bytes come from the object store directly, as Distribution's `redirect` does.
        await res.empty(307, {"location": blob.url, "docker-content-digest": str(blob.digest)})
        return
    headers = {
        "content-type": "application/octet-stream",
        "docker-content-digest": str(blob.digest),
        "accept-ranges": "bytes",
        "etag": f'"{blob.digest}"',
        "cache-control": "max-age=31536000",
    }
    offset, length, status = 0, blob.size, 200
    range_header = request.headers.get("range")
    if range_header:
        offset, length = parse_range(range_header, blob.size)
        status = 206
        headers["content-range"] = f"bytes {offset}-{offset + length - 1}/{blob.size}"
    headers["content-length"] = str(length)
    await res.start(status, headers)
    if request.method == "HEAD":
        await res.body(b"")
        return
    if blob.path is not None:
        await res.file(str(blob.path), offset, length)
    else:
        await res.stream(services.blobs.open(blob, offset, length), length)


async def delete(services: Services, request: Request, res: Responder, route: Route) -> None:
    digest = Digest.parse(route.arg)
    services.blobs.unlink(route.name, digest, caller_actor(request))
    await res.empty(202, {"docker-content-digest": str(digest)})
