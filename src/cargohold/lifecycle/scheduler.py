"""The maintenance a running server does on its own: upload expiry, audit pruning, retention
and garbage collection, each every so often in a pool thread."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor

from ..config import Config
from ..oci.rules import TagRule
from ..storage.backends import open_metadata
from ..storage.interfaces import BlobStore, MetadataStore
from ..storage.records import BackendUnavailable
from ..storage.sql import Database
from .gc import collect_garbage
from .retention import apply_retention
from .uploads import expire_uploads

log = logging.getLogger("cargohold.registry")
# Seconds after start before the jobs first run (sooner if their interval is shorter): a
# restarting registry first serves the clients waiting for it.
FIRST_RUN_DELAY = 5.0

Job = Callable[[MetadataStore], None]


class Maintenance:
    """Schedules the jobs the config asks for. Every worker process of every replica schedules
    them, but only the one that leads a job (`Database.try_lead`: one process among all that
    share the database, per job, so a process that does not schedule GC never holds GC's lead)
    runs it; the others ask again at each run and take over when the leader is gone. Within one
    machine a lock file per job also keeps any two processes from running it at once."""

    def __init__(
        self,
        config: Config,
        blobs: BlobStore,
        immutable_tags: tuple[TagRule, ...],
        pool: Executor,
        database: Database,
    ) -> None:
        self.config = config
        self.blobs = blobs
        self.immutable_tags = immutable_tags
        self.pool = pool
        self.database = database
        self._leading: dict[str, bool] = {}  # per job, as last found
        self._lead_lock = threading.Lock()

    def start(self) -> list[asyncio.Task[None]]:
        config = self.config
        jobs: list[tuple[float, Job]] = [(config.upload_sweep_interval, self.expire_uploads)]
        if config.audit_retention > 0:
            jobs.append((config.upload_sweep_interval, self.prune_audit))
        if config.retention:
            jobs.append((config.retention_interval, self.retain))
        if config.gc_interval > 0:
            jobs.append((config.gc_interval, self.collect_garbage))
        return [asyncio.create_task(self._every(interval, job)) for interval, job in jobs]

    async def _every(self, interval: float, job: Job) -> None:
        """Run `job` now and then in a pool thread, with a database connection of its own (a
        connection's transactions must not interleave with the event loop's)."""
        lock_path = self.config.data / f".{job.__name__}.lock"

        def run() -> None:
            if not self._leads(job.__name__):
                return
            with open(lock_path, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another worker is running it right now
                started = time.monotonic()
                meta = open_metadata(self.config.database_target, self.config.database_timeout)
                try:
                    job(meta)
                finally:
                    meta.close()
                log.debug("scheduled job %s ran in %.3f s", job.__name__, time.monotonic() - started)

        loop = asyncio.get_running_loop()
        await asyncio.sleep(min(interval, FIRST_RUN_DELAY))
        while True:
            try:
                await loop.run_in_executor(self.pool, run)
            except BackendUnavailable as err:  # it runs again next time; one line, no traceback
                log.warning("maintenance job %s skipped: %s", job.__name__, err)
            except Exception:
                log.exception("maintenance job %s failed", job.__name__)
            await asyncio.sleep(interval)

    def _leads(self, job: str) -> bool:
        """Whether this process leads `job`; a change is logged once."""
        with self._lead_lock:
            leading = self.database.try_lead(job)
            before = self._leading.get(job)
            if leading != before:
                if leading:
                    log.info("this process leads the scheduled job %s", job)
                elif before:
                    log.warning("this process no longer leads the scheduled job %s (its database session ended)", job)
                else:
                    log.info("another process leads the scheduled job %s", job)
                self._leading[job] = leading
            return leading

    def expire_uploads(self, meta: MetadataStore) -> None:
        expired = expire_uploads(meta, self.blobs, self.config.upload_max_age)
        if expired:
            log.info("expired %d abandoned upload session(s)", len(expired))

    def prune_audit(self, meta: MetadataStore) -> None:
        pruned = meta.prune_audit(self.config.audit_retention)
        if pruned:
            log.info("pruned %d audit event(s) older than the audit retention", pruned)

    def retain(self, meta: MetadataStore) -> None:
        for repo, tags in apply_retention(meta, self.config.retention, self.immutable_tags).items():
            log.info("retention deleted %d tag(s) of %s: %s", len(tags), repo, ", ".join(tags))

    def collect_garbage(self, meta: MetadataStore) -> None:
        report = collect_garbage(meta, self.blobs, self.config.gc_grace, untagged_age=self.config.gc_untagged_age)
        if report.manifests or report.blobs or report.orphan_files:
            log.info("garbage collection %s", report.summary())
