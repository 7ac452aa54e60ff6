"""The registry's operations without HTTP: uploads, blobs, manifests, tags and referrers, each
a service with its dependencies (the stores, the write pool, the quota and immutability
rules) handed to it. `registry/` translates HTTP to these calls and back; later packages
(the pipeline, the deployer) call them directly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..config import Config
from ..oci.rules import parse_rules
from ..storage.backends import BucketSettings, open_blob_store, open_database, open_metadata
from ..storage.interfaces import BlobStore
from .blobs import BlobService
from .manifests import ManifestService
from .uploads import UploadService


def open_blobs(config: Config) -> BlobStore:
    """The configured blob store: the data directory, or the `blob_store` bucket."""
    bucket = None
    if config.blob_store:
        name, prefix = config.s3_location
        bucket = BucketSettings(
            name, prefix, config.s3_endpoint, config.s3_region, config.s3_redirect, config.s3_timeout
        )
    return open_blob_store(config.data, config.fsync, bucket, config.database_target)


class Services:
    """One process's stores and the services over them, built from the configuration."""

    def __init__(self, config: Config) -> None:
        config.data.mkdir(parents=True, exist_ok=True)
        # One handle per process: the access-control store shares it (`Authority.open`).
        self.database = open_database(config.database_target, config.database_timeout)
        self.meta = open_metadata(self.database)
        self.store = open_blobs(config)
        # Threads that write upload batches while the event loop receives and hashes.
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="upload")
        self.immutable_tags = parse_rules(config.immutable_tags)
        self.quotas = config.quotas
        self.uploads = UploadService(self.meta, self.store, self.pool, config.quotas)
        self.blobs = BlobService(self.meta, self.store, config.gc_grace)
        self.manifests = ManifestService(
            self.meta, self.immutable_tags, config.quotas, config.max_manifest_bytes, config.scan_on_push
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.meta.close()
        self.store.close()
