"""Answer a generation job: a JSON body, or a server-sent event stream."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing

from hoshikage_core.protocol import Chunk
from litestar import Request
from litestar.response import Stream

from . import sse
from .disconnect import until_disconnect
from .generation import collect, run, usage_of
from .translate import Job


class OwnTypeStream(Stream):
    """A streamed response that keeps its own media type. (Litestar would let the handler's
    JSON media type, taken from its return annotation, override the stream's own.)"""

    def __init__(self, content, *, own_media_type: str, **kwargs):
        super().__init__(content, **kwargs)
        self.own_media_type = own_media_type

    def to_asgi_response(self, *args, **kwargs):
        kwargs["media_type"] = self.own_media_type
        response = super().to_asgi_response(*args, **kwargs)
        response.__class__ = _closing_class(type(response))
        return response


@functools.cache
def _closing_class(base: type) -> type:
    """Litestar's streaming response, closing its iterator however the stream stopped (the
    end, a disconnect, a write that timed out), so that its session releases the slot at
    once rather than whenever the garbage collector gets to the iterator."""

    class ClosingStreamingResponse(base):
        __slots__ = ()

        async def send_body(self, send, receive) -> None:
            try:
                await super().send_body(send, receive)
            finally:
                aclose = getattr(self.iterator, "aclose", None)
                if aclose is not None:
                    await aclose()

    return ClosingStreamingResponse


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


async def started_stream(
    request: Request, items: AsyncIterator[bytes], media_type: str
) -> OwnTypeStream:
    """A streamed response over ``items``, started only once the first item exists, so an
    error found before generation is still an ordinary JSON error. The wait for it is
    cancelled if the client leaves. Used for server-sent events and for Ollama's NDJSON."""
    first = await until_disconnect(request, anext(items))
    return OwnTypeStream(_prepend(first, items), own_media_type=media_type, headers=sse.HEADERS)


async def event_stream(request: Request, events: AsyncIterator[bytes]) -> OwnTypeStream:
    """A ``text/event-stream`` response over ``events`` (:func:`started_stream`)."""
    return await started_stream(request, events, "text/event-stream")


async def rendered(
    chunks: AsyncIterator[tuple[int, Chunk]],
    render: Callable[[Chunk], Iterable[bytes]],
    started: Callable[[], bool],
    on_error: Callable[[Exception], bytes],
) -> AsyncIterator[bytes]:
    """One choice's chunks as a surface renders them (Anthropic's events, Ollama's lines).
    An error before anything was rendered is raised, so the answer is a plain JSON error;
    after it, ``on_error(exc)`` is the stream's last item."""
    try:
        async with aclosing(chunks) as stream:
            async for _index, chunk in stream:
                for item in render(chunk):
                    yield item
    except Exception as exc:
        if not started():
            raise
        yield on_error(exc)
