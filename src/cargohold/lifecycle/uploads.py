"""Expiry of abandoned upload sessions, with their temporary data."""

from __future__ import annotations

import time

from ..storage.interfaces import BlobStore, MetadataStore
from ..storage.records import UploadBusyError


def expire_uploads(meta: MetadataStore, store: BlobStore, max_age: float, now: float | None = None) -> list[str]:
    """Remove sessions that received nothing for `max_age` seconds; returns their ids.

    A session some request is writing to right now is locked and left alone, however old.
    Files without a session (left by a crash between the two) go the same way, and so do
    trashed upload files a crash kept from being freed.
    """
    store.empty_trash()
    cutoff = (time.time() if now is None else now) - max_age
    expired = []
    for upload_id in sorted(meta.upload_ids() | set(store.upload_ids())):
        idle_since = store.upload_idle_since(upload_id)
        if idle_since is not None and idle_since >= cutoff:
            continue
        try:
            writer = store.open_upload(upload_id) if idle_since is not None else None
        except UploadBusyError:
            continue
        except FileNotFoundError:
            writer = None
        try:
            meta.delete_upload(upload_id)
            store.delete_upload(upload_id)
        finally:
            if writer is not None:
                writer.close()
        expired.append(upload_id)
    return expired
