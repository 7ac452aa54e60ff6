"""Parsing and validating manifests and indexes: what the registry must know of a payload.

A manifest is kept byte for byte as pushed; parsing only extracts the reference graph
(config, layers, child manifests, subject) and rejects payloads that are not what they claim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import mediatypes as mt
from .digest import Digest
from .errors import ErrorCode, RegistryError
from .jsontext import JSONTextError, load_json

# Content-Type values that say nothing about the manifest kind.
_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    artifact_type: str | None
    subject: Descriptor | None
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    effective_artifact_type: str | None = None  # what the referrers API reports: `artifact_type_of`

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def required_blobs(self) -> tuple[Descriptor, ...]:
        """Blobs that must be in the repository for the manifest to be accepted."""
        layers = tuple(d for d in self.layers if d.media_type not in mt.NON_DISTRIBUTABLE_LAYERS)
        return ((self.config,) if self.config else ()) + layers


def artifact_type_of(document: dict[str, Any]) -> str | None:
    """The artifact type the referrers API reports for a manifest: its artifactType, else its
    config's media type (image-spec, "Guidelines for Artifact Usage")."""
    value = document.get("artifactType")
    if isinstance(value, str) and value:
        return value
    config = document.get("config")
    value = config.get("mediaType") if isinstance(config, dict) else None
    return value if isinstance(value, str) and value else None


def referrer_descriptor(payload: bytes, media_type: str, digest: str) -> dict[str, Any]:
    """How the referrers API, and the fallback tag schema of registries without it, list a
    manifest: its descriptor with its artifact type and annotations. Lenient, for manifests
    stored elsewhere: what is not there is left out."""
    document = json.loads(payload)
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(payload)}
    if not isinstance(document, dict):
        return descriptor
    artifact_type = artifact_type_of(document)
    if artifact_type:
        descriptor["artifactType"] = artifact_type
    if document.get("annotations"):
        descriptor["annotations"] = document["annotations"]
    return descriptor


def _invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, message)


def normalise_content_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def parse_descriptor(value: Any, where: str = "descriptor") -> Descriptor:
    """A descriptor object, validated; MANIFEST_INVALID naming `where` otherwise."""
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a descriptor object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType must be a non-empty string")
    raw_digest = value.get("digest")
    if not isinstance(raw_digest, str):
        raise _invalid(f"{where}.digest must be a string")
    try:
        digest = Digest.parse(raw_digest)
    except RegistryError as err:
        raise _invalid(f"{where}.digest: {err.message}") from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}.size must be a non-negative integer")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid(f"{where}.artifactType must be a string")
    annotations = value.get("annotations")
    if annotations is not None and not _is_string_map(annotations):
        raise _invalid(f"{where}.annotations must map strings to strings")
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise _invalid(f"{where}.platform must be an object")
    return Descriptor(media_type, digest, size, artifact_type, annotations, platform)


def _is_string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _descriptor_list(document: dict[str, Any], key: str, required: bool) -> tuple[Descriptor, ...]:
    value = document.get(key)
    if value is None:
        if required:
            raise _invalid(f"{key} is required")
        return ()
    if not isinstance(value, list):
        raise _invalid(f"{key} must be an array")
    return tuple(parse_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value))


def inferred_media_type(document: dict[str, Any]) -> str | None:
    """A manifest's type from its body alone: its mediaType, else what its shape says."""
    if isinstance(document.get("mediaType"), str) and document["mediaType"]:
        return str(document["mediaType"])
    if "manifests" in document:
        return mt.OCI_INDEX
    if "config" in document:
        return mt.OCI_MANIFEST
    return None


def _declared_type(document: dict[str, Any], content_type: str | None) -> str:
    header = normalise_content_type(content_type)
    body_type = document.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise _invalid("mediaType must be a string")
    if header in (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED) or document.get("schemaVersion") == 1:
        raise _invalid("Docker schema 1 manifests are not supported; push with a client from this decade")
    if header not in _GENERIC_TYPES:
        if body_type and body_type != header:
            raise _invalid(f"Content-Type {header!r} does not match the manifest's mediaType {body_type!r}")
        declared = header
    else:
        declared = inferred_media_type(document) or ""
        if not declared:
            raise _invalid("cannot tell the manifest's kind: send a Content-Type or a mediaType field")
    if declared not in mt.MANIFEST_TYPES:
        raise _invalid(
            f"unsupported manifest media type {declared!r}; accepted: {', '.join(sorted(mt.MANIFEST_TYPES))}"
        )
    return declared


def parse_manifest(payload: bytes, content_type: str | None = None) -> Manifest:
    """Validate a pushed manifest payload against its declared media type."""
    try:
        document = load_json(payload)
    except JSONTextError as err:
        raise _invalid(f"the manifest is refused: {err}") from None
    if not isinstance(document, dict):
        raise _invalid("manifest must be a JSON object")
    media_type = _declared_type(document, content_type)
    if document.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    annotations = document.get("annotations") or {}
    if not _is_string_map(annotations):
        raise _invalid("annotations must map strings to strings")
    subject = parse_descriptor(document["subject"], "subject") if document.get("subject") is not None else None

    if media_type in mt.INDEXES:
        if "config" in document or "layers" in document:
            raise _invalid(f"an index ({media_type}) has manifests, not config or layers")
        return Manifest(
            media_type,
            artifact_type,
            subject,
            children=_descriptor_list(document, "manifests", required=True),
            annotations=annotations,
            effective_artifact_type=artifact_type_of(document),
        )
    if "manifests" in document:
        raise _invalid(f"an image manifest ({media_type}) has config and layers, not manifests")
    if "config" not in document:
        raise _invalid("config is required")
    return Manifest(
        media_type,
        artifact_type,
        subject,
        config=parse_descriptor(document["config"], "config"),
        layers=_descriptor_list(document, "layers", required=media_type == mt.DOCKER_MANIFEST),
        annotations=annotations,
        effective_artifact_type=artifact_type_of(document),
    )


def accepts(accept_header: str | None, media_type: str) -> bool:
    """Whether a client's Accept header admits a stored manifest of `media_type`.

    No header, a wildcard, or a list that names no manifest type at all is taken as
    "anything": old clients send `Accept: */*` or nothing.
    """
    if not accept_header:
        return True
    offered = {normalise_content_type(part) for part in accept_header.split(",")}
    if media_type in offered or "*/*" in offered or "application/*" in offered:
        return True
    return not (offered & mt.MANIFEST_TYPES)
