"""What the SQL stores need of a database connection: `sqlite3.Connection` has it as it is, the
PostgreSQL adapter (`postgres.py`) provides it over a connection pool. The stores write one SQL
for both: `?` and `:name` placeholders, `ON CONFLICT`, `RETURNING`, `TRUE`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Rows(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Executor(Protocol):
    def execute(self, sql: str, parameters: Any = (), /) -> Rows: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Rows: ...


class Database(Protocol):
    """One process's handle on the database every store of it shares."""

    @property
    def executor(self) -> Executor:
        """Statements outside any transaction (each sees the latest commit)."""
        ...

    def transaction(self) -> AbstractContextManager[Executor]:
        """One write transaction, serialised against every other writer of the database;
        inside another of the same thread, part of that one."""
        ...

    def snapshot(self) -> AbstractContextManager[Executor]:
        """One read transaction: every query inside sees the same committed state."""
        ...

    def try_lead(self, name: str) -> bool:
        """Whether this handle leads `name` (a maintenance job) among every process and replica
        on the database: the first call that finds it free takes it, and keeps it until the handle
        closes or its process dies, when another's next call takes over. A leader whose hold was
        lost (its connection broke) finds out here. Leadership saves repeated work; it is no
        mutual exclusion to rely on for safety: the jobs are safe to run concurrently."""
        ...

    def close(self) -> None: ...
