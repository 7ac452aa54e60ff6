"""Queueing an image for the scan worker, inside the caller's transaction: what a push needs of
the supply chain, and nothing more (the registry's workers import this, not the scanner)."""

from __future__ import annotations

import time

from ..storage.sql import Executor

# Reasons, strongest first: a push needs the image read; advisories only a new match.
PUSH, ADVISORIES = "push", "advisories"


def enqueue(db: Executor, digest: str, repo: str, reason: str = PUSH) -> None:
    """Queue `digest` (inside the caller's transaction); merges into a pending job of the image."""
    db.execute(
        "INSERT INTO scan_job(digest, repo, reason, enqueued) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(digest) DO UPDATE SET revision = scan_job.revision + 1, enqueued = excluded.enqueued, "
        "reason = CASE WHEN excluded.reason = 'push' THEN 'push' ELSE scan_job.reason END",
        (digest, repo, reason, time.time()),
    )


def enqueue_new(db: Executor, digest: str, repo: str) -> None:
    """Queue a pushed image unless it was catalogued already (the same image pushed elsewhere)."""
    if db.execute("SELECT 1 FROM scan_result WHERE digest = ?", (digest,)).fetchone() is None:
        enqueue(db, digest, repo, PUSH)
