"""The metadata database's schema revision.

Every open checks it with one query and no Alembic import, so a server start stays fast. An
empty database is brought to the newest revision on first use; a database at another revision
is refused with the command that upgrades it (`cargohold db upgrade`), because running code on a
schema it was not written for is how data gets lost. Upgrades run through Alembic
(`migrations/`), one process at a time (a lock file beside the database).
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# The newest revision in migrations/versions (revisions are 4-digit numbers, so they sort);
# tests/test_migrations.py holds it to Alembic's head.
HEAD = "0003"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaError(Exception):
    """The database is at a revision this code cannot run on; the message says what to do."""


def revision(db: sqlite3.Connection) -> str | None:
    """The database's revision; None for one made before migrations existed, or empty."""
    try:
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return None
        raise
    return str(row[0]) if row else None


def is_empty(db: sqlite3.Connection) -> bool:
    count: int = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    return count == 0


def settle(
    found: str | None, empty: Callable[[], bool], make_current: Callable[[], str | None], where: str, command: str
) -> None:
    """The rule for every backend: return at HEAD; make an empty database current (or find
    that another process just did); refuse any other revision, saying what to run."""
    if found == HEAD:
        return
    if found is None and empty():
        found = make_current()
        if found == HEAD:
            return
    raise SchemaError(refusal(where, found, command))


def ensure_current(db: sqlite3.Connection, path: Path) -> None:
    if revision(db) == HEAD:
        return

    def make_current() -> str | None:
        upgrade(path, only_if_empty=True)
        return revision(db)

    # Judged under the migration lock: another process may be half way through making this
    # database (its tables there, its revision not yet), which is neither empty nor old.
    with _migration_lock(path):
        found, empty = revision(db), is_empty(db)
    settle(found, lambda: empty, make_current, str(path), f"cargohold db upgrade --data {path.parent}")


@contextmanager
def _migration_lock(path: Path) -> Iterator[None]:
    """One process at a time migrates (or judges) the SQLite database at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrating"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def refusal(where: str, found: str | None, command: str) -> str:
    if found is None or found < HEAD:
        was = f"revision {found}" if found else "the schema from before migrations"
        return f"the database {where} has {was}; this cargohold needs revision {HEAD}: back it up, then run `{command}`"
    return (
        f"the database {where} has revision {found}, newer than this cargohold knows ({HEAD}): "
        "run the cargohold that upgraded it, or restore the backup taken before"
    )


def redacted(url: str) -> str:
    """A database URL fit for messages and logs: without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def upgrade(path: Path, only_if_empty: bool = False) -> tuple[str | None, str]:
    """Bring the SQLite database at `path` to HEAD; returns (revision before, revision after)."""
    with _migration_lock(path):
        with sqlite3.connect(path) as db:
            before, empty = revision(db), is_empty(db)
        db.close()
        if before == HEAD or (only_if_empty and not empty):
            return before, before or ""
        return upgrade_url(f"sqlite:///{path}")


def upgrade_url(url: str) -> tuple[str | None, str]:
    """Bring the database at an SQLAlchemy URL (sqlite:///PATH, postgresql://...) to HEAD;
    PostgreSQL upgrades take turns through an advisory lock (`migrations/env.py`)."""
    from alembic import command
    from alembic.config import Config

    url = sqlalchemy_url(url)
    before = current_revision(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")
    after = current_revision(url)
    if after != HEAD:
        raise SchemaError(f"the upgrade ended at revision {after}, not {HEAD}")
    return before, after


def current_revision(url: str) -> str | None:
    """The revision of the database at `url`, through Alembic (for any backend)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def sqlalchemy_url(url: str) -> str:
    """postgresql:// means psycopg 3 here (SQLAlchemy's default driver would be psycopg2)."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url
