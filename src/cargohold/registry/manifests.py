"""Manifest, tag-list and referrers endpoints over `ManifestService`."""

from __future__ import annotations

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.errors import ErrorCode, RegistryError
from ..oci.manifest import accepts
from ..services import Services
from .access import caller_actor
from .http import Request, Responder
from .pagination import page
from .routes import Route


async def get(services: Services, request: Request, res: Responder, route: Route) -> None:
    stored = services.manifests.find(route.name, route.arg)
    accept = request.headers.get("accept")
    if accept is not None and not accepts(accept, stored.media_type):
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {route.arg} is {stored.media_type}, which this client does not accept (Accept: {accept[:300]})",
        )
    headers = {
        "content-type": stored.media_type,
        "docker-content-digest": stored.digest,
        "content-length": str(len(stored.payload)),
        "etag": f'"{stored.digest}"',
    }
    await res.start(200, headers)
    await res.body(b"" if request.method == "HEAD" else stored.payload)


async def put(services: Services, request: Request, res: Responder, route: Route) -> None:
    name = route.name
    payload = await request.read_body(services.manifests.max_bytes)
    pushed = services.manifests.push(
        name, route.arg, payload, request.headers.get("content-type"), caller_actor(request)
    )
    headers = {"location": f"/v2/{name}/manifests/{pushed.digest}", "docker-content-digest": str(pushed.digest)}
    if pushed.subject is not None:
        headers["oci-subject"] = str(pushed.subject)
    await res.empty(201, headers)


async def delete(services: Services, request: Request, res: Responder, route: Route) -> None:
    services.manifests.delete(route.name, route.arg, caller_actor(request))
    await res.empty(202)


async def referrers(services: Services, request: Request, res: Responder, route: Route) -> None:
    artifact_type = request.query("artifactType") or None
    descriptors = services.manifests.referrers(route.name, Digest.parse(route.arg), artifact_type)
    headers = {"content-type": mt.OCI_INDEX}
    if artifact_type is not None:
        headers["oci-filters-applied"] = "artifactType"
    await res.json(200, {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}, headers)


async def tags(services: Services, request: Request, res: Responder, route: Route) -> None:
    name = route.name
    names, headers = page(request, lambda n, last: services.manifests.tags(name, n, last))
    await res.json(200, {"name": name, "tags": names}, headers)
