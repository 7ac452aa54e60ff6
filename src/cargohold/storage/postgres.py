"""The metadata store on PostgreSQL: the same queries as SQLite (`metadata.SQLMetadataStore`)
over a psycopg 3 connection pool.

Guarantees and what they rest on:
- Writers take turns, as SQLite's BEGIN IMMEDIATE makes them: every write transaction first
  takes one transaction-level advisory lock (`WRITE_LOCK`), so a check and the write it
  guards (references before a manifest insert, quota before a link, collection's "nothing
  references this blob") can never interleave with another replica's write. READ COMMITTED
  is then enough: nothing another writer commits can slip between a check and its write.
- Reads outside a transaction see the latest commit (READ COMMITTED, autocommit).
- `snapshot()` reads in REPEATABLE READ: every query sees one snapshot.
- A database that is down or slow is `BackendUnavailable` (503 with Retry-After), never a
  bug's error: psycopg's connection-level failures (`OperationalError`: refused, lost, shut
  down, a pool wait or a statement past `timeout`) are translated where they leave this module;
  what is the caller's fault (IntegrityError, ProgrammingError, DataError) passes unchanged.
  The pool checks a connection that has been idle, or was returned before the last failure,
  before lending it, and reconnects on its own, so the store recovers when PostgreSQL is back.
- Leadership (`try_lead`) is a session-level advisory lock on a connection of its own.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from .metadata import SQLMetadataStore
from .records import BackendUnavailable, StorageFullError
from .schema import redacted, settle, upgrade_url
from .sql import Executor, Rows

log = logging.getLogger("cargohold.storage")
# The pool's own log says "connection requested" at INFO on every borrow and repeats each
# failed reconnect at WARNING; this module logs an outage once, when it starts and ends.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

# Any fixed number: the key of the advisory lock every write transaction holds
# (migrations/env.py's MIGRATION_LOCK is 0x6361_7267_6F00).
WRITE_LOCK = 0x6361_7267_6F01
DEFAULT_TIMEOUT = 10.0
# A pooled connection returned this recently in working order is lent without a check (a
# round trip per request would cost as much as the query); an older one is checked first.
_FRESH = 2.0
_PLACEHOLDER = re.compile(r"\?|:([a-z_]+)")


def lead_key(name: str) -> int:
    """The session advisory lock whose holder leads `name`: "carg" in the high 32 bits, which no
    other key of ours has, and a CRC of the name below."""
    return (0x6361_7267 << 32) | zlib.crc32(name.encode())


def translate(sql: str) -> str:
    """SQLite's `?` and `:name` placeholders as psycopg's `%s` and `%(name)s` (the stores write
    neither inside string literals)."""
    sql = sql.replace("%", "%%")
    return _PLACEHOLDER.sub(lambda m: f"%({m[1]})s" if m[1] else "%s", sql)


class _Result:
    """Rows fetched whole, so the connection goes back to the pool at once."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._rowcount = rowcount

    @property
    def rowcount(self) -> int:
        return self._rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def _run(connection: psycopg.Connection[Any], sql: str, parameters: Any) -> _Result:
    cursor = connection.execute(translate(sql), parameters if parameters is not None else ())
    rows = cursor.fetchall() if cursor.description is not None else []
    return _Result([tuple(r) for r in rows], cursor.rowcount)


class _Session:
    """One pooled connection, inside a transaction."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:
        return _run(self._connection, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Rows:
        batch = list(parameters)
        if not batch:
            return _Result([], 0)
        with self._connection.cursor() as cursor:
            cursor.executemany(translate(sql), batch)
            return _Result([], cursor.rowcount)


class _Guard:
    """What a psycopg failure means to the caller, and the one log line per outage."""

    def __init__(self, url: str, timeout: float, statement_timeout: float) -> None:
        self.timeout = timeout
        self.statement_timeout = statement_timeout
        password = str(conninfo_to_dict(url).get("password") or "")
        self._secrets = [secret for secret in {password, quote(password, safe="")} if secret]
        self._down = False
        # When a connection last failed: pooled connections returned before it may be dead too.
        self.last_failure = 0.0

    def failure(self, err: psycopg.OperationalError) -> Exception:
        """The exception to raise instead of `err`."""
        self.last_failure = time.monotonic()
        if isinstance(err, pg_errors.DiskFull):
            return StorageFullError(errno.ENOSPC, "the database's disk is full")
        if isinstance(err, pg_errors.TransactionRollback):  # a deadlock or serialisation conflict
            return BackendUnavailable("database", "the transaction conflicted with another", retry_after=1)
        if isinstance(err, PoolTimeout):
            detail = f"no connection within {self.timeout:g} s"
        elif isinstance(err, pg_errors.QueryCanceled):
            detail = f"no answer within {self.statement_timeout:g} s"
        elif isinstance(err, (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)):
            detail = "the server is shutting down or starting"
        else:
            detail = "cannot connect, or the connection was lost"
        if not self._down:
            self._down = True
            log.warning("the database is unavailable: %s", self.describe(err))
        return BackendUnavailable("database", detail)

    def answered(self) -> None:
        if self._down:
            self._down = False
            log.warning("the database answers again")

    def describe(self, err: Exception) -> str:
        """psycopg's message on one line, without the password (a malformed URL is echoed)."""
        text = " ".join(str(err).split())[:300] or type(err).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _Pooled:
    """Statements outside a transaction: each borrows a connection for itself (autocommit).
    Inside this thread's write transaction they run in it, and see what it wrote, as they do
    on SQLite's one connection."""

    def __init__(self, pool: ConnectionPool[Any], local: threading.local, guard: _Guard) -> None:
        self._pool = pool
        self._local = local
        self._guard = guard

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:
        session: _Session | None = getattr(self._local, "session", None)
        if session is not None:
            return session.execute(sql, parameters)
        try:
            with self._pool.connection() as connection:
                result = _run(connection, sql, parameters)
        except psycopg.OperationalError as err:
            raise self._guard.failure(err) from None
        self._guard.answered()
        return result

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Rows:
        session: _Session | None = getattr(self._local, "session", None)
        if session is not None:
            return session.executemany(sql, parameters)
        try:
            with self._pool.connection() as connection:
                result = _Session(connection).executemany(sql, parameters)
        except psycopg.OperationalError as err:
            raise self._guard.failure(err) from None
        self._guard.answered()
        return result


def _returned(connection: psycopg.Connection[Any]) -> None:
    """The pool's `reset`: note when a connection came back in working order."""
    setattr(connection, "_cargohold_returned", time.monotonic())  # noqa: B010 (not a declared attribute)


class PostgresDatabase:
    """A psycopg 3 pool on one PostgreSQL database, at the schema this code runs on. `timeout`
    bounds the wait for a pooled connection, a new connection and each statement."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._guard = _Guard(url, timeout, timeout)
        self._connect_kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(url):
            self._connect_kwargs["connect_timeout"] = max(2, math.ceil(timeout))  # libpq's least is 2
        self._check_schema()
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._connect_kwargs,
            configure=self._configure,
            check=self._check,
            reset=_returned,
            timeout=timeout,
            # Past this a failed reconnect stops retrying; the next request that needs a
            # connection starts a new attempt, so recovery follows the server's return quickly.
            reconnect_timeout=max(timeout, 5.0),
            open=True,
        )
        self._local = threading.local()  # the write transaction this thread is inside, if any
        self._executor = _Pooled(self._pool, self._local, self._guard)
        self._lead_connection: psycopg.Connection[Any] | None = None  # holds the session locks
        self._leading: set[str] = set()
        self._lead_lock = threading.Lock()

    @property
    def executor(self) -> Executor:
        return self._executor

    def _check(self, connection: psycopg.Connection[Any]) -> None:
        """The pool's `check`: a round trip for a connection idle long enough to have been cut,
        or returned before the last failure (a restarted server cut them all), so that after an
        outage each stale connection is found and replaced instead of failing one request."""
        returned = getattr(connection, "_cargohold_returned", 0.0)
        if time.monotonic() - returned > _FRESH or returned <= self._guard.last_failure:
            ConnectionPool.check_connection(connection)

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        # Bounds every statement, a wait for the write lock included (autocommit: takes effect now).
        connection.execute(f"SET statement_timeout = {int(self.timeout * 1000)}")

    def _check_schema(self) -> None:
        try:
            with psycopg.connect(self.url, **self._connect_kwargs) as db:
                has_version = db.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
                found = None
                if has_version and has_version[0]:
                    row = db.execute("SELECT version_num FROM alembic_version").fetchone()
                    found = str(row[0]) if row else None
                tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()
        except psycopg.OperationalError as err:
            raise BackendUnavailable("database", f"{redacted(self.url)}: {self._guard.describe(err)}") from None
        # A new database is made current here; replicas starting at once take turns (env.py).
        settle(
            found,
            lambda: tables is not None and tables[0] == 0,
            lambda: upgrade_url(self.url)[1],
            redacted(self.url),
            "cargohold db upgrade",
        )

    def close(self) -> None:
        with self._lead_lock:
            if self._lead_connection is not None:
                with suppress(psycopg.Error):
                    self._lead_connection.close()  # ends the session: its leadership locks go with it
            self._lead_connection = None
            self._leading.clear()
        self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        current = getattr(self._local, "session", None)
        if current is not None:  # inside this thread's write transaction: part of it
            yield current
            return
        try:
            with self._pool.connection() as connection, connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                session = _Session(connection)
                self._local.session = session
                try:
                    yield session
                finally:
                    self._local.session = None
        except psycopg.OperationalError as err:  # at the start, inside, or at COMMIT: nothing committed
            raise self._guard.failure(err) from None
        self._guard.answered()

    @contextmanager
    def snapshot(self) -> Iterator[Executor]:
        try:
            with self._pool.connection() as connection:
                connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    yield _Session(connection)
                finally:
                    connection.execute("COMMIT")
        except psycopg.OperationalError as err:
            raise self._guard.failure(err) from None
        self._guard.answered()

    def try_lead(self, name: str) -> bool:
        with self._lead_lock:
            if self._lead_connection is not None:
                try:
                    self._lead_connection.execute("SELECT 1")  # the session lives: its locks are still held
                except psycopg.Error:
                    with suppress(psycopg.Error):
                        self._lead_connection.close()  # the session ended: each lock is free or another's
                    self._lead_connection = None
                    self._leading.clear()
            if name in self._leading:
                return True
            try:
                if self._lead_connection is None:
                    self._lead_connection = self._connect_lead()
                row = self._lead_connection.execute("SELECT pg_try_advisory_lock(%s)", (lead_key(name),)).fetchone()
            except psycopg.OperationalError as err:
                raise self._guard.failure(err) from None
            if row is not None and row[0]:
                self._leading.add(name)
                return True
            return False

    def _connect_lead(self) -> psycopg.Connection[Any]:
        """The session that holds this process's leadership locks, apart from the pool."""
        # Keepalives both ways: a leader cut off by the network lets go within a minute, not hours.
        connection = psycopg.connect(
            self.url, **self._connect_kwargs, keepalives=1, keepalives_idle=15, keepalives_interval=5
        )
        try:
            self._configure(connection)
            connection.execute("SET tcp_keepalives_idle = 15")
            connection.execute("SET tcp_keepalives_interval = 5")
        except BaseException:
            connection.close()
            raise
        return connection


class PostgresMetadataStore(SQLMetadataStore):
    """The metadata store on a PostgreSQL database of its own."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        super().__init__(PostgresDatabase(url, min_size, max_size, timeout))
