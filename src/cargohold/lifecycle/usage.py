"""Storage figures and repository removal, shared by the CLI and the management API."""

from __future__ import annotations

from typing import Any

from ..oci.rules import Quota
from ..storage.events import Actor
from ..storage.interfaces import BlobStore, MetadataStore
from ..storage.records import ImmutableRule


def usage_report(meta: MetadataStore, quotas: tuple[Quota, ...]) -> list[dict[str, Any]]:
    """Bytes of unique stored blobs per repository and per quota'd namespace, with their limits."""
    rows: list[dict[str, Any]] = []
    for name in meta.all_repositories():
        limits = [q.limit for q in quotas if q.scope(name) == ("repository", name)]
        rows.append(
            {
                "scope": "repository",
                "name": name,
                "bytes": meta.usage("repository", name),
                "quota": min(limits) if limits else None,
            }
        )
    for quota in quotas:
        if quota.namespace is not None:
            rows.append(
                {
                    "scope": "namespace",
                    "name": quota.namespace,
                    "bytes": meta.usage("namespace", quota.namespace),
                    "quota": quota.limit,
                }
            )
    return rows


def delete_repository(
    meta: MetadataStore,
    store: BlobStore,
    name: str,
    immutable: ImmutableRule | None,
    actor: Actor | None = None,
) -> dict[str, int] | None:
    """Delete a repository's tags, manifests and upload sessions (blobs go at the next GC).
    Raises ImmutableTagError when a rule protects one of its tags; None if there is no such repository."""
    deleted = meta.delete_repository(name, immutable, actor)
    if deleted is None:
        return None
    tags, manifests, uploads = deleted
    for upload_id in uploads:
        store.delete_upload(upload_id)
    return {"tags": tags, "manifests": manifests, "uploads": len(uploads)}
