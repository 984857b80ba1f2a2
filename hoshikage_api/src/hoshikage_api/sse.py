"""Server-sent events: the streaming loop shared by chat and completions.

Events are ``data: {json}\\n\\n`` and the stream ends with ``data: [DONE]``. The first event is
produced only once the backend has produced its first chunk, so a caller that awaits it
before starting the HTTP response turns every error found before generation (bad input,
unknown model, context overflow, full queue) into an ordinary JSON error response. An error
after the stream has started arrives as a ``data: {"error": ...}`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec
from hoshikage_core.protocol import Chunk

from .errors import to_api_error
from .generation import UsageCounter
from .translate import Job

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_encode = msgspec.json.Encoder().encode


def event(obj) -> bytes:
    return b"data: " + _encode(obj) + b"\n\n"


async def events(job: Job, fmt, chunks: AsyncIterator[tuple[int, Chunk]]) -> AsyncIterator[bytes]:
    """The SSE body for ``chunks`` (from :func:`hoshikage_api.generation.run`) in ``fmt``."""
    started: set[int] = set()
    usage = UsageCounter(job)
    try:
        async with aclosing(chunks) as stream:
            async for index, chunk in stream:
                for piece in fmt.pieces(index, chunk, index not in started):
                    started.add(index)
                    yield event(piece)
                if chunk.finish_reason is not None:
                    usage.add(
                        index,
                        chunk.prompt_tokens or 0,
                        chunk.completion_tokens or 0,
                        chunk.cached_tokens or 0,
                    )
    except Exception as exc:
        if not started:
            raise
        yield event(to_api_error(exc).body())
        return
    if job.include_usage:
        yield event(fmt.usage_chunk(usage.usage()))
    yield DONE
