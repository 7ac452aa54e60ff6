"""The schema as it stood before migrations existed (cargohold 0.1): every table of the registry,
access control and the audit trail.

Every statement is IF NOT EXISTS, so upgrading a data directory made before migrations existed
adopts its tables as they are. Frozen: later changes are later revisions.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

SQLITE = [
    # registry
    """
    CREATE TABLE IF NOT EXISTS repository (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS blob (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        last_touched REAL NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS repository_blob (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES blob(digest),
        created REAL NOT NULL,
        PRIMARY KEY (repo, digest)
    ) WITHOUT ROWID
    """,
    """
    CREATE INDEX IF NOT EXISTS repository_blob_digest ON repository_blob(digest)
    """,
    """
    CREATE TABLE IF NOT EXISTS manifest (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        artifact_type TEXT,
        subject TEXT,
        size INTEGER NOT NULL,
        payload BLOB NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (repo, digest)
    ) WITHOUT ROWID
    """,
    """
    CREATE INDEX IF NOT EXISTS manifest_subject ON manifest(repo, subject) WHERE subject IS NOT NULL
    """,
    """
    CREATE TABLE IF NOT EXISTS manifest_ref (
        repo TEXT NOT NULL,
        manifest TEXT NOT NULL,
        child TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('config', 'layer', 'manifest')),
        PRIMARY KEY (repo, manifest, child, kind)
    ) WITHOUT ROWID
    """,
    """
    CREATE INDEX IF NOT EXISTS manifest_ref_child ON manifest_ref(child)
    """,
    """
    CREATE TABLE IF NOT EXISTS tag (
        repo TEXT NOT NULL,
        name TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (repo, name)
    ) WITHOUT ROWID
    """,
    """
    CREATE INDEX IF NOT EXISTS tag_digest ON tag(repo, digest)
    """,
    """
    CREATE TABLE IF NOT EXISTS tag_event (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        name TEXT NOT NULL,
        old_digest TEXT,
        new_digest TEXT,
        at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS upload (
        id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        started REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # access control
    """
    CREATE TABLE IF NOT EXISTS principal (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('user', 'robot')),
        password_hash TEXT,
        admin INTEGER NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        expires REAL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS group_member (
        group_name TEXT NOT NULL,
        principal_id INTEGER NOT NULL REFERENCES principal(id) ON DELETE CASCADE,
        PRIMARY KEY (group_name, principal_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS policy (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        pattern TEXT NOT NULL,
        actions TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (subject, pattern)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS credential (
        id INTEGER PRIMARY KEY,
        principal_id INTEGER NOT NULL REFERENCES principal(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('robot', 'token', 'refresh')),
        name TEXT NOT NULL,
        secret_digest TEXT NOT NULL UNIQUE,
        grants TEXT,
        created REAL NOT NULL,
        expires REAL,
        revoked REAL,
        last_used REAL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS login_failure (
        key TEXT PRIMARY KEY,
        window_start REAL NOT NULL,
        count INTEGER NOT NULL
    )
    """,
    # audit trail
    """
    CREATE TABLE IF NOT EXISTS audit_event (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        address TEXT NOT NULL,
        request_id TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS audit_event_at ON audit_event(at)
    """,
]

# The same tables in PostgreSQL's types: 64-bit sizes and ids, DOUBLE PRECISION times, BYTEA payloads.
POSTGRESQL = [
    # registry
    """
    CREATE TABLE IF NOT EXISTS repository (
        name TEXT PRIMARY KEY,
        created DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS blob (
        digest TEXT PRIMARY KEY,
        size BIGINT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        last_touched DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS repository_blob (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES blob(digest),
        created DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (repo, digest)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS repository_blob_digest ON repository_blob(digest)
    """,
    """
    CREATE TABLE IF NOT EXISTS manifest (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        artifact_type TEXT,
        subject TEXT,
        size BIGINT NOT NULL,
        payload BYTEA NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (repo, digest)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS manifest_subject ON manifest(repo, subject) WHERE subject IS NOT NULL
    """,
    """
    CREATE TABLE IF NOT EXISTS manifest_ref (
        repo TEXT NOT NULL,
        manifest TEXT NOT NULL,
        child TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('config', 'layer', 'manifest')),
        PRIMARY KEY (repo, manifest, child, kind)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS manifest_ref_child ON manifest_ref(child)
    """,
    """
    CREATE TABLE IF NOT EXISTS tag (
        repo TEXT NOT NULL,
        name TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (repo, name)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS tag_digest ON tag(repo, digest)
    """,
    """
    CREATE TABLE IF NOT EXISTS tag_event (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        repo TEXT NOT NULL,
        name TEXT NOT NULL,
        old_digest TEXT,
        new_digest TEXT,
        at DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS upload (
        id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL
    )
    """,
    # access control
    """
    CREATE TABLE IF NOT EXISTS principal (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('user', 'robot')),
        password_hash TEXT,
        admin INTEGER NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '',
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS group_member (
        group_name TEXT NOT NULL,
        principal_id BIGINT NOT NULL REFERENCES principal(id) ON DELETE CASCADE,
        PRIMARY KEY (group_name, principal_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS policy (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        subject TEXT NOT NULL,
        pattern TEXT NOT NULL,
        actions TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        UNIQUE (subject, pattern)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS credential (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        principal_id BIGINT NOT NULL REFERENCES principal(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('robot', 'token', 'refresh')),
        name TEXT NOT NULL,
        secret_digest TEXT NOT NULL UNIQUE,
        grants TEXT,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION,
        revoked DOUBLE PRECISION,
        last_used DOUBLE PRECISION
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS login_failure (
        key TEXT PRIMARY KEY,
        window_start DOUBLE PRECISION NOT NULL,
        count INTEGER NOT NULL
    )
    """,
    # audit trail
    """
    CREATE TABLE IF NOT EXISTS audit_event (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        address TEXT NOT NULL,
        request_id TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS audit_event_at ON audit_event(at)
    """,
]


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    statements = {"sqlite": SQLITE, "postgresql": POSTGRESQL}.get(dialect)
    if statements is None:
        raise RuntimeError(f"cargohold keeps its metadata in SQLite or PostgreSQL, not {dialect}")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the first schema has no downgrade: restore a backup instead")
