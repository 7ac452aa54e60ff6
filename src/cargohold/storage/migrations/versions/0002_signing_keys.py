"""Token signing keys move from `<data>/keys` files into the database, so every replica signs
and verifies with the same keys. Each key is stored sealed (AES-GCM under the secret file), so a
database dump or backup holds no usable private key. `auth.keys.KeyRing` adopts the files of an
older data directory on its first start.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

SQLITE = """
    CREATE TABLE IF NOT EXISTS signing_key (
        kid TEXT PRIMARY KEY,
        sealed TEXT NOT NULL,
        created REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
"""

POSTGRESQL = """
    CREATE TABLE IF NOT EXISTS signing_key (
        kid TEXT PRIMARY KEY,
        sealed TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        active BOOLEAN NOT NULL DEFAULT FALSE
    )
"""


def upgrade() -> None:
    op.execute(SQLITE if op.get_context().dialect.name == "sqlite" else POSTGRESQL)


def downgrade() -> None:
    op.execute("DROP TABLE signing_key")
