"""What the stores take and give back, and the refusals they raise: the same for every backend."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_UPLOAD_ID = re.compile(r"^[a-f0-9]{32}\Z")


def is_upload_id(upload_id: str) -> bool:
    """Upload ids are 32 lowercase hex digits, which is what makes them safe storage keys."""
    return bool(_UPLOAD_ID.match(upload_id))


class StorageFullError(OSError):
    """The blob store ran out of space."""


class BackendUnavailable(Exception):
    """The database or the object store cannot be reached, or did not answer in time: the
    request may succeed later, so clients get 503 with Retry-After, never a 500."""

    def __init__(self, backend: str, detail: str, retry_after: int = 5) -> None:
        self.backend = backend
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(f"the {backend} is unavailable ({detail}); retry shortly")


class StorageSetupError(Exception):
    """A store that cannot work as configured (no such bucket, no credentials, access denied):
    a person must change the configuration, so it is said once, at start."""


class BlobMismatchError(Exception):
    """Bytes offered as a blob that are not it: another digest, or another size. Nothing of them
    was stored."""

    def __init__(self, digest: str, detail: str) -> None:
        super().__init__(f"{digest}: {detail}")
        self.digest = digest
        self.detail = detail


class UploadBusyError(Exception):
    """Another request, in this or another worker process, is writing to the upload."""


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: str
    media_type: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """What `put_manifest` stores: the parsed graph, flattened to digests."""

    digest: str
    media_type: str
    artifact_type: str | None
    subject: str | None
    payload: bytes
    blobs: tuple[tuple[str, str], ...]  # (digest, "config" | "layer")
    children: tuple[str, ...]


class ImmutableTagError(Exception):
    """A tag an immutability rule protects would move or disappear."""

    def __init__(self, tag: str, rule: str) -> None:
        self.tag = tag
        self.rule = rule
        super().__init__(f"tag {tag} is immutable (rule {rule})")


# Given a tag of the repository at hand, the immutability rule protecting it, if any.
ImmutableRule = Callable[[str], str | None]


class QuotaExceededError(Exception):
    def __init__(self, scope: str, usage: int, adding: int, limit: int) -> None:
        self.scope, self.usage, self.adding, self.limit = scope, usage, adding, limit
        super().__init__(f"{scope} quota exceeded")


class MissingReferences(Exception):
    def __init__(self, blobs: list[str], manifests: list[str]) -> None:
        self.blobs = blobs
        self.manifests = manifests
        super().__init__(f"missing blobs {blobs}, manifests {manifests}")
