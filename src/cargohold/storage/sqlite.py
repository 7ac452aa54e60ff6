"""How every store opens the shared SQLite database and writes to it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from .schema import ensure_current

_BUSY_TIMEOUT = 30.0


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without waiting the busy
    timeout, while another process writes (a new database being migrated): wait for it here."""
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect(path: Path, timeout: float = _BUSY_TIMEOUT) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit, reads take no lock), WAL, to a
    database at the schema this code is written for (`schema.ensure_current`). A writer waits
    `timeout` seconds for another's write lock, then gets "database is locked"."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    _use_wal(db)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    try:
        ensure_current(db, Path(path))
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; inside another write transaction of the same connection, part of
    that one (which commits or rolls back the whole). Never open it inside a read transaction."""
    if db.in_transaction:
        yield db
        return
    # IMMEDIATE takes the write lock up front, so two writers never deadlock on upgrade.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SQLiteDatabase:
    """The embedded default: one SQLite file in WAL mode, one connection per process (used from
    the event loop and the pool's threads alike); BEGIN IMMEDIATE makes writers take turns."""

    def __init__(self, path: Path, timeout: float = _BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self._connection = connect(self.path, timeout)
        self._leads: dict[str, int] = {}  # name -> the descriptor whose flock is the leadership

    @property
    def executor(self) -> sqlite3.Connection:
        return self._connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._connection)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        self._connection.execute("BEGIN")
        try:
            yield self._connection
        finally:
            self._connection.execute("COMMIT")

    def try_lead(self, name: str) -> bool:
        """Leadership among every process on this database file (one machine): an exclusive
        flock on a file beside it (`metadata.sqlite3.lead-NAME`), kept until this handle closes
        or the process dies."""
        if name in self._leads:
            return True
        fd = os.open(self.path.with_name(f"{self.path.name}.lead-{name}"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._leads[name] = fd
        return True

    def close(self) -> None:
        for fd in self._leads.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._leads.clear()
        self._connection.close()
