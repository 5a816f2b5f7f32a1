"""Tracking history: events written in batches (spooled to disk while the database is away) to PostgreSQL or
an embedded SQLite file, and the analytics computed from them. See docs/stores.md.

Modules: ``tables`` (schema), ``records`` (rows as dataclasses), ``repository`` (the ``HistoryRepository``
protocol; PostgreSQL and SQLite), ``recorder`` (buffer, batches, spool, counters), ``spool``, ``migrate`` and
``migrations/`` (Alembic), ``timescale``, ``analytics`` (the queries), ``service`` (what the app holds),
``cli`` (``spoton db``), ``bench``. Import from them directly (this package imports nothing, so ``spoton``
starts fast).
"""
