"""Error responses in the shapes the OpenAPI document promises."""

from __future__ import annotations

from fastapi import HTTPException, status


def unprocessable(message: str, *loc: str) -> HTTPException:
    """A 422 in FastAPI's documented shape (``detail``: a list of ``{loc, msg, type}``), like its own."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": list(loc) or ["query"], "msg": message, "type": "value_error"}]
    )
