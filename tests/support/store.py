"""Looking inside a cargohold data directory, to prove nothing partial was left behind."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def _rows(data: Path, sql: str) -> set[str]:
    with sqlite3.connect(data / "metadata.sqlite3") as db:
        return {row[0] for row in db.execute(sql)}


def assert_store_consistent(data: Path, crashed: bool = False) -> None:
    """Every stored blob hashes to its name and is recorded; every upload file has a session.

    With `crashed`, right after a kill -9, two leftovers are allowed because their cleanup is
    by design deferred: a blob file without its record (killed between the rename and the
    insert; GC removes it after the grace period) and an upload file without its session
    (killed between the two steps of creating or discarding one; upload expiry removes it).
    Every file must still hold exactly the content its name promises.
    """
    recorded = _rows(data, "SELECT digest FROM blob")
    for path in (data / "blobs").glob("*/*/*"):
        if path.name == ".lock":  # the digest prefix's publishing lock, not a blob
            continue
        digest = f"{path.parent.parent.name}:{path.name}"
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            continue  # a running server's GC removed it since the listing: removal is never corruption
        actual = hashlib.new(path.parent.parent.name, content).hexdigest()
        assert actual == path.name, f"{path} holds content that does not match its name"
        assert crashed or digest in recorded, f"{digest} is in the blob store but not in the database"
    sessions = _rows(data, "SELECT id FROM upload")
    files = {p.name for p in (data / "uploads").iterdir()}
    assert crashed or files <= sessions, f"upload files without a session: {sorted(files - sessions)}"


def upload_files(data: Path) -> set[str]:
    return {p.name for p in (data / "uploads").iterdir()}
