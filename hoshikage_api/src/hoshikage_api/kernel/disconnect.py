"""Cancel work when the client goes away.

Litestar cancels a streaming body when the client disconnects, but a handler that is still
computing its answer (a non-streamed completion, or a stream waiting for a slot or its first
token) is not watched. :func:`until_disconnect` runs such work next to a listener on the
ASGI receive channel and cancels the work on ``http.disconnect``: the session then cancels
the backend within a token and leaves the queue or frees its slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from .errors import ApiError

T = TypeVar("T")


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise a 499."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            # Wait until the session has really let go (worker stopped, slot released).
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ApiError(499, "The client closed the request.", code="client_disconnected")
    return task.result()
