"""Manifests, tags and referrers of a repository: push, look up, delete, list."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..oci import mediatypes as mt
from ..oci.digest import Digest, looks_like_digest
from ..oci.errors import ErrorCode, RegistryError
from ..oci.manifest import parse_manifest, referrer_descriptor
from ..oci.names import is_valid_tag, validate_tag
from ..oci.rules import Quota, TagRule, protecting_rule
from ..storage.events import Actor
from ..storage.interfaces import MetadataStore
from ..storage.records import (
    ImmutableRule,
    ImmutableTagError,
    ManifestRecord,
    MissingReferences,
    QuotaExceededError,
    StoredManifest,
)
from ..supply.queue import enqueue_new as enqueue_scan
from .quota import quota_refusal


@dataclass(frozen=True, slots=True)
class PushedManifest:
    digest: Digest
    subject: Digest | None  # the manifest it refers to, for the OCI-Subject answer


class ManifestService:
    def __init__(
        self,
        meta: MetadataStore,
        immutable_tags: tuple[TagRule, ...] = (),
        quotas: tuple[Quota, ...] = (),
        max_bytes: int = 4 << 20,
        scan_on_push: tuple[str, ...] = (),
    ) -> None:
        self.meta = meta
        self.scan_on_push = scan_on_push  # repository globs whose images are queued for a scan
        self.max_bytes = max_bytes  # the largest manifest accepted
        self.immutable_tags = immutable_tags
        self.quotas = quotas

    def immutable_rule(self, name: str) -> ImmutableRule:
        return protecting_rule(self.immutable_tags, name)

    def find(self, name: str, reference: str) -> StoredManifest:
        """The manifest a tag or digest names in `name`."""
        if looks_like_digest(reference):
            stored = self.meta.manifest_by_digest(name, str(Digest.parse(reference)))
        else:
            # A tag that could never be pushed is simply not there (as every registry answers,
            # and the conformance suite expects); a push of it is refused as invalid.
            stored = self.meta.manifest_by_tag(name, reference) if is_valid_tag(reference) else None
        if stored is None:
            self._check_repository(name)
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"manifest {reference[:200]} is not in {name}")
        return stored

    def push(self, name: str, reference: str, payload: bytes, content_type: str | None, actor: Actor) -> PushedManifest:
        """Store a manifest byte for byte, under a tag or its digest, once everything it
        references is in `name`."""
        by_digest = looks_like_digest(reference)
        expected = Digest.parse(reference) if by_digest else None
        tag = None if by_digest else validate_tag(reference)
        digest = Digest.of(payload, expected.algorithm if expected else "sha256")
        if expected is not None and digest != expected:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"manifest content has digest {digest}, not {expected}")
        manifest = parse_manifest(payload, content_type)
        record = ManifestRecord(
            digest=str(digest),
            media_type=manifest.media_type,
            artifact_type=manifest.effective_artifact_type,
            subject=str(manifest.subject.digest) if manifest.subject else None,
            payload=payload,
            blobs=tuple(
                (str(d.digest), "config" if d is manifest.config else "layer") for d in manifest.required_blobs
            ),
            children=tuple(str(d.digest) for d in manifest.children),
        )
        scan = None
        if manifest.config and manifest.config.media_type in mt.IMAGE_CONFIGS and self._scanned(name):
            scan = functools.partial(enqueue_scan, digest=str(digest), repo=name)
        try:
            self.meta.put_manifest(name, record, tag, self.immutable_rule(name), self.quotas, actor, scan)
        except ImmutableTagError as err:
            raise immutable_refusal(name, err) from None
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
        return PushedManifest(digest, manifest.subject.digest if manifest.subject else None)

    def _scanned(self, name: str) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in self.scan_on_push)

    def delete(self, name: str, reference: str, actor: Actor) -> None:
        """Delete a manifest (by digest, with every tag on it) or only a tag."""
        immutable = self.immutable_rule(name)
        try:
            if looks_like_digest(reference):
                digest = str(Digest.parse(reference))
                if not self.meta.delete_manifest(name, digest, immutable, actor):
                    raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"manifest {digest} is not in {name}")
                return
            if not is_valid_tag(reference):
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"tag {reference[:200]} is not in {name}")
            if rule := immutable(reference):
                raise ImmutableTagError(reference, rule)
            if not self.meta.delete_tag(name, reference, actor=actor):
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"tag {reference} is not in {name}")
        except ImmutableTagError as err:
            raise immutable_refusal(name, err) from None

    def tags(self, name: str, limit: int | None, last: str | None) -> list[str]:
        self._check_repository(name)
        return self.meta.list_tags(name, limit, last)

    def repositories(self, limit: int | None, last: str | None) -> list[str]:
        return self.meta.list_repositories(limit, last)

    def referrers(self, name: str, subject: Digest, artifact_type: str | None) -> list[dict[str, Any]]:
        """Descriptors of the manifests in `name` whose subject is `subject`."""
        return [
            referrer_descriptor(found.payload, found.media_type, found.digest)
            for found in self.meta.referrers(name, str(subject), artifact_type)
        ]

    def _check_repository(self, name: str) -> None:
        if not self.meta.repository_exists(name):
            raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {name} is not known to this registry")


def immutable_refusal(name: str, err: ImmutableTagError) -> RegistryError:
    return RegistryError(
        ErrorCode.DENIED,
        f"tag {err.tag} in {name} is immutable (rule {err.rule!r}): it cannot be moved or deleted; push a new tag",
    )
