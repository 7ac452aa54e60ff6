"""The offline advisory database, in the metadata store (SQLite or PostgreSQL, the same SQL).

An import writes OSV records in batches, one transaction each: a record replaces the stored one
only when its `modified` is newer, so importing the same archive twice changes nothing and a
newer archive changes only what changed. In the same transaction as a change, every catalogued
image holding a package the old or the new record names is queued for re-evaluation
(`scan_job`, reason "advisories"), so stored verdicts follow the database without a rescan of
every image, and a crash between the two cannot happen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from packaging.utils import canonicalize_name

from ..storage.sql import Database, Executor
from .osv import Advisory, Affected, parse_advisory, severity_of
from .severity import Rating, severity_rank

BATCH = 500


def ecosystem_base(ecosystem: str) -> str:
    """ "Debian:12" -> "Debian": the part every release of an ecosystem shares."""
    return ecosystem.split(":", 1)[0]


def package_key(ecosystem: str, name: str) -> tuple[str, str]:
    """How the index spells a package: PyPI names compare normalised (PEP 503), others as written."""
    base = ecosystem_base(ecosystem)
    return base, canonicalize_name(name) if base == "PyPI" else name


def _chunks(values: Sequence[str], size: int = 400) -> Iterator[tuple[Sequence[str], str]]:
    """`values` in slices small enough for one statement's parameters, each with its `?, ?, ...`."""
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        yield chunk, ", ".join("?" * len(chunk))


def worst_rating(advisory: Advisory) -> Rating:
    """The advisory's rating for whichever package it rates worst (an entry's own vector or
    urgency counts), stored once per record: the report shows one severity per advisory."""
    ratings = [severity_of(advisory, affected) for affected in advisory.affected] or [severity_of(advisory)]
    return max(ratings, key=lambda rating: (severity_rank(rating.label), rating.score or 0.0))


def normalised_time(value: str) -> str:
    """An RFC 3339 time as one sortable spelling (UTC, microseconds), so `modified` compares as text."""
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class StoredAdvisory:
    id: str
    modified: str
    summary: str
    severity: str
    score: float | None
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class DatabaseState:
    advisories: int
    withdrawn: int
    imported: float | None  # when the last import that changed something finished
    newest: str | None  # the newest `modified` of any record
    generation: int  # counts imports that changed something

    def age_days(self, now: float | None = None) -> float | None:
        """Days since the newest record was modified: how far behind the world the database is."""
        if self.newest is None:
            return None
        newest = datetime.strptime(self.newest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        return max(0.0, ((now or time.time()) - newest) / 86400)


@dataclass
class ImportCounts:
    added: int = 0
    updated: int = 0
    withdrawn: int = 0
    unchanged: int = 0
    requeued: int = 0  # image digests queued for re-evaluation

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.withdrawn


class AdvisoryStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    # -- import ---------------------------------------------------------------------------

    def write(self, advisories: Iterable[Advisory], counts: ImportCounts | None = None) -> ImportCounts:
        """Store `advisories` (BATCH per transaction), newest `modified` winning."""
        counts = counts or ImportCounts()
        batch: list[Advisory] = []
        for advisory in advisories:
            batch.append(advisory)
            if len(batch) >= BATCH:
                self._write_batch(batch, counts)
                batch = []
        if batch:
            self._write_batch(batch, counts)
        return counts

    def _write_batch(self, batch: Sequence[Advisory], counts: ImportCounts) -> None:
        """One transaction, a few statements for the whole batch (each round trip to PostgreSQL
        costs more than the row it carries)."""
        now = time.time()
        newest: dict[str, tuple[str, Advisory]] = {}
        for advisory in batch:
            modified = normalised_time(advisory.modified)
            if advisory.id in newest:
                counts.unchanged += 1  # the same record twice in one import: the newer counts
                if newest[advisory.id][0] >= modified:
                    continue
            newest[advisory.id] = (modified, advisory)
        with self.database.transaction() as db:
            stored: dict[str, str] = {}
            for chunk, marks in _chunks(sorted(newest)):
                stored.update(db.execute(f"SELECT id, modified FROM advisory WHERE id IN ({marks})", chunk).fetchall())
            changed = [(m, a) for key, (m, a) in newest.items() if key not in stored or stored[key] < m]
            counts.unchanged += len(newest) - len(changed)
            if not changed:
                return
            touched: set[tuple[str, str]] = set()
            for chunk, marks in _chunks([advisory.id for _, advisory in changed if advisory.id in stored]):
                where = f"WHERE advisory IN ({marks})"
                touched.update(db.execute(f"SELECT ecosystem_base, name FROM advisory_package {where}", chunk))
                db.execute(f"DELETE FROM advisory_package {where}", chunk)
            records, index = [], []
            for modified, advisory in changed:
                rating = worst_rating(advisory)
                summary = advisory.summary or advisory.details[:200]
                aliases, record = json.dumps(list(advisory.aliases)), json.dumps(advisory.raw, separators=(",", ":"))
                records.append(
                    (
                        advisory.id,
                        modified,
                        advisory.withdrawn,
                        summary,
                        rating.label,
                        rating.score,
                        aliases,
                        record,
                        now,
                    )
                )
                if advisory.withdrawn:
                    counts.withdrawn += 1
                    continue
                counts.added += advisory.id not in stored
                counts.updated += advisory.id in stored
                index += self._index_rows(advisory)
            db.executemany(
                "INSERT INTO advisory(id, modified, withdrawn, summary, severity, score, aliases, record, imported) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET modified = excluded.modified, "
                "withdrawn = excluded.withdrawn, summary = excluded.summary, severity = excluded.severity, "
                "score = excluded.score, aliases = excluded.aliases, record = excluded.record, "
                "imported = excluded.imported",
                records,
            )
            db.executemany(
                "INSERT INTO advisory_package(ecosystem, ecosystem_base, name, advisory, position, affected) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                index,
            )
            touched.update((base, name) for _, base, name, *_ in index)
            if touched:
                counts.requeued += self._requeue(db, touched, now)
            self._bump_generation(db, now)

    @staticmethod
    def _index_rows(advisory: Advisory) -> list[tuple[str, str, str, str, int, str]]:
        rows = []
        for position, affected in enumerate(advisory.affected):
            if not affected.ecosystem or not affected.name:
                continue  # a GIT-only entry names a repository, not a package
            base, name = package_key(affected.ecosystem, affected.name)
            fragment = advisory.raw["affected"][position]
            rows.append((affected.ecosystem, base, name, advisory.id, position, json.dumps(fragment)))
        return rows

    @staticmethod
    def _requeue(db: Executor, touched: set[tuple[str, str]], now: float) -> int:
        queued = 0
        for base, name in sorted(touched):
            queued += db.execute(
                "INSERT INTO scan_job(digest, repo, reason, enqueued) "
                "SELECT ip.digest, r.repo, 'advisories', ? FROM image_package ip "
                "JOIN scan_result r ON r.digest = ip.digest WHERE ip.ecosystem_base = ? AND ip.name = ? "
                "ON CONFLICT(digest) DO UPDATE SET revision = scan_job.revision + 1, enqueued = excluded.enqueued",
                (now, base, name),
            ).rowcount
        return queued

    @staticmethod
    def _bump_generation(db: Executor, now: float) -> None:
        row = db.execute("SELECT value FROM supply_state WHERE key = 'generation'").fetchone()
        generation = int(row[0]) + 1 if row else 1
        for key, value in (("generation", str(generation)), ("imported", repr(now))):
            db.execute(
                "INSERT INTO supply_state(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- reading --------------------------------------------------------------------------

    def candidates(self, keys: Iterable[tuple[str, str]]) -> Iterator[tuple[str, Affected]]:
        """(advisory id, affected entry) for every indexed entry naming one of `keys`
        ((ecosystem base, name) pairs as `package_key` spells them)."""
        by_base: dict[str, list[str]] = {}
        for base, name in set(keys):
            by_base.setdefault(base, []).append(name)
        with self.database.snapshot() as db:
            for base, names in sorted(by_base.items()):
                for chunk, marks in _chunks(sorted(names)):
                    rows = db.execute(
                        "SELECT p.advisory, a.modified, p.affected FROM advisory_package p "
                        "JOIN advisory a ON a.id = p.advisory "
                        f"WHERE p.ecosystem_base = ? AND p.name IN ({marks})",
                        (base, *chunk),
                    ).fetchall()
                    for advisory_id, modified, fragment in rows:
                        record = {"id": advisory_id, "modified": modified, "affected": [json.loads(fragment)]}
                        yield advisory_id, parse_advisory(record).affected[0]

    def described(self, ids: Iterable[str]) -> dict[str, StoredAdvisory]:
        wanted = sorted(set(ids))
        found: dict[str, StoredAdvisory] = {}
        with self.database.snapshot() as db:
            for chunk, marks in _chunks(wanted):
                for row in db.execute(
                    f"SELECT id, modified, summary, severity, score, aliases FROM advisory WHERE id IN ({marks})",
                    chunk,
                ):
                    found[row[0]] = StoredAdvisory(row[0], row[1], row[2], row[3], row[4], tuple(json.loads(row[5])))
        return found

    def record(self, advisory_id: str) -> Advisory | None:
        row = self.database.executor.execute("SELECT record FROM advisory WHERE id = ?", (advisory_id,)).fetchone()
        return parse_advisory(json.loads(row[0])) if row else None

    def generation(self) -> int:
        """How many imports changed the database: stored with each verdict, to tell how current it is."""
        row = self.database.executor.execute("SELECT value FROM supply_state WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def state(self) -> DatabaseState:
        with self.database.snapshot() as db:
            advisories, withdrawn, newest = db.execute(
                "SELECT count(*), count(withdrawn), max(modified) FROM advisory"
            ).fetchone()
            values = dict(db.execute("SELECT key, value FROM supply_state").fetchall())
        imported = float(values["imported"]) if "imported" in values else None
        return DatabaseState(int(advisories), int(withdrawn), imported, newest, int(values.get("generation", 0)))
