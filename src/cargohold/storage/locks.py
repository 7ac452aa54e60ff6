"""Named locks that hold across processes, and across machines when the database is shared.

A blob store whose bytes live on another machine (S3) cannot use `flock` on its own files to
make one request at a time write an upload session, or to keep garbage collection from
deleting a blob between its placement and its record. These locks do that: on one machine
(SQLite) with `flock` on files in a directory, in a fleet (PostgreSQL) with advisory locks, which
the server drops by itself when the holder's connection ends, so a killed replica leaves none.

Names are made by the stores from validated digests and upload ids, never from request text.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from .records import BackendUnavailable

# PostgreSQL advisory locks take one bigint; this is the first half of the ones made here, so
# they never meet the write lock or the maintenance leader's.
_NAMESPACE = b"cargohold lock:"


class Locks(Protocol):
    def exclusive(self, name: str, wait: bool = True) -> contextlib.AbstractContextManager[bool]:
        """Hold `name` alone; with `wait=False`, yields False at once when another holds it."""
        ...

    def shared(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold `name` beside other shared holders; waits while an exclusive holder has it."""
        ...

    def forget(self, name: str) -> None:
        """`name` will not be used again (its session ended): free what it kept."""
        ...

    def close(self) -> None: ...


class FileLocks:
    """flock on one file per name: across the worker processes of one machine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a lock name: {name[:80]!r}")
        return self.directory / name

    @contextlib.contextmanager
    def _held(self, name: str, mode: int) -> Iterator[bool]:
        fd = os.open(self._path(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def exclusive(self, name: str, wait: bool = True) -> contextlib.AbstractContextManager[bool]:
        return self._held(name, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)

    @contextlib.contextmanager
    def shared(self, name: str) -> Iterator[None]:
        with self._held(name, fcntl.LOCK_SH):
            yield

    def forget(self, name: str) -> None:
        # A request still waiting holds the unlinked file: it then finds its session gone.
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    def close(self) -> None:
        pass


def advisory_key(name: str) -> int:
    """A signed 64-bit key for `name`: collisions among 2^64 are not a concern."""
    return int.from_bytes(hashlib.blake2b(_NAMESPACE + name.encode(), digest_size=8).digest(), "big", signed=True)


class PostgresLocks:
    """Session-level advisory locks, each on a pooled connection of its own while it is held.

    A lock holds its connection for as long as it is held (an upload chunk's request), so this
    pool is apart from the one queries use, and bounded: past `max_size` locks held at once a
    request waits up to `timeout` and then gets a retryable 503.
    """

    def __init__(self, url: str, max_size: int = 32, timeout: float = 10.0) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        # What means "the database is not there": loaded here, so SQLite users never import psycopg.
        self._unreachable: tuple[type[Exception], ...] = (PoolTimeout, psycopg.OperationalError)
        self.url = url
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            open=True,
        )

    @contextlib.contextmanager
    def _held(self, take: str, release: str, name: str) -> Iterator[bool]:
        key = advisory_key(name)
        try:
            with self._pool.connection() as connection:
                row = connection.execute(f"SELECT {take}(%s)", (key,)).fetchone()
                # The pg_try_* functions answer whether they got it; the others wait until they do.
                held = bool(row and row[0]) if take.startswith("pg_try_") else True
                try:
                    yield held
                finally:
                    if held and not connection.closed:
                        connection.execute(f"SELECT {release}(%s)", (key,))
        except self._unreachable as err:
            raise BackendUnavailable("database", type(err).__name__) from err

    def exclusive(self, name: str, wait: bool = True) -> contextlib.AbstractContextManager[bool]:
        return self._held("pg_advisory_lock" if wait else "pg_try_advisory_lock", "pg_advisory_unlock", name)

    @contextlib.contextmanager
    def shared(self, name: str) -> Iterator[None]:
        with self._held("pg_advisory_lock_shared", "pg_advisory_unlock_shared", name):
            yield

    def forget(self, name: str) -> None:
        pass  # advisory locks leave nothing behind

    def close(self) -> None:
        self._pool.close()
