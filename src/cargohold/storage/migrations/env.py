"""Alembic's entry point, run by `storage.schema.upgrade` (there is no alembic.ini: the database
URL comes from the caller)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

# Any fixed number: the key of the PostgreSQL advisory lock that makes upgrades take turns.
MIGRATION_LOCK = 0x6361_7267_6F00

url = context.config.get_main_option("sqlalchemy.url")
if url is None:
    raise RuntimeError("migrations need sqlalchemy.url")
engine = create_engine(url)
with engine.connect() as connection:
    if connection.dialect.name == "postgresql":
        # Held by the session until it ends: a second replica upgrading at the same moment waits,
        # then finds nothing left to do.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
