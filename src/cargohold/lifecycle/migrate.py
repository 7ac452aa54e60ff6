"""Copying a whole registry from one pair of stores to another: in practice the embedded default
(SQLite + the data directory's blobs) to PostgreSQL + S3, but any metadata database and blob
store to any other (`cargohold migrate`; docs/operations.md has the procedure).

The guarantees and what they rest on:
- The copy is of one moment: every source row is read inside one snapshot, and the source's
  scheduled jobs are led by this process throughout, so a server still running on it is found
  (it leads them) and refused. Row counts read again at the end show a write that slipped in.
- The target never references a blob it lacks: every blob is copied (streamed, its digest
  verified on the way: `BlobStore.put_blob`) before any row, and a source blob that is corrupt
  or missing stops the migration before the rows, naming it.
- Resumable: blobs already at the target with their size are skipped, rows go in with
  `ON CONFLICT DO NOTHING` under their own keys (ids included), so a run cut off anywhere can
  be run again and completes without duplicating anything; a rerun of a finished migration
  copies nothing.
- Never a merge with another registry: before anything is written, every row the target
  holds must be the source's row under the same key, unchanged. A target that holds anything
  else (another registry, or this one after it started serving) is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..oci.digest import Digest
from ..storage.backends import advance_identities
from ..storage.interfaces import BlobStore
from ..storage.records import BlobMismatchError
from ..storage.sql import Database, Executor
from .scheduler import Maintenance

BATCH = 500  # rows per read and per target transaction


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]  # every column, the key's included
    booleans: tuple[str, ...] = ()  # INTEGER in SQLite, BOOLEAN in PostgreSQL
    identity: str = ""  # PostgreSQL's identity column, whose sequence must follow the copied ids


# Every table of the schema (storage/migrations/versions/) that holds the registry, in an order
# that puts each row after what it references. tests/test_migrate.py holds this and DROPPED to
# the schema's tables and columns, so a new table cannot be left out unnoticed.
TABLES = (
    Table("repository", ("name",), ("name", "created")),
    Table("blob", ("digest",), ("digest", "size", "created", "last_touched")),
    Table("repository_blob", ("repo", "digest"), ("repo", "digest", "created")),
    Table(
        "manifest",
        ("repo", "digest"),
        ("repo", "digest", "media_type", "artifact_type", "subject", "size", "payload", "created"),
    ),
    Table("manifest_ref", ("repo", "manifest", "child", "kind"), ("repo", "manifest", "child", "kind")),
    Table("tag", ("repo", "name"), ("repo", "name", "digest", "updated")),
    Table("tag_event", ("id",), ("id", "repo", "name", "old_digest", "new_digest", "at"), identity="id"),
    Table(
        "principal",
        ("id",),
        ("id", "name", "kind", "password_hash", "admin", "description", "created", "expires"),
        identity="id",
    ),
    Table("group_member", ("group_name", "principal_id"), ("group_name", "principal_id")),
    Table("policy", ("id",), ("id", "subject", "pattern", "actions", "created"), identity="id"),
    Table(
        "credential",
        ("id",),
        ("id", "principal_id", "kind", "name", "secret_digest", "grants", "created", "expires", "revoked", "last_used"),
        identity="id",
    ),
    Table(
        "audit_event",
        ("id",),
        ("id", "at", "actor", "action", "target", "outcome", "address", "request_id", "detail"),
        identity="id",
    ),
    # Copied sealed, as they are: the target must run with the source's secret file.
    Table("signing_key", ("kid",), ("kid", "sealed", "created", "active"), booleans=("active",)),
    # The supply chain: the advisory database, the stored verdicts, and the scans still queued.
    Table(
        "advisory",
        ("id",),
        ("id", "modified", "withdrawn", "summary", "severity", "score", "aliases", "record", "imported"),
    ),
    Table(
        "advisory_package",
        ("ecosystem_base", "name", "advisory", "position"),
        ("ecosystem", "ecosystem_base", "name", "advisory", "position", "affected"),
    ),
    Table("image_package", ("ecosystem_base", "name", "digest"), ("digest", "ecosystem_base", "name")),
    Table(
        "scan_result",
        ("digest",),
        (
            "digest",
            "repo",
            "status",
            "error",
            "catalog",
            "findings",
            "lint",
            "summary",
            "generation",
            "catalogued",
            "evaluated",
        ),
    ),
    Table(
        "scan_job",
        ("id",),
        ("id", "digest", "repo", "reason", "enqueued", "revision", "leased_until", "worker", "attempts", "last_error"),
        identity="id",
    ),
    Table("supply_state", ("key",), ("key", "value")),
)

# The tables not copied, and why.
DROPPED = {
    "upload": "upload sessions in progress: their clients start again (the bytes are not moved)",
    "login_failure": "failed-login counts, which only throttle the next few minutes",
    "alembic_version": "the target's revision comes from its own schema upgrade",
}

# The source's scheduled jobs, led by the migration while it runs (`Database.try_lead`).
JOBS = tuple(
    job.__name__
    for job in (Maintenance.expire_uploads, Maintenance.prune_audit, Maintenance.retain, Maintenance.collect_garbage)
)


class MigrationRefused(Exception):
    """The migration cannot start (or cannot safely go on); the message says why, in one line."""


@dataclass
class Progress:
    blobs_done: int
    blobs_total: int
    bytes_done: int
    bytes_total: int
    bytes_copied: int


@dataclass
class MigrationReport:
    dry_run: bool = False
    blobs: int = 0  # recorded at the source
    blob_bytes: int = 0
    blobs_copied: int = 0  # or, in a dry run, to copy
    bytes_copied: int = 0
    blobs_present: int = 0  # at the target already, with their size
    corrupt: list[str] = field(default_factory=list)  # "digest: what is wrong"
    missing: list[str] = field(default_factory=list)
    rows_copied: dict[str, int] = field(default_factory=dict)  # or, in a dry run, to copy
    rows_present: dict[str, int] = field(default_factory=dict)
    source_changed: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.source_changed)


def _normal(value: Any) -> Any:
    """A value as both databases give it back, for comparing rows across them."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _batches(db: Executor, table: Table) -> Iterator[list[tuple[Any, ...]]]:
    """Every row of `table` in key order, a batch at a time (keyset pagination: each query
    starts after the last key seen, so a large table is never read whole)."""
    columns, key = ", ".join(table.columns), ", ".join(table.key)
    positions = [table.columns.index(k) for k in table.key]
    last: tuple[Any, ...] | None = None
    while True:
        after = "" if last is None else f" WHERE ({key}) > ({', '.join('?' * len(last))})"
        sql = f"SELECT {columns} FROM {table.name}{after} ORDER BY {key} LIMIT {BATCH}"
        rows = [tuple(row) for row in db.execute(sql, last or ())]
        if not rows:
            return
        yield rows
        last = tuple(rows[-1][p] for p in positions)


def _count(db: Executor, table: Table) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0])


def _fingerprint(db: Executor) -> dict[str, int]:
    return {table.name: _count(db, table) for table in TABLES}


def _lead(database: Database, where: str) -> None:
    for job in JOBS:
        if not database.try_lead(job):
            raise MigrationRefused(
                f"a cargohold server is running on the {where} (it leads the scheduled job {job}): stop it first"
            )


def _check_target(source: Executor, target: Executor, report: MigrationReport) -> None:
    """Every row the target holds must be the source's row under that key, unchanged: then the
    target is empty or what an earlier run of this migration left, and copying on completes it."""
    for table in TABLES:
        where = " AND ".join(f"{k} = ?" for k in table.key)
        lookup = f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {where}"
        positions = [table.columns.index(k) for k in table.key]
        present = 0
        for rows in _batches(target, table):
            for row in rows:
                key = tuple(row[p] for p in positions)
                found = source.execute(lookup, key).fetchone()
                if found is None or tuple(map(_normal, found)) != tuple(map(_normal, row)):
                    shown = ", ".join(f"{k}={v!r}"[:80] for k, v in zip(table.key, key, strict=True))
                    raise MigrationRefused(
                        f"the target database already holds registry data that is not the source's "
                        f"({table.name} {shown}): migrate into a new, empty database"
                    )
            present += len(rows)
        report.rows_present[table.name] = present


def _copy_blobs(
    source_db: Executor,
    source: BlobStore,
    target: BlobStore,
    report: MigrationReport,
    dry_run: bool,
    progress: Callable[[Progress], None],
) -> None:
    row = source_db.execute("SELECT count(*), coalesce(sum(size), 0) FROM blob").fetchone()
    report.blobs, report.blob_bytes = int(row[0]), int(row[1])
    done = done_bytes = 0
    shown = 0.0
    blob_table = next(t for t in TABLES if t.name == "blob")
    for rows in _batches(source_db, blob_table):
        for text, size, *_ in rows:
            digest = Digest.parse(text)
            if target.blob_size(digest) == size:
                report.blobs_present += 1
            elif dry_run:
                report.blobs_copied += 1
                report.bytes_copied += size
            else:
                try:
                    with source.open_blob(digest) as stream, target.publishing(digest):
                        target.put_blob(digest, stream, size)
                except FileNotFoundError:
                    report.missing.append(text)
                except BlobMismatchError as err:
                    report.corrupt.append(f"{text}: {err.detail}")
                else:
                    report.blobs_copied += 1
                    report.bytes_copied += size
            done += 1
            done_bytes += size
            if time.monotonic() - shown >= 1.0 or done == report.blobs:
                shown = time.monotonic()
                progress(Progress(done, report.blobs, done_bytes, report.blob_bytes, report.bytes_copied))


def _copy_rows(source: Executor, target: Database, report: MigrationReport, dry_run: bool) -> None:
    for table in TABLES:
        report.rows_copied[table.name] = _count(source, table) - report.rows_present[table.name]
        if dry_run:
            continue
        booleans = [table.columns.index(c) for c in table.booleans]
        insert = (
            f"INSERT INTO {table.name}({', '.join(table.columns)}) "
            f"VALUES ({', '.join('?' * len(table.columns))}) ON CONFLICT DO NOTHING"
        )
        for rows in _batches(source, table):
            if booleans:  # bool binds as 1/0 in SQLite and as boolean in PostgreSQL
                rows = [tuple(bool(v) if i in booleans else v for i, v in enumerate(r)) for r in rows]
            with target.transaction() as db:
                db.executemany(insert, rows)
    # Ids were copied as they are: the target's own id generation must continue past them.
    advance_identities(target, [(table.name, table.identity) for table in TABLES if table.identity])


def migrate(
    source_db: Database,
    source_blobs: BlobStore,
    target_db: Database,
    target_blobs: BlobStore,
    dry_run: bool = False,
    progress: Callable[[Progress], None] = lambda _: None,
) -> MigrationReport:
    """Copy the registry in `source_db` + `source_blobs` into `target_db` + `target_blobs`
    (databases at the current schema): blobs, then rows. With `dry_run`, count what would be
    copied and write nothing. Raises MigrationRefused before writing anything when a server
    runs on either side or the target holds other data."""
    started = time.monotonic()
    report = MigrationReport(dry_run=dry_run)
    _lead(source_db, "source")
    _lead(target_db, "target")
    # A listing fails on a missing bucket, where a blob's HEAD would just say "not there".
    next(iter(target_blobs.blob_file_names()), None)
    with source_db.snapshot() as source:
        before = _fingerprint(source)
        _check_target(source, target_db.executor, report)
        _copy_blobs(source, source_blobs, target_blobs, report, dry_run, progress)
        if report.corrupt or report.missing:
            report.seconds = time.monotonic() - started
            return report  # no row may reference a blob the target lacks
        _copy_rows(source, target_db, report, dry_run)
    report.source_changed = _fingerprint(source_db.executor) != before
    report.seconds = time.monotonic() - started
    return report
