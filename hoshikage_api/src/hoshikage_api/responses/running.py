"""Responses still generating: ``GET /v1/responses/{id}`` answers them with ``status:
"in_progress"`` (as OpenAI does) instead of a 404, and those created with ``background:
true`` run here, as tasks of their own, until they finish (then they are stored) or are
cancelled with ``POST /v1/responses/{id}/cancel`` (then they are stored as ``cancelled``).

Like the store, it is touched only from the event loop. It holds only what is running now,
so it is bounded by the server's queue and concurrency.
"""

from __future__ import annotations

import asyncio

import attrs

from . import schemas as s
from .format import ResponseBuilder


@attrs.define
class Running:
    builder: ResponseBuilder
    #: The background task, or None for a request that waits for its own answer.
    task: asyncio.Task | None = None
    cancelled: bool = False

    def snapshot(self) -> s.Response:
        """The response as it stands: in progress, with the output so far."""
        return self.builder.response("cancelled" if self.cancelled else "in_progress")


def running_of(request) -> dict[str, Running]:
    """The app's table of responses still generating (made on first use)."""
    state = request.app.state
    table = state.get("responses_running")
    if table is None:
        table = state["responses_running"] = {}
    return table
