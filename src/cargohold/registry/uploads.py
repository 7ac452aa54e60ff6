"""Upload endpoints: HTTP in, `UploadService` calls, HTTP out."""

from __future__ import annotations

import re

from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from ..oci.names import is_valid_name
from ..services import Services
from ..services.uploads import ChunkOutOfOrder
from .http import Request, Responder
from .routes import Route

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d+|\*))?\Z")


def _progress_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "location": f"/v2/{name}/blobs/uploads/{upload_id}",
        "range": f"0-{max(size - 1, 0)}",
        "docker-upload-uuid": upload_id,
    }


def _created_headers(name: str, digest: Digest) -> dict[str, str]:
    return {"location": f"/v2/{name}/blobs/{digest}", "docker-content-digest": str(digest)}


def _chunk(request: Request) -> tuple[int, int] | None:
    """The first and last offset a Content-Range header gives the body, if it has one."""
    content_range = request.headers.get("content-range")
    if content_range is None:
        return None
    found = _CONTENT_RANGE.match(content_range.strip())
    if not found:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID, f"malformed Content-Range {content_range[:60]!r}; expected start-end"
        )
    return int(found[1]), int(found[2])


def _out_of_order(err: ChunkOutOfOrder, name: str, upload_id: str) -> RegistryError:
    return RegistryError(
        ErrorCode.BLOB_UPLOAD_INVALID, str(err), status=416, headers=_progress_headers(name, upload_id, err.size)
    )


async def start(services: Services, request: Request, res: Responder, route: Route) -> None:
    """POST /v2/<name>/blobs/uploads/ — mount, monolithic upload, or a new session."""
    name = route.name
    mount = request.query("mount")
    source = request.query("from")
    if mount is not None and source:
        digest = Digest.parse(mount)
        # A mount that cannot be done becomes a normal upload, as the spec says.
        if (
            is_valid_name(source)
            and request.caller.may(source, "pull")
            and services.uploads.mount(name, digest, source)
        ):
            await res.empty(201, _created_headers(name, digest))
            return
    raw_digest = request.query("digest")
    if raw_digest is not None:
        digest = Digest.parse(raw_digest)
        await services.uploads.push(name, digest, request)
        await res.empty(201, _created_headers(name, digest))
        return
    upload_id = services.uploads.begin(name)
    headers = _progress_headers(name, upload_id, 0)
    headers["oci-chunk-min-length"] = "0"
    await res.empty(202, headers)


async def patch(services: Services, request: Request, res: Responder, route: Route) -> None:
    """PATCH — append one chunk, which must start where the session ends."""
    name, upload_id = route.name, route.arg
    try:
        size = await services.uploads.append(name, upload_id, request, _chunk(request))
    except ChunkOutOfOrder as err:
        raise _out_of_order(err, name, upload_id) from None
    await res.empty(202, _progress_headers(name, upload_id, size))


async def finish(services: Services, request: Request, res: Responder, route: Route) -> None:
    """PUT ?digest= — append an optional last chunk, verify, and store the blob."""
    name, upload_id = route.name, route.arg
    raw_digest = request.query("digest")
    if raw_digest is None:
        services.uploads.check_session(name, upload_id)
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required to finish an upload")
    digest = Digest.parse(raw_digest)
    try:
        await services.uploads.complete(name, upload_id, digest, request, _chunk(request))
    except ChunkOutOfOrder as err:
        raise _out_of_order(err, name, upload_id) from None
    await res.empty(201, _created_headers(name, digest))


async def status(services: Services, request: Request, res: Responder, route: Route) -> None:
    name, upload_id = route.name, route.arg
    size = await services.uploads.size(name, upload_id)
    await res.empty(204, _progress_headers(name, upload_id, size))


async def cancel(services: Services, request: Request, res: Responder, route: Route) -> None:
    name, upload_id = route.name, route.arg
    await services.uploads.cancel(name, upload_id)
    await res.empty(204)
