"""The audit trail's table, written in the same transaction as the change it records.

A push, a delete or a tag move and its audit event commit together or not at all, so a crash
never leaves a change nobody can account for; credential changes are recorded alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .sql import Executor


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting, from where, in which request: the audit trail's columns."""

    name: str
    address: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    actor: str
    action: str
    target: str
    outcome: str
    address: str = ""
    request_id: str = ""
    detail: str = ""


def record_event(db: Executor, actor: Actor, action: str, target: str, outcome: str = "ok", detail: str = "") -> None:
    # What a client sent (a name, a path) may hold NUL, which PostgreSQL text refuses: written as \0.
    fields = (actor.name, action, target, outcome, actor.address, actor.request_id, detail)
    db.execute(
        "INSERT INTO audit_event(at, actor, action, target, outcome, address, request_id, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (time.time(), *(field.replace("\0", "\\0") for field in fields)),
    )


def prune_events(db: Executor, older_than: float) -> int:
    """Delete events older than `older_than` seconds; returns how many went."""
    return db.execute("DELETE FROM audit_event WHERE at < ?", (time.time() - older_than,)).rowcount


def query_events(
    db: Executor,
    *,
    since: float | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Newest first; `action` and `target` match as prefixes (`manifest.` finds every manifest event)."""
    rows = db.execute(
        "SELECT at, actor, action, target, outcome, address, request_id, detail FROM audit_event "
        "WHERE at >= ? AND (CAST(? AS TEXT) IS NULL OR actor = ?) "
        "AND (CAST(? AS TEXT) IS NULL OR substr(action, 1, length(?)) = ?) "
        "AND (CAST(? AS TEXT) IS NULL OR substr(target, 1, length(?)) = ?) ORDER BY id DESC LIMIT ?",
        (since or 0, actor, actor, action, action, action, target, target, target, limit),
    )
    return [AuditEvent(*row) for row in rows]
