"""The registry's scan worker: catalogues, scans and lints the images the queue names.

It runs as its own process (`cargohold scan-worker`, started by `serve` when `scan_on_push` is
set, or run apart on any machine that reaches the stores), so the CPU a scan takes is never taken
from the request path. Any number of workers may share the queue: each job is leased, and a
lease that runs out (its worker died) lets another take the job, so a crash loses none.

A push job reads the image from the blob store once; the catalogue is kept, so a change of the
advisory database only re-matches it (an "advisories" job), without reading a layer again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.errors import RegistryError
from ..oci.manifest import parse_manifest
from ..storage.interfaces import BlobStore, MetadataStore
from ..storage.records import BackendUnavailable
from ..storage.sql import Database
from .advisories import AdvisoryStore
from .inspect import ImageInput, LayerInput, inspect_image
from .layers import LayerError
from .lint import LintInputError, findings_json
from .queue import ADVISORIES
from .results import Job, ScanStore
from .scan import match_catalog

log = logging.getLogger("cargohold.scan")
RETRY_AFTER = 30.0
PRUNE_EVERY = 600.0  # seconds between sweeps for the results of images that are gone


class ImageGone(Exception):
    """The manifest or a blob of the job's image is no longer stored (deleted, collected)."""


class ScanWorker:
    def __init__(
        self, database: Database, meta: MetadataStore, blobs: BlobStore, *, lease: float, name: str = ""
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.lease = lease
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.queue = ScanStore(database)
        self.advisories = AdvisoryStore(database)

    def run(self, stop: threading.Event, idle: float = 1.0, alive: Callable[[], bool] = lambda: True) -> None:
        """Work the queue until `stop` is set (or `alive` says the parent is gone)."""
        pruned = 0.0
        while not stop.is_set() and alive():
            try:
                if time.monotonic() - pruned > PRUNE_EVERY:
                    pruned = time.monotonic()
                    if gone := self.queue.prune():
                        log.info("forgot the scan results of %d image(s) no repository holds", gone)
                worked = self.run_once()
            except BackendUnavailable as err:
                log.warning("scan worker: %s; retrying", err)
                worked = False
            if not worked:
                stop.wait(idle)

    def run_once(self) -> bool:
        """Do one job; False when the queue had none due."""
        job = self.queue.claim(self.name, self.lease)
        if job is None:
            return False
        generation = self.advisories.generation()
        try:
            if job.reason == ADVISORIES and (catalog := self.queue.catalog(job.digest)) is not None:
                changed = self.queue.save_evaluation(job, match_catalog(catalog, self.advisories), generation)
                log.info("re-evaluated %s@%s: %s", job.repo, job.digest, "changed" if changed else "unchanged")
                return True
            inspection = inspect_image(self._image(job))
            found = match_catalog(inspection.catalog, self.advisories)
            lint = findings_json(inspection.lint)
            self.queue.save_catalog(job, inspection.catalog, found, lint, generation)
            log.info(
                "scanned %s@%s: %d packages, %d vulnerabilities, %d lint findings",
                job.repo,
                job.digest,
                len(inspection.catalog.packages),
                len(found),
                len(lint),
            )
        except BackendUnavailable:
            raise
        except (ImageGone, LayerError, LintInputError) as err:  # the same next time: recorded at once
            self.queue.fail(job, str(err), retry_after=0, final=True)
        except Exception as err:  # a bad image must not stop the queue: recorded, retried, then kept as an error
            log.exception("scan of %s@%s failed (attempt %d)", job.repo, job.digest, job.attempts)
            self.queue.fail(job, f"{type(err).__name__}: {err}", RETRY_AFTER)
        return True

    def _image(self, job: Job) -> ImageInput:
        stored = self.meta.manifest_by_digest(job.repo, job.digest)
        if stored is None:
            raise ImageGone(f"manifest {job.digest} is no longer in {job.repo}")
        try:
            manifest = parse_manifest(stored.payload, stored.media_type)
        except RegistryError as err:
            raise ImageGone(f"manifest {job.digest} cannot be read: {err.message}") from None
        if manifest.config is None or manifest.config.media_type not in mt.IMAGE_CONFIGS:
            raise ImageGone(f"{job.digest} is not an image manifest")
        config = self._read(manifest.config.digest, manifest.config.size)
        layers = [
            LayerInput(str(layer.digest), layer.media_type, layer.size, self._opener(layer.digest))
            for layer in manifest.layers
        ]
        return ImageInput(
            reference=f"{job.repo}@{job.digest}",
            digest=job.digest,
            manifest=json.loads(stored.payload),
            config=config,
            layers=layers,
        )

    def _opener(self, digest: Digest) -> Callable[[], BinaryIO]:
        def open_layer() -> BinaryIO:
            try:
                return self.blobs.open_blob(digest)
            except FileNotFoundError:
                raise ImageGone(f"layer {digest} is no longer stored") from None

        return open_layer

    def _read(self, digest: Digest, size: int) -> bytes:
        if size > 4 << 20:
            raise ImageGone(f"config {digest} is larger than 4 MiB")
        try:
            with self.blobs.open_blob(digest) as handle:
                return handle.read()
        except FileNotFoundError:
            raise ImageGone(f"config {digest} is no longer stored") from None
