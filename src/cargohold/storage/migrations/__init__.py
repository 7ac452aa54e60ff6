"""Alembic migrations of the metadata database: `versions/` holds one revision per schema change."""
