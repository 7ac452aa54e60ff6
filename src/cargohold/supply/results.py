"""The scan queue and the stored results, in the metadata store.

A push enqueues its image in the push's own transaction (`enqueue`), so a manifest the registry
accepted always has its job; a worker leases the oldest job (`claim`), and a worker that dies
leaves a lease that runs out, after which another takes the job. A request that arrives for an
image while a worker is busy with it bumps the job's `revision`; `finish` removes the job only at
the revision it claimed, so that request is served by another round rather than lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..storage.sql import Database, Executor
from .advisories import package_key
from .packages import Catalog, catalog_from_dict, catalog_to_dict
from .queue import PUSH, enqueue
from .scan import Vulnerability, lookup_names, summarise

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Job:
    id: int
    digest: str
    repo: str
    reason: str
    revision: int
    attempts: int


@dataclass(frozen=True)
class StoredResult:
    digest: str
    repo: str
    status: str  # "ok" or "error"
    error: str
    catalog: Catalog | None
    vulnerabilities: list[Vulnerability]
    lint: list[dict[str, Any]]
    summary: dict[str, int]
    generation: int
    catalogued: float
    evaluated: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "repository": self.repo,
            "status": self.status,
            "error": self.error or None,
            "summary": self.summary,
            "vulnerabilities": [v.to_dict() for v in self.vulnerabilities],
            "lint": self.lint,
            "packages": len(self.catalog.packages) if self.catalog else 0,
            "distro": self.catalog.distro.label if self.catalog and self.catalog.distro else None,
            "advisoryGeneration": self.generation,
            "catalogued": self.catalogued,
            "evaluated": self.evaluated,
        }


class ScanStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def enqueue(self, digest: str, repo: str, reason: str = PUSH) -> None:
        with self.database.transaction() as db:
            enqueue(db, digest, repo, reason)

    def claim(self, worker: str, lease: float) -> Job | None:
        now = time.time()
        with self.database.transaction() as db:
            row = db.execute(
                "SELECT id, digest, repo, reason, revision, attempts FROM scan_job WHERE leased_until < ? "
                "ORDER BY enqueued, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE scan_job SET leased_until = ?, worker = ?, attempts = attempts + 1 WHERE id = ?",
                (now + lease, worker, row[0]),
            )
        return Job(int(row[0]), row[1], row[2], row[3], int(row[4]), int(row[5]) + 1)

    def pending(self) -> int:
        return int(self.database.executor.execute("SELECT count(*) FROM scan_job").fetchone()[0])

    def _done(self, db: Executor, job: Job) -> None:
        """The job goes if nothing was merged into it since the claim; else it is due again."""
        if not db.execute("DELETE FROM scan_job WHERE id = ? AND revision = ?", (job.id, job.revision)).rowcount:
            db.execute("UPDATE scan_job SET leased_until = 0, attempts = 0 WHERE id = ?", (job.id,))

    def save_catalog(
        self,
        job: Job,
        catalog: Catalog,
        vulnerabilities: list[Vulnerability],
        lint: list[dict[str, Any]],
        generation: int,
    ) -> None:
        """A push job's result: the catalogue (and its package index), the findings, the lint."""
        now = time.time()
        keys = sorted({package_key(p.ecosystem, name) for p in catalog.packages for name in lookup_names(p)})
        with self.database.transaction() as db:
            db.execute("DELETE FROM image_package WHERE digest = ?", (job.digest,))
            db.executemany(
                "INSERT INTO image_package(digest, ecosystem_base, name) VALUES (?, ?, ?)",
                [(job.digest, base, name) for base, name in keys],
            )
            db.execute(
                "INSERT INTO scan_result(digest, repo, status, error, catalog, findings, lint, summary, generation, "
                "catalogued, evaluated) VALUES (?, ?, 'ok', '', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET "
                "repo = excluded.repo, status = 'ok', error = '', catalog = excluded.catalog, "
                "findings = excluded.findings, lint = excluded.lint, summary = excluded.summary, "
                "generation = excluded.generation, catalogued = excluded.catalogued, evaluated = excluded.evaluated",
                (
                    job.digest,
                    job.repo,
                    json.dumps(catalog_to_dict(catalog), separators=(",", ":")),
                    _findings(vulnerabilities),
                    json.dumps(lint, separators=(",", ":")),
                    json.dumps(summarise(vulnerabilities)),
                    generation,
                    now,
                    now,
                ),
            )
            self._done(db, job)

    def save_evaluation(self, job: Job, vulnerabilities: list[Vulnerability], generation: int) -> bool:
        """An advisories job's result: new findings for the stored catalogue. The row changes only
        when the findings did; returns whether they did."""
        findings = _findings(vulnerabilities)
        with self.database.transaction() as db:
            changed = db.execute(
                "UPDATE scan_result SET findings = ?, summary = ?, generation = ?, evaluated = ? "
                "WHERE digest = ? AND findings <> ?",
                (findings, json.dumps(summarise(vulnerabilities)), generation, time.time(), job.digest, findings),
            ).rowcount
            self._done(db, job)
        return bool(changed)

    def fail(self, job: Job, error: str, retry_after: float, final: bool = False) -> None:
        """A job that failed: due again after `retry_after`, until MAX_ATTEMPTS (or at once when
        `final`: retrying cannot help), then an error result."""
        now = time.time()
        with self.database.transaction() as db:
            if job.attempts < MAX_ATTEMPTS and not final:
                db.execute(
                    "UPDATE scan_job SET leased_until = ?, last_error = ? WHERE id = ?",
                    (now + retry_after, error, job.id),
                )
                return
            db.execute(
                "INSERT INTO scan_result(digest, repo, status, error, catalog, findings, lint, summary, generation, "
                "catalogued, evaluated) VALUES (?, ?, 'error', ?, 'null', '[]', '[]', '{}', 0, ?, ?) "
                "ON CONFLICT(digest) DO UPDATE SET status = 'error', error = excluded.error, "
                "evaluated = excluded.evaluated",
                (job.digest, job.repo, error, now, now),
            )
            db.execute("DELETE FROM scan_job WHERE id = ?", (job.id,))

    def catalog(self, digest: str) -> Catalog | None:
        row = self.database.executor.execute("SELECT catalog FROM scan_result WHERE digest = ?", (digest,)).fetchone()
        data = json.loads(row[0]) if row else None
        return catalog_from_dict(data) if data else None

    def result(self, digest: str) -> StoredResult | None:
        row = self.database.executor.execute(
            "SELECT digest, repo, status, error, catalog, findings, lint, summary, generation, catalogued, evaluated "
            "FROM scan_result WHERE digest = ?",
            (digest,),
        ).fetchone()
        if row is None:
            return None
        catalog = json.loads(row[4])
        return StoredResult(
            digest=row[0],
            repo=row[1],
            status=row[2],
            error=row[3],
            catalog=catalog_from_dict(catalog) if catalog else None,
            vulnerabilities=[Vulnerability.from_dict(item) for item in json.loads(row[5])],
            lint=json.loads(row[6]),
            summary=json.loads(row[7]),
            generation=int(row[8]),
            catalogued=float(row[9]),
            evaluated=float(row[10]),
        )

    def prune(self) -> int:
        """Forget the results of images no repository holds any more (deleted, collected)."""
        orphans = (
            "SELECT digest FROM scan_result r WHERE NOT EXISTS (SELECT 1 FROM manifest m WHERE m.digest = r.digest)"
        )
        with self.database.transaction() as db:
            gone = [row[0] for row in db.execute(orphans)]
            for digest in gone:
                db.execute("DELETE FROM image_package WHERE digest = ?", (digest,))
                db.execute("DELETE FROM scan_result WHERE digest = ?", (digest,))
                db.execute("DELETE FROM scan_job WHERE digest = ? AND leased_until < ?", (digest, time.time()))
        return len(gone)

    def queued(self, digest: str) -> bool:
        return (
            self.database.executor.execute("SELECT 1 FROM scan_job WHERE digest = ?", (digest,)).fetchone() is not None
        )


def _findings(vulnerabilities: list[Vulnerability]) -> str:
    return json.dumps([v.to_dict() for v in vulnerabilities], separators=(",", ":"), sort_keys=True)
