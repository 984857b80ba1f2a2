"""Responses still generating: ``GET /v1/responses/{id}`` answers them with ``status:
"in_progress"`` (as OpenAI does) instead of a 404, and those created with ``background:
true`` run here, as tasks of their own, until they finish (then they are stored) or are
cancelled with ``POST /v1/responses/{id}/cancel`` (then they are stored as ``cancelled``).

A background response that is also streamed keeps its events in an :class:`EventLog`: the
client that created it may leave and come back with ``GET /v1/responses/{id}?stream=true
&starting_after=N``, which replays the events after sequence number ``N`` and follows the
rest as they come. The logs of the last :data:`FINISHED_LOGS` such responses are kept
after they end too.

Like the store, it is touched only from the event loop. It holds only what is running now
(bounded by the server's queue and concurrency) and those few finished logs.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import attrs

from . import schemas as s
from .format import ResponseBuilder

#: How many finished streamed background responses keep their events for a late reader.
FINISHED_LOGS = 16


class EventLog:
    """A streamed background response's events, in order: event ``i`` has sequence number
    ``i``. Written by its task; read by any number of followers."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.closed = False
        #: What stopped the response before its first event (an unknown model, a prompt
        #: over the context, a full queue): the creating request answers it as an error.
        self.error: BaseException | None = None
        self._changed = asyncio.Event()

    def extend(self, data: bytes) -> None:
        """Append the server-sent events in ``data`` (``event: ...\ndata: ...\n\n`` each)."""
        if not data:
            return
        self.events.extend(part + b"\n\n" for part in data.split(b"\n\n") if part)
        self._notify()

    def close(self, error: BaseException | None = None) -> None:
        if error is not None and not self.events:
            self.error = error
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def started(self) -> None:
        """Wait for the first event; raise the error that ended the response before it."""
        while not self.events and not self.closed:
            await self._changed.wait()
        if self.error is not None:
            raise self.error

    async def follow(self, after: int = -1) -> AsyncIterator[bytes]:
        """The events after sequence number ``after``, then each new one, to the end."""
        at = max(after + 1, 0)
        while True:
            if at < len(self.events):
                data = b"".join(self.events[at:])
                at = len(self.events)
                yield data
                continue
            if self.closed:
                return
            await self._changed.wait()


@attrs.define
class Running:
    builder: ResponseBuilder
    #: The background task, or None for a request that waits for its own answer.
    task: asyncio.Task | None = None
    cancelled: bool = False
    #: A streamed background response's events.
    log: EventLog | None = None

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


def finished_logs_of(request) -> collections.OrderedDict[str, EventLog]:
    """The event logs of the last :data:`FINISHED_LOGS` streamed background responses that
    have ended, by response id (made on first use)."""
    state = request.app.state
    table = state.get("responses_finished_logs")
    if table is None:
        table = state["responses_finished_logs"] = collections.OrderedDict()
    return table


def keep_finished(table: collections.OrderedDict[str, EventLog], rid: str, log: EventLog) -> None:
    table[rid] = log
    table.move_to_end(rid)
    while len(table) > FINISHED_LOGS:
        table.popitem(last=False)
