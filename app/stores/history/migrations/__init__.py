"""Alembic migrations of the history schema (``spoton db upgrade``; the server upgrades at start-up)."""
