"""The one answer path: a generation job answered whole, or streamed in a surface's format.

A surface says how its answers look by a :class:`Format`; :func:`answer` does the rest, the
same for every surface:

* whole: the job is collected, then ``fmt.whole(results)`` is the response body;
* streamed: ``fmt.items(index, chunk)`` is written for each chunk (one write per chunk),
  ``fmt.end()`` after the last (the session's usage is final by then). The response starts
  only once the first item exists, so an error found before generation (bad input, unknown
  model, context overflow, full queue) is still an ordinary JSON error in the surface's
  shape. An error after it is the stream's last item, ``fmt.error_item(exc)``.

Both wait under :func:`~.disconnect.until_disconnect`, so a client that leaves while its
request is queued or generating cancels it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

from hoshikage_core.protocol import Chunk
from litestar import Request
from litestar.response import Stream

from .disconnect import until_disconnect
from .generation import ChoiceResult, collect, run
from .job import Job

if TYPE_CHECKING:
    from hoshikage_core.runtime import Session

#: Headers of every streamed answer: no caching, no proxy buffering.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Format(Protocol):
    """How one answer looks on a surface's wire. One object per request: it may keep the
    stream's state (ids, open blocks, counters). Formats subclass this for the defaults of
    :meth:`end` and :meth:`ready`."""

    #: The streamed answer's media type (``text/event-stream``, ``application/x-ndjson``).
    media_type: str

    def whole(self, results: list[ChoiceResult]) -> Any:
        """The body of a whole answer, from every choice's result."""
        ...

    def items(self, index: int, chunk: Chunk) -> bytes:
        """The stream items for one chunk of choice ``index``, encoded and joined
        (``b""`` for none)."""
        ...

    def error_item(self, exc: Exception) -> bytes:
        """The last item of a stream that failed after it started."""
        ...

    def end(self) -> bytes:
        """The items after the last chunk (OpenAI's usage chunk and ``[DONE]``)."""
        return b""

    def ready(self, session: Session) -> None:
        """Called once ``session`` holds its slot with the model loaded. Ollama times its
        ``load_duration`` by it; OpenAI keeps the session to report ``session.usage``, the
        core's count, once the job is done."""


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


async def streamed(fmt: Format, chunks: AsyncIterator[tuple[int, Chunk]]) -> AsyncIterator[bytes]:
    """The body of a streamed answer over ``chunks`` (from
    :func:`~.generation.run`): an error before any item is raised; after one, it is the
    last item, ``fmt.error_item(exc)``."""
    sent = False
    items = fmt.items
    try:
        async with aclosing(chunks) as source:
            async for index, chunk in source:
                data = items(index, chunk)
                if data:
                    sent = True
                    yield data
    except Exception as exc:
        if not sent:
            raise
        yield fmt.error_item(exc)
        return
    tail = fmt.end()
    if tail:
        yield tail


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async with aclosing(rest) as items:
        async for item in items:
            yield item


async def stream_response(request: Request, items: AsyncIterator[bytes], media_type: str):
    """A streamed response over ``items``, started only once the first item exists; the
    wait for it is cancelled if the client leaves."""
    first = await until_disconnect(request, anext(items))
    return OwnTypeStream(_prepend(first, items), own_media_type=media_type, headers=HEADERS)


async def answer(request: Request, runtime, job: Job, fmt: Format):
    """Answer ``job`` in ``fmt``: the whole body, or a stream when ``job.stream``."""
    if not job.stream:
        return fmt.whole(await until_disconnect(request, collect(runtime, job, fmt.ready)))
    return await stream_response(
        request, streamed(fmt, run(runtime, job, fmt.ready)), fmt.media_type
    )
