"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Both are translators onto the one generation path (:mod:`hoshikage_api.kernel.generation`),
a message through the one answer path (:func:`hoshikage_api.kernel.answer.answer`): the same
session, scheduler, keep-alive, cancel-on-disconnect and ``request_finished`` as the OpenAI
routes. Errors on these routes have Anthropic's shape (:mod:`.errors`). The API
key may come as ``x-api-key`` or as a Bearer token; ``anthropic-version`` and
``anthropic-beta`` headers are accepted and need not be sent.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Router, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body

from ..kernel.answer import answer
from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.generation import count_prompt
from ..kernel.media import Collector, attach
from . import errors
from .format import MessageFormat
from .schemas import AnthropicErrorBody, CountTokensRequest, Message, MessagesRequest, TokenCount
from .translate import count_tokens_job, messages_job, omits_thinking

_ERROR_TEXT = {
    400: (
        "`invalid_request_error`: bad JSON, a wrong type or value, a bad image block, a document "
        "block, a server tool, or "
        "a prompt over the context (`prompt is too long: ...`)."
    ),
    401: "`authentication_error`: missing or wrong API key (`x-api-key` or Bearer).",
    404: "`not_found_error`: unknown model.",
    413: "`request_too_large`: body over `max_body_size`.",
    500: "`api_error`: the model failed to load, or an internal error.",
    529: "`overloaded_error`: the queue is full or the server is shutting down; see `Retry-After`.",
}


RESPONSES = {
    code: ResponseSpec(data_container=AnthropicErrorBody, description=text)
    for code, text in _ERROR_TEXT.items()
}


@post(
    "/",
    status_code=200,
    summary="Create a message (Anthropic Messages API)",
    responses=RESPONSES,
    description="With `stream: true` the answer is a `text/event-stream` of Anthropic's events: "
    "`message_start`, `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`, "
    "`message_delta`, `message_stop` (or `error` if generation fails after the stream started).",
)
async def create_message(request: Request, data: Annotated[MessagesRequest, Body()]) -> Message:
    images = Collector()
    job = await attach(runtime_of(request), messages_job(data, images), images)
    fmt = MessageFormat(job, omits_thinking(data), silent=data.max_tokens == 0)
    return await answer(request, runtime_of(request), job, fmt)


@post(
    "/count_tokens",
    status_code=200,
    summary="Count a message's input tokens",
    responses=RESPONSES,
    description="Exactly the prompt tokens that `/v1/messages` reports (`input_tokens` plus "
    "`cache_read_input_tokens`) for the same model, system, messages and tools, also for a "
    "prompt longer than the context. The prompt is rendered and read by the model (one "
    "token is sampled and dropped), so it then sits in the prompt cache.",
)
async def count_tokens(request: Request, data: Annotated[CountTokensRequest, Body()]) -> TokenCount:
    images = Collector()
    job = await attach(runtime_of(request), count_tokens_job(data, images), images)
    # Anthropic counts a prompt of any length (Claude Code sizes a tool's output so).
    counted = await until_disconnect(request, count_prompt(runtime_of(request), job))
    return TokenCount(input_tokens=counted)


def router() -> Router:
    """The Anthropic surface: its routes under ``/v1/messages``, and every error there (an
    unknown URL under it too) in Anthropic's shape."""
    return Router(
        "/v1/messages",
        route_handlers=[create_message, count_tokens],
        tags=["Anthropic"],
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
