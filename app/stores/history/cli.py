"""``spoton db``: schema migrations and the spool, outside the server (imports its stack only when used)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from app.core.config import Settings
from app.core.logging import setup_logging


def add_db_parser(sub: Any) -> None:
    """Register ``spoton db ...`` on the top-level subparsers."""
    db = sub.add_parser("db", help="history database: migrations, status, spool replay").add_subparsers(
        dest="db", required=True
    )
    up = db.add_parser("upgrade", help="migrate the schema to REVISION (default: head) and apply TimescaleDB")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(fn=cmd_db)
    down = db.add_parser("downgrade", help="migrate the schema down to REVISION ('base' drops every table)")
    down.add_argument("revision")
    down.set_defaults(fn=cmd_db)
    db.add_parser("current", help="the database, its schema revision and the latest one").set_defaults(fn=cmd_db)
    db.add_parser(
        "replay", help="write what the disk spool holds (batches left by a stopped server) to the database"
    ).set_defaults(fn=cmd_db)


def cmd_db(args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    return asyncio.run(_db(settings, args.db, getattr(args, "revision", None)))


async def _db(settings: Settings, action: str, revision: str | None) -> int:
    from app.stores.history import migrate
    from app.stores.history.repository import build_history_repository

    if action == "replay":
        return await _replay(settings)
    repo = build_history_repository(settings)
    try:
        if action == "upgrade":
            print(await repo.upgrade(revision or "head"))
        elif action == "downgrade":
            assert revision is not None
            await migrate.downgrade(repo.engine, revision)
        current = await migrate.current_revision(repo.engine)
        print(f"{repo.display_url}: revision {current or 'none'} (latest {migrate.head_revision()})")
    finally:
        await repo.dispose()
    return 0


async def _replay(settings: Settings) -> int:
    from app.stores.history.service import HistoryService

    service = HistoryService(settings)
    await service.start()
    await service.stop()
    stats = service.recorder.stats()
    print(f"replayed {stats['replayed']} records; {stats['spool_pending']} still spooled")
    return 0 if stats["spool_pending"] == 0 else 1
