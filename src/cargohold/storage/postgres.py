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
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from .metadata import SQLMetadataStore
from .schema import redacted, settle, upgrade_url
from .sql import Executor, Rows

# Any fixed number: the key of the advisory lock every write transaction holds.
WRITE_LOCK = 0x6361_7267_6F01
_PLACEHOLDER = re.compile(r"\?|:([a-z_]+)")


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


class _Pooled:
    """Statements outside a transaction: each borrows a connection for itself (autocommit).
    Inside this thread's write transaction they run in it, and see what it wrote, as they do
    on SQLite's one connection."""

    def __init__(self, pool: ConnectionPool[Any], local: threading.local) -> None:
        self._pool = pool
        self._local = local

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:
        session: _Session | None = getattr(self._local, "session", None)
        if session is not None:
            return session.execute(sql, parameters)
        with self._pool.connection() as connection:
            return _run(connection, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Rows:
        session: _Session | None = getattr(self._local, "session", None)
        if session is not None:
            return session.executemany(sql, parameters)
        with self._pool.connection() as connection:
            return _Session(connection).executemany(sql, parameters)


class PostgresDatabase:
    """A psycopg 3 pool on one PostgreSQL database, at the schema this code runs on."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8) -> None:
        self.url = url
        self._check_schema()
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url, min_size=min_size, max_size=max_size, kwargs={"autocommit": True}, open=True
        )
        self._local = threading.local()  # the write transaction this thread is inside, if any
        self._executor = _Pooled(self._pool, self._local)

    @property
    def executor(self) -> Executor:
        return self._executor

    def _check_schema(self) -> None:
        with psycopg.connect(self.url) as db:
            has_version = db.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            found = None
            if has_version and has_version[0]:
                row = db.execute("SELECT version_num FROM alembic_version").fetchone()
                found = str(row[0]) if row else None
            tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()
        # A new database is made current here; replicas starting at once take turns (env.py).
        settle(
            found,
            lambda: tables is not None and tables[0] == 0,
            lambda: upgrade_url(self.url)[1],
            redacted(self.url),
            "cargohold db upgrade",
        )

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        current = getattr(self._local, "session", None)
        if current is not None:  # inside this thread's write transaction: part of it
            yield current
            return
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            session = _Session(connection)
            self._local.session = session
            try:
                yield session
            finally:
                self._local.session = None

    @contextmanager
    def snapshot(self) -> Iterator[Executor]:
        with self._pool.connection() as connection:
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield _Session(connection)
            finally:
                connection.execute("COMMIT")


class PostgresMetadataStore(SQLMetadataStore):
    """The metadata store on a PostgreSQL database of its own."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8) -> None:
        self.url = url
        super().__init__(PostgresDatabase(url, min_size, max_size))
