"""The metadata database: repositories, blobs, manifests, tags, uploads.

It is the source of truth: a blob is readable through a repository only if this database
links them, whatever the blob store holds. SQLite in WAL mode is the embedded default;
every registry worker process opens its own connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from ..oci.rules import Quota
from .events import Actor, prune_events, record_event
from .records import (
    ImmutableRule,
    ImmutableTagError,
    ManifestRecord,
    MissingReferences,
    QuotaExceededError,
    Referrer,
    StoredManifest,
)
from .sql import Database, Executor
from .sqlite import SQLiteDatabase

_LINKED_BLOB_SIZE = (
    "SELECT b.size, b.last_touched FROM repository_blob rb JOIN blob b ON b.digest = rb.digest "
    "WHERE rb.repo = ? AND rb.digest = ?"
)
_UNREFERENCED = (
    "SELECT digest, size FROM blob WHERE last_touched < ? "
    "AND NOT EXISTS (SELECT 1 FROM manifest_ref r WHERE r.child = blob.digest) ORDER BY digest"
)


class SQLMetadataStore:
    """Every query of the metadata store, in SQL both SQLite and PostgreSQL run, over the
    database handle a backend gives it (`sql.Database`)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._db = database.executor

    def close(self) -> None:
        self.database.close()

    def transaction(self) -> AbstractContextManager[Executor]:
        return self.database.transaction()

    def snapshot(self) -> AbstractContextManager[Executor]:
        return self.database.snapshot()

    def prune_audit(self, older_than: float) -> int:
        """Drop audit events older than `older_than` seconds."""
        with self.transaction() as db:
            return prune_events(db, older_than)

    # -- repositories ---------------------------------------------------------------------

    def repository_exists(self, repo: str) -> bool:
        return self._db.execute("SELECT 1 FROM repository WHERE name = ?", (repo,)).fetchone() is not None

    @staticmethod
    def _ensure_repository(db: Executor, repo: str, now: float) -> None:
        db.execute("INSERT INTO repository(name, created) VALUES (?, ?) ON CONFLICT DO NOTHING", (repo, now))

    def all_repositories(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM repository ORDER BY name")]

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        # A repository appears in the catalog once it holds a manifest.
        sql = "SELECT name FROM repository r WHERE EXISTS (SELECT 1 FROM manifest m WHERE m.repo = r.name)"
        return self._page(sql, "name", limit, last)

    def _page(self, sql: str, column: str, limit: int | None, last: str | None, *args: object) -> list[str]:
        params: list[object] = list(args)
        if last is not None:
            sql += f" AND {column} > ?"
            params.append(last)
        sql += f" ORDER BY {column}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [row[0] for row in self._db.execute(sql, params)]

    # -- blobs -----------------------------------------------------------------------------

    def blob_size(self, repo: str, digest: str, refresh_before: float | None = None) -> int | None:
        """Size of a blob readable through `repo`, or None.

        With `refresh_before`, a blob last touched before then is touched now, so garbage
        collection's grace period protects it until the manifest that will use it arrives;
        if collection won the race, the blob is reported gone.
        """
        row = self._db.execute(_LINKED_BLOB_SIZE, (repo, digest)).fetchone()
        if row is None:
            return None
        if refresh_before is not None and row[1] < refresh_before:
            with self.transaction() as db:
                touched = db.execute(
                    "UPDATE blob SET last_touched = ? WHERE digest = ?", (time.time(), digest)
                ).rowcount
            if not touched:
                return None
        return int(row[0])

    def blob_digests(self) -> set[str]:
        """Every recorded blob's digest."""
        return {row[0] for row in self._db.execute("SELECT digest FROM blob")}

    def blob_recorded(self, digest: str) -> bool:
        return self._db.execute("SELECT 1 FROM blob WHERE digest = ?", (digest,)).fetchone() is not None

    @staticmethod
    def _doomed_manifests_cte(untagged_before: float | None) -> str:
        """`WITH` clauses naming `doomed(repo, digest)`: the manifests nothing keeps alive.

        Alive: tagged; untagged without a subject when `untagged_before` is None or they are
        newer than it; children of an alive index; referrers whose subject is alive. Nothing
        created after `:created_before` is doomed (a push may still be assembling its index).
        """
        keep_untagged = "TRUE" if untagged_before is None else "m.created >= :untagged_before"
        return f"""
            WITH RECURSIVE alive(repo, digest) AS (
                SELECT repo, digest FROM tag
                UNION
                SELECT repo, digest FROM manifest m WHERE m.subject IS NULL AND {keep_untagged}
                UNION
                -- one recursive term (PostgreSQL allows no more): an alive manifest's children
                -- and referrers are alive
                SELECT kept.repo, kept.digest FROM alive a JOIN (
                    SELECT r.repo, r.manifest AS parent, r.child AS digest FROM manifest_ref r
                        WHERE r.kind = 'manifest'
                    UNION ALL
                    SELECT m.repo, m.subject AS parent, m.digest FROM manifest m WHERE m.subject IS NOT NULL
                ) kept ON kept.repo = a.repo AND kept.parent = a.digest
            ),
            doomed(repo, digest) AS (
                SELECT repo, digest FROM manifest m WHERE m.created < :created_before
                    AND NOT EXISTS (SELECT 1 FROM alive a WHERE a.repo = m.repo AND a.digest = m.digest)
            )
        """

    def delete_unreachable_manifests(self, created_before: float, untagged_before: float | None) -> list[str]:
        """Delete manifests nothing keeps alive (`_doomed_manifests_cte`); returns them as
        `repo@digest`. The whole judgement runs inside one write transaction."""
        sql = self._doomed_manifests_cte(untagged_before) + "SELECT repo, digest FROM doomed"
        params = {"created_before": created_before, "untagged_before": untagged_before}
        with self.transaction() as db:
            doomed = db.execute(sql, params).fetchall()
            db.executemany("DELETE FROM manifest_ref WHERE repo = ? AND manifest = ?", doomed)
            db.executemany("DELETE FROM manifest WHERE repo = ? AND digest = ?", doomed)
        return [f"{repo}@{digest}" for repo, digest in doomed]

    def collection_preview(
        self, created_before: float, untagged_before: float | None, touched_before: float
    ) -> tuple[list[str], list[tuple[str, int]]]:
        """What a collection would free, changing nothing: the manifests `delete_unreachable_manifests`
        would delete (as `repo@digest`), and the blobs nothing would reference once they are gone
        (untouched since `touched_before`). One read transaction, so both come from one snapshot."""
        cte = self._doomed_manifests_cte(untagged_before)
        params = {
            "created_before": created_before,
            "untagged_before": untagged_before,
            "touched_before": touched_before,
        }
        blobs_sql = cte + (
            "SELECT digest, size FROM blob WHERE last_touched < :touched_before AND NOT EXISTS ("
            "SELECT 1 FROM manifest_ref r WHERE r.child = blob.digest AND NOT EXISTS ("
            "SELECT 1 FROM doomed d WHERE d.repo = r.repo AND d.digest = r.manifest)) ORDER BY digest"
        )
        with self.snapshot() as db:
            manifests = [f"{repo}@{digest}" for repo, digest in db.execute(cte + "SELECT * FROM doomed", params)]
            blobs = [(row[0], row[1]) for row in db.execute(blobs_sql, params)]
        return manifests, blobs

    def delete_unreferenced_blobs(self, touched_before: float, limit: int) -> list[tuple[str, int]]:
        """Remove up to `limit` collectable blob records (and their links) in one transaction.

        The condition is evaluated inside the write transaction, so a manifest PUT, mount or
        HEAD that touched or referenced a blob a moment ago keeps it.
        """
        with self.transaction() as db:
            rows = [(r[0], r[1]) for r in db.execute(_UNREFERENCED + " LIMIT ?", (touched_before, limit))]
            digests = [(digest,) for digest, _ in rows]
            db.executemany("DELETE FROM repository_blob WHERE digest = ?", digests)
            db.executemany("DELETE FROM blob WHERE digest = ?", digests)
        return rows

    @staticmethod
    def _scope_filter(kind: str) -> str:
        if kind == "repository":
            return "rb.repo = :name"
        return "substr(rb.repo, 1, length(:name) + 1) = :name || '/'"

    def usage(self, kind: str, name: str, db: Executor | None = None) -> int:
        """Bytes of the unique blobs linked into a repository, or into a namespace's repositories."""
        sql = (
            "SELECT COALESCE(SUM(size), 0) FROM blob WHERE digest IN "
            f"(SELECT rb.digest FROM repository_blob rb WHERE {self._scope_filter(kind)})"
        )
        return int((db or self._db).execute(sql, {"name": name}).fetchone()[0])

    def _check_quotas(self, db: Executor, repo: str, quotas: tuple[Quota, ...], digest: str | None, size: int) -> None:
        """Raise QuotaExceededError if linking `digest` (of `size` bytes) into `repo` breaks a quota;
        with no digest, if the repository's scopes are already over their limits."""
        for quota in quotas:
            scope = quota.scope(repo)
            if scope is None:
                continue
            kind, name = scope
            if digest is not None:
                linked = db.execute(
                    f"SELECT 1 FROM repository_blob rb WHERE rb.digest = :digest AND {self._scope_filter(kind)}",
                    {"digest": digest, "name": name},
                ).fetchone()
                if linked:
                    continue  # already counted there: linking again adds nothing
            usage = self.usage(kind, name, db)
            if usage + size > quota.limit:
                raise QuotaExceededError(f"{kind} {name}", usage, size, quota.limit)

    def check_quotas(self, repo: str, quotas: tuple[Quota, ...], digest: str | None = None, size: int = 0) -> None:
        """The quota check on its own, without a transaction: a cheap early refusal."""
        self._check_quotas(self._db, repo, quotas, digest, size)

    def add_blob(
        self, repo: str, digest: str, size: int, upload_id: str | None = None, quotas: tuple[Quota, ...] = ()
    ) -> None:
        """Record a verified blob and link it into `repo`; drop the finished upload session."""
        now = time.time()
        with self.transaction() as db:
            self._check_quotas(db, repo, quotas, digest, size)
            self._ensure_repository(db, repo, now)
            db.execute(
                "INSERT INTO blob(digest, size, created, last_touched) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(digest) DO UPDATE SET last_touched = excluded.last_touched",
                (digest, size, now, now),
            )
            db.execute(
                "INSERT INTO repository_blob(repo, digest, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (repo, digest, now),
            )
            if upload_id is not None:
                db.execute("DELETE FROM upload WHERE id = ?", (upload_id,))

    def mount_blob(self, repo: str, digest: str, source: str, quotas: tuple[Quota, ...] = ()) -> int | None:
        """Link a blob readable through `source` into `repo`; its size, or None if not readable."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute(_LINKED_BLOB_SIZE, (source, digest)).fetchone()
            if row is None:
                return None
            self._check_quotas(db, repo, quotas, digest, int(row[0]))
            self._ensure_repository(db, repo, now)
            db.execute("UPDATE blob SET last_touched = ? WHERE digest = ?", (now, digest))
            db.execute(
                "INSERT INTO repository_blob(repo, digest, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (repo, digest, now),
            )
            return int(row[0])

    def unlink_blob(self, repo: str, digest: str, actor: Actor | None = None) -> bool:
        with self.transaction() as db:
            cursor = db.execute("DELETE FROM repository_blob WHERE repo = ? AND digest = ?", (repo, digest))
            if cursor.rowcount and actor is not None:
                record_event(db, actor, "blob.delete", f"{repo}@{digest}")
            return cursor.rowcount > 0

    # -- uploads ---------------------------------------------------------------------------

    def create_upload(self, upload_id: str, repo: str) -> None:
        now = time.time()
        with self.transaction() as db:
            self._ensure_repository(db, repo, now)
            db.execute("INSERT INTO upload(id, repo, started) VALUES (?, ?, ?)", (upload_id, repo, now))

    def upload_repository(self, upload_id: str) -> str | None:
        row = self._db.execute("SELECT repo FROM upload WHERE id = ?", (upload_id,)).fetchone()
        return row[0] if row else None

    def delete_upload(self, upload_id: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM upload WHERE id = ?", (upload_id,)).rowcount > 0

    def upload_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT id FROM upload")}

    def blob_records(self) -> Iterator[tuple[str, int]]:
        """Every recorded blob as (digest, size), in digest order."""
        yield from self._db.execute("SELECT digest, size FROM blob ORDER BY digest")

    # -- manifests and tags -------------------------------------------------------------------

    def put_manifest(
        self,
        repo: str,
        record: ManifestRecord,
        tag: str | None,
        immutable: ImmutableRule | None = None,
        quotas: tuple[Quota, ...] = (),
        actor: Actor | None = None,
        also: Callable[[Executor], None] | None = None,
    ) -> None:
        """Store a manifest (and move `tag` to it) if everything it references is in `repo`;
        with an `actor`, the push and any tag move go into the audit trail in the same transaction,
        as do the writes of `also` (a scan job: the push and its job commit together).

        The reference check and the insert share one write transaction, so a concurrent
        delete cannot slip between them.
        """
        now = time.time()
        with self.transaction() as db:
            missing_blobs = [
                digest
                for digest, _ in record.blobs
                if db.execute("SELECT 1 FROM repository_blob WHERE repo = ? AND digest = ?", (repo, digest)).fetchone()
                is None
            ]
            missing_manifests = [
                digest
                for digest in record.children
                if db.execute("SELECT 1 FROM manifest WHERE repo = ? AND digest = ?", (repo, digest)).fetchone() is None
            ]
            if missing_blobs or missing_manifests:
                raise MissingReferences(missing_blobs, missing_manifests)
            self._check_quotas(db, repo, quotas, None, 0)
            self._ensure_repository(db, repo, now)
            db.execute(
                "INSERT INTO manifest(repo, digest, media_type, artifact_type, subject, size, payload, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo, digest) DO NOTHING",
                (
                    repo,
                    record.digest,
                    record.media_type,
                    record.artifact_type,
                    record.subject,
                    len(record.payload),
                    record.payload,
                    now,
                ),
            )
            refs = [(repo, record.digest, d, kind) for d, kind in record.blobs]
            refs += [(repo, record.digest, d, "manifest") for d in record.children]
            db.executemany(
                "INSERT INTO manifest_ref(repo, manifest, child, kind) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", refs
            )
            touched = {d for d, _ in record.blobs}
            db.executemany("UPDATE blob SET last_touched = ? WHERE digest = ?", [(now, d) for d in touched])
            moved_from = self._move_tag(db, repo, tag, record.digest, now, immutable) if tag is not None else None
            if actor is not None:
                record_event(db, actor, "manifest.push", f"{repo}@{record.digest}", detail=f"tag {tag}" if tag else "")
                if moved_from is not None:
                    record_event(db, actor, "tag.move", f"{repo}:{tag}", detail=f"{moved_from} -> {record.digest}")
            if also is not None:
                also(db)

    @staticmethod
    def _move_tag(
        db: Executor, repo: str, tag: str, digest: str, now: float, immutable: ImmutableRule | None
    ) -> str | None:
        row = db.execute("SELECT digest FROM tag WHERE repo = ? AND name = ?", (repo, tag)).fetchone()
        old = row[0] if row else None
        if old == digest:
            return None
        if old is not None and immutable is not None and (rule := immutable(tag)):
            raise ImmutableTagError(tag, rule)
        db.execute(
            "INSERT INTO tag(repo, name, digest, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(repo, name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
            (repo, tag, digest, now),
        )
        db.execute(
            "INSERT INTO tag_event(repo, name, old_digest, new_digest, at) VALUES (?, ?, ?, ?, ?)",
            (repo, tag, old, digest, now),
        )
        return old

    def manifest_by_digest(self, repo: str, digest: str) -> StoredManifest | None:
        row = self._db.execute(
            "SELECT digest, media_type, payload FROM manifest WHERE repo = ? AND digest = ?", (repo, digest)
        ).fetchone()
        return StoredManifest(*row) if row else None

    def manifest_by_tag(self, repo: str, tag: str) -> StoredManifest | None:
        row = self._db.execute(
            "SELECT m.digest, m.media_type, m.payload FROM tag t "
            "JOIN manifest m ON m.repo = t.repo AND m.digest = t.digest WHERE t.repo = ? AND t.name = ?",
            (repo, tag),
        ).fetchone()
        return StoredManifest(*row) if row else None

    def tag_times(self, repo: str) -> list[tuple[str, str, float]]:
        """(tag, digest, last pushed) for every tag of `repo`."""
        return self._db.execute("SELECT name, digest, updated FROM tag WHERE repo = ?", (repo,)).fetchall()

    def delete_tag(
        self, repo: str, tag: str, only_if: tuple[str, float] | None = None, actor: Actor | None = None
    ) -> bool:
        """Delete a tag; with `only_if` = (digest, updated), only if nobody moved it since."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT digest, updated FROM tag WHERE repo = ? AND name = ?", (repo, tag)).fetchone()
            if row is None or (only_if is not None and tuple(row) != only_if):
                return False
            db.execute("DELETE FROM tag WHERE repo = ? AND name = ?", (repo, tag))
            db.execute(
                "INSERT INTO tag_event(repo, name, old_digest, new_digest, at) VALUES (?, ?, ?, NULL, ?)",
                (repo, tag, row[0], now),
            )
            if actor is not None:
                record_event(db, actor, "tag.delete", f"{repo}:{tag}", detail=f"was {row[0]}")
            return True

    def delete_manifest(
        self, repo: str, digest: str, immutable: ImmutableRule | None = None, actor: Actor | None = None
    ) -> bool:
        """Delete a manifest and every tag pointing at it (none of which may be immutable)."""
        now = time.time()
        with self.transaction() as db:
            tags = [row[0] for row in db.execute("SELECT name FROM tag WHERE repo = ? AND digest = ?", (repo, digest))]
            for tag in tags:
                if immutable is not None and (rule := immutable(tag)):
                    raise ImmutableTagError(tag, rule)
            if db.execute("DELETE FROM manifest WHERE repo = ? AND digest = ?", (repo, digest)).rowcount == 0:
                return False
            db.execute("DELETE FROM manifest_ref WHERE repo = ? AND manifest = ?", (repo, digest))
            db.execute("DELETE FROM tag WHERE repo = ? AND digest = ?", (repo, digest))
            db.executemany(
                "INSERT INTO tag_event(repo, name, old_digest, new_digest, at) VALUES (?, ?, ?, NULL, ?)",
                [(repo, t, digest, now) for t in tags],
            )
            if actor is not None:
                record_event(
                    db, actor, "manifest.delete", f"{repo}@{digest}", detail=" ".join(f"tag {t}" for t in tags)
                )
            return True

    def delete_repository(
        self, repo: str, immutable: ImmutableRule | None = None, actor: Actor | None = None
    ) -> tuple[int, int, list[str]] | None:
        """Delete a repository's tags, manifests, blob links and upload sessions (blobs are left to
        garbage collection). Returns (tags, manifests, upload ids), or None if it does not exist."""
        now = time.time()
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM repository WHERE name = ?", (repo,)).fetchone() is None:
                return None
            tags = db.execute("SELECT name, digest FROM tag WHERE repo = ?", (repo,)).fetchall()
            for tag, _ in tags:
                if immutable is not None and (rule := immutable(tag)):
                    raise ImmutableTagError(tag, rule)
            db.executemany(
                "INSERT INTO tag_event(repo, name, old_digest, new_digest, at) VALUES (?, ?, ?, NULL, ?)",
                [(repo, tag, digest, now) for tag, digest in tags],
            )
            uploads = [row[0] for row in db.execute("SELECT id FROM upload WHERE repo = ?", (repo,))]
            manifests = db.execute("DELETE FROM manifest WHERE repo = ?", (repo,)).rowcount
            for table in ("tag", "manifest_ref", "repository_blob", "upload"):
                db.execute(f"DELETE FROM {table} WHERE repo = ?", (repo,))
            db.execute("DELETE FROM repository WHERE name = ?", (repo,))
            if actor is not None:
                record_event(
                    db, actor, "repository.delete", repo, detail=f"{len(tags)} tag(s), {manifests} manifest(s)"
                )
            return len(tags), manifests, uploads

    def list_tags(self, repo: str, limit: int | None, last: str | None) -> list[str]:
        return self._page("SELECT name FROM tag WHERE repo = ?", "name", limit, last, repo)

    def referrers(self, repo: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        sql = "SELECT digest, media_type, artifact_type, size, payload FROM manifest WHERE repo = ? AND subject = ?"
        params: list[object] = [repo, subject]
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            params.append(artifact_type)
        return [Referrer(*row) for row in self._db.execute(sql + " ORDER BY created, digest", params)]


class SQLiteMetadataStore(SQLMetadataStore):
    """The metadata store on its own SQLite database file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDatabase(self.path))
