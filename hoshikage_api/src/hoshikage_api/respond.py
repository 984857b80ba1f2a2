"""Answer a generation job: a JSON body, or a server-sent event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from litestar import Request
from litestar.response import Stream

from . import sse
from .disconnect import until_disconnect
from .generation import collect, run, usage_of
from .translate import Job


class EventStream(Stream):
    """A ``text/event-stream`` response. (Litestar would let the handler's JSON media type,
    taken from its return annotation, override the stream's own.)"""

    def to_asgi_response(self, *args, **kwargs):
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async with aclosing(rest) as events:
        async for event in events:
            yield event


async def respond(request: Request, runtime, job: Job, fmt):
    """The whole answer as a response object, or a ``Stream`` once the first event exists.

    Both wait under :func:`until_disconnect`, so a client that leaves while its request is
    queued or generating cancels it.
    """
    if not job.stream:
        results = await until_disconnect(request, collect(runtime, job))
        return fmt.response(results, usage_of(job, results))
    return await event_stream(request, sse.events(job, fmt, run(runtime, job)))


async def event_stream(request: Request, events: AsyncIterator[bytes]) -> EventStream:
    """A ``text/event-stream`` response over ``events``, started only once the first event
    exists, so an error found before generation is still an ordinary JSON error. The wait
    for it is cancelled if the client leaves."""
    first = await until_disconnect(request, anext(events))
    return EventStream(_prepend(first, events), headers=sse.HEADERS)
