"""Applying tag retention policies: which tags go, recorded in the tag history."""

from __future__ import annotations

import time

from ..oci.rules import RetentionPolicy, TagRule, first_policy, protecting_rule
from ..storage.interfaces import MetadataStore


def apply_retention(
    meta: MetadataStore,
    policies: tuple[RetentionPolicy, ...],
    immutable: tuple[TagRule, ...] = (),
    dry_run: bool = False,
    now: float | None = None,
) -> dict[str, list[str]]:
    """Delete (or, dry, list) the tags each repository's policy lets go; immutable tags stay.

    A tag pushed again after the plan was made is left alone: deletion is conditional on the
    tag still pointing where it pointed, pushed when it was.
    """
    now = time.time() if now is None else now
    deleted: dict[str, list[str]] = {}
    if not policies:
        return deleted
    for repo in meta.list_repositories(None, None):
        policy = first_policy(policies, repo)
        if policy is None:
            continue
        tags = {name: (digest, updated) for name, digest, updated in meta.tag_times(repo)}
        doomed = policy.doomed(
            [(name, updated) for name, (_, updated) in tags.items()], now, protecting_rule(immutable, repo)
        )
        gone = [tag for tag in doomed if dry_run or meta.delete_tag(repo, tag, only_if=tags[tag])]
        if gone:
            deleted[repo] = gone
    return deleted
