"""``GET /health``: public even when an API key is set."""

from __future__ import annotations

from typing import Any

from litestar import get

from hoshikage_core import __version__


@get("/health", opt={"public": True}, tags=["Server"], summary="Liveness check")
async def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}
