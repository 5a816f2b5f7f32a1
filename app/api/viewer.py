"""``GET /``: the built-in live viewer (static ES modules in ``app/web``, served as they are: no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
router = APIRouter()


@router.get("/", include_in_schema=False)
async def viewer() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})
