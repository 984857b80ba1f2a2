"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Both are translators onto the one generation path (:func:`hoshikage_api.generation.run`):
the same session, scheduler, keep-alive, cancel-on-disconnect and ``request_finished`` as
the OpenAI routes. Errors on these routes have Anthropic's shape (:mod:`.errors`). The API
key may come as ``x-api-key`` or as a Bearer token; ``anthropic-version`` and
``anthropic-beta`` headers are accepted and need not be sent.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body

from ..body import StrictBody
from ..disconnect import until_disconnect
from ..generation import collect, run
from ..respond import event_stream, rendered
from ..routes.deps import runtime_of
from . import errors
from .format import MessageFormat, sse
from .schemas import AnthropicErrorBody, CountTokensRequest, Message, MessagesRequest, TokenCount
from .translate import count_tokens_job, messages_job

_ERROR_TEXT = {
    400: (
        "`invalid_request_error`: bad JSON, a wrong type or value, an image block, a server tool, or "
        "a prompt over the context (`prompt is too long: ...`)."
    ),
    401: "`authentication_error`: missing or wrong API key (`x-api-key` or Bearer).",
    404: "`not_found_error`: unknown model.",
    413: "`request_too_large`: body over `max_body_size`.",
    500: "`api_error`: the model failed to load, or an internal error.",
    529: "`overloaded_error`: the queue is full or the server is shutting down; see `Retry-After`.",
}


def _stream(fmt: MessageFormat, chunks):
    """The event stream of one message; an error after it started is an ``error`` event."""
    return rendered(
        chunks,
        fmt.events,
        lambda: fmt.started,
        lambda exc: sse("error", errors.to_anthropic(exc)[1]),
    )


RESPONSES = {
    code: ResponseSpec(data_container=AnthropicErrorBody, description=text)
    for code, text in _ERROR_TEXT.items()
}


@post(
    "/v1/messages",
    dto=StrictBody,
    return_dto=None,
    status_code=200,
    tags=["Anthropic"],
    summary="Create a message (Anthropic Messages API)",
    responses=RESPONSES,
    exception_handlers={Exception: errors.handle},
    description="With `stream: true` the answer is a `text/event-stream` of Anthropic's events: "
    "`message_start`, `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`, "
    "`message_delta`, `message_stop` (or `error` if generation fails after the stream started).",
)
async def create_message(request: Request, data: Annotated[MessagesRequest, Body()]) -> Message:
    job = messages_job(data)
    runtime = runtime_of(request)
    fmt = MessageFormat(job)
    if not job.stream:
        (result,) = await until_disconnect(request, collect(runtime, job))
        return fmt.message(result)
    return await event_stream(request, _stream(fmt, run(runtime, job)))


@post(
    "/v1/messages/count_tokens",
    dto=StrictBody,
    return_dto=None,
    status_code=200,
    tags=["Anthropic"],
    summary="Count a message's input tokens",
    responses=RESPONSES,
    exception_handlers={Exception: errors.handle},
    description="Exactly the `usage.input_tokens` that `/v1/messages` reports for the same "
    "model, system, messages and tools. The prompt is rendered and read by the model (one "
    "token is sampled and dropped), so it then sits in the prompt cache.",
)
async def count_tokens(request: Request, data: Annotated[CountTokensRequest, Body()]) -> TokenCount:
    job = count_tokens_job(data)
    (result,) = await until_disconnect(request, collect(runtime_of(request), job))
    return TokenCount(input_tokens=result.prompt_tokens)


def handlers() -> list:
    return [create_message, count_tokens]
