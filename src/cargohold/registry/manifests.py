"""Manifest push, pull and delete; referrers; tag listing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..oci import mediatypes as mt
from ..oci.digest import Digest, looks_like_digest
from ..oci.errors import ErrorCode, RegistryError
from ..oci.manifest import accepts, parse_manifest, referrer_descriptor
from ..oci.names import is_valid_tag, validate_tag
from ..storage.metadata import (
    ImmutableTagError,
    ManifestRecord,
    MissingReferences,
    QuotaExceededError,
    StoredManifest,
)
from .http import Request, Responder
from .pagination import page
from .quota import quota_refusal
from .routes import Route

if TYPE_CHECKING:
    from .app import Registry


def _lookup(registry: Registry, name: str, reference: str) -> StoredManifest:
    if looks_like_digest(reference):
        stored = registry.meta.manifest_by_digest(name, str(Digest.parse(reference)))
    else:
        # A tag that could never be pushed is simply not there (as every registry answers,
        # and the conformance suite expects); a PUT of it is refused as invalid.
        stored = registry.meta.manifest_by_tag(name, reference) if is_valid_tag(reference) else None
    if stored is None:
        if not registry.meta.repository_exists(name):
            raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {name} is not known to this registry")
        raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"manifest {reference[:200]} is not in {name}")
    return stored


async def get(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, reference = route.name, route.arg
    stored = _lookup(registry, name, reference)
    accept = request.headers.get("accept")
    if accept is not None and not accepts(accept, stored.media_type):
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {reference} is {stored.media_type}, which this client does not accept (Accept: {accept[:300]})",
        )
    headers = {
        "content-type": stored.media_type,
        "docker-content-digest": stored.digest,
        "content-length": str(len(stored.payload)),
        "etag": f'"{stored.digest}"',
    }
    await res.start(200, headers)
    await res.body(b"" if request.method == "HEAD" else stored.payload)


async def put(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, reference = route.name, route.arg
    by_digest = looks_like_digest(reference)
    expected = Digest.parse(reference) if by_digest else None
    tag = None if by_digest else validate_tag(reference)
    payload = await request.read_body(registry.config.max_manifest_bytes)
    digest = Digest.of(payload, expected.algorithm if expected else "sha256")
    if expected is not None and digest != expected:
        raise RegistryError(ErrorCode.DIGEST_INVALID, f"manifest content has digest {digest}, not {expected}")
    manifest = parse_manifest(payload, request.headers.get("content-type"))
    record = ManifestRecord(
        digest=str(digest),
        media_type=manifest.media_type,
        artifact_type=manifest.effective_artifact_type,
        subject=str(manifest.subject.digest) if manifest.subject else None,
        payload=payload,
        blobs=tuple((str(d.digest), "config" if d is manifest.config else "layer") for d in manifest.required_blobs),
        children=tuple(str(d.digest) for d in manifest.children),
    )
    try:
        registry.meta.put_manifest(
            name, record, tag, registry.immutable_rule(name), registry.config.quotas, registry.actor(request)
        )
    except ImmutableTagError as err:
        raise _immutable(name, err) from None
    except QuotaExceededError as err:
        raise quota_refusal(err, "delete images or raise the quota to push more") from None
    except MissingReferences as missing:
        unknown = missing.blobs + missing.manifests
        kind = "blob" if missing.blobs else "manifest"
        raise RegistryError(
            ErrorCode.MANIFEST_BLOB_UNKNOWN,
            f"{kind} {unknown[0]} referenced by the manifest is not in {name}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            detail={"blobs": missing.blobs, "manifests": missing.manifests},
        ) from None
    headers = {"location": f"/v2/{name}/manifests/{digest}", "docker-content-digest": str(digest)}
    if manifest.subject is not None:
        headers["oci-subject"] = str(manifest.subject.digest)
    await res.empty(201, headers)


def _immutable(name: str, err: ImmutableTagError) -> RegistryError:
    return RegistryError(
        ErrorCode.DENIED,
        f"tag {err.tag} in {name} is immutable (rule {err.rule!r}): it cannot be moved or deleted; push a new tag",
    )


async def delete(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, reference = route.name, route.arg
    immutable = registry.immutable_rule(name)
    try:
        if looks_like_digest(reference):
            digest = str(Digest.parse(reference))
            if not registry.meta.delete_manifest(name, digest, immutable, registry.actor(request)):
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"manifest {digest} is not in {name}")
        else:
            if not is_valid_tag(reference):
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"tag {reference[:200]} is not in {name}")
            tag = reference
            if rule := immutable(tag):
                raise ImmutableTagError(tag, rule)
            if not registry.meta.delete_tag(name, tag, actor=registry.actor(request)):
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"tag {tag} is not in {name}")
    except ImmutableTagError as err:
        raise _immutable(name, err) from None
    await res.empty(202)


async def referrers(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name, subject = route.name, Digest.parse(route.arg)
    artifact_type = request.query("artifactType") or None
    descriptors = []
    for found in registry.meta.referrers(name, str(subject), artifact_type):
        descriptors.append(referrer_descriptor(found.payload, found.media_type, found.digest))
    headers = {"content-type": mt.OCI_INDEX}
    if artifact_type is not None:
        headers["oci-filters-applied"] = "artifactType"
    await res.json(200, {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}, headers)


async def tags(registry: Registry, request: Request, res: Responder, route: Route) -> None:
    name = route.name
    if not registry.meta.repository_exists(name):
        raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {name} is not known to this registry")
    names, headers = page(request, lambda n, last: registry.meta.list_tags(name, n, last))
    await res.json(200, {"name": name, "tags": names}, headers)
