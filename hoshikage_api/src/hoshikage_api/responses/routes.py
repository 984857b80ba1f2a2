"""``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{response_id}`` and
``GET /v1/responses/{response_id}/input_items`` (each also without ``/v1``, as OpenAI's
base URL may or may not end in it).

Creating a response is a translator onto the one answer path
(:func:`hoshikage_api.kernel.answer.answer`): the same session, scheduler, keep-alive,
cancel-on-disconnect and ``request_finished`` as chat. A finished response is kept in the
app's :class:`~.store.ResponseStore` unless the request says ``store: false``; it is stored
before its last event or its body is sent, so a client may continue from it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Annotated, Literal

import attrs
from litestar import Request, Router, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, Parameter

from ..kernel.answer import HEADERS, OwnTypeStream, answer
from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.errors import ApiError
from ..kernel.generation import collect, count_prompt, run
from ..kernel.media import Collector, attach
from ..kernel.wire import ErrorBody
from . import errors
from . import schemas as s
from .conversation_store import conversations_of
from .conversations import HANDLERS as CONVERSATIONS
from .conversations import references_of
from .format import ResponseBuilder, listed, page_of
from .running import EventLog, Running, finished_logs_of, keep_finished, running_of
from .sealing import sealer_of
from .store import Stored, store_of
from .translate import (
    conversation_id,
    conversation_not_found,
    output_as_input,
    previous_not_found,
    response_job,
    wants_logprobs,
)

TAGS = ["OpenAI Responses"]
_ERROR_TEXT = {
    400: (
        "Invalid request: bad JSON, a wrong type or value (`param` names it), a refused field, item or hosted tool, or "
        "a prompt over the context (`context_length_exceeded`, `param: input`)."
    ),
    401: "Missing or wrong API key (`authentication_error`).",
    404: (
        "Unknown model (`model_not_found`), or a response that is not stored: never stored, deleted or evicted "
        "(`previous_response_not_found` with `param: previous_response_id`, or `response_not_found`)."
    ),
    413: "Request body over `max_body_size`.",
    500: "The model failed to load (`model_load_failed`) or an internal error.",
    503: "The queue is full (`queue_full`) or the server is shutting down; see `Retry-After`.",
}


def error_specs(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_ERROR_TEXT[code])
        for code in statuses
    }


ResponseId = Annotated[str, Parameter(description="a response id (`resp_...`)", max_length=256)]


def _not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", code="response_not_found")


async def _then(items: AsyncIterator[bytes], done: Callable[[], object]) -> AsyncIterator[bytes]:
    """``items``, then ``done()`` however the stream ends (finished, failed, cut off)."""
    try:
        async with aclosing(items) as source:
            async for item in source:
                yield item
    finally:
        done()


@post(
    ["/v1/responses", "/responses"],
    status_code=200,
    summary="Create a response (OpenAI Responses API)",
    responses=error_specs(400, 401, 404, 413, 500, 503),
    description="With `previous_response_id` the stored conversation (its input and output items, "
    "transitively; not its `instructions`) comes before the new `input`; an unknown or evicted id is "
    "a 404 (`previous_response_not_found`). With `conversation` (an id from `POST /v1/conversations`) "
    "its items come before the new `input`, and once the response completes (or is incomplete) its "
    "input and output items are added to it; an unknown id is a 404 (`conversation_not_found`). "
    "With `stream: true` the answer is a `text/event-stream` of OpenAI's events, each with a "
    "`sequence_number`: `response.created`, `response.in_progress`, "
    "output item, content part, `response.output_text.delta` and function-call argument events, and "
    "`response.completed` or `response.incomplete` (or `response.failed` if generation fails after "
    "the stream started). With `background: true` the response generates on its own: without "
    "`stream` the answer is the response `in_progress` at once; with `stream: true` its events are "
    "streamed and kept, so a client that leaves does not stop it and may come back with `GET "
    "/v1/responses/{id}?stream=true&starting_after=N`.",
)
async def create_response(
    request: Request, data: Annotated[s.CreateResponse, Body()]
) -> s.Response:
    store = store_of(request)
    conversation = conversation_id(data)
    previous = _continued(request, data, conversation)
    sealer = sealer_of(request)
    images = Collector()
    job, context, tools = response_job(data, previous, sealer, images, references_of(request))
    job = await attach(runtime_of(request), job, images)

    def keep(response: s.Response) -> None:
        if data.store is not False:
            store.put(Stored(response, context))
        if conversation is not None and response.status in ("completed", "incomplete"):
            # The new input, then the output: the items that continue the conversation.
            new = context[len(previous) :]
            conversations_of(request).add(conversation, [*new, *output_as_input(response)])

    builder = ResponseBuilder(
        data, logprobs=wants_logprobs(data), on_final=keep, tools=tools, sealer=sealer
    )
    runtime = runtime_of(request)
    running = running_of(request)
    entry = running[builder.id] = Running(builder)  # GET answers it as in_progress

    def gone() -> None:
        running.pop(builder.id, None)

    if data.background:
        if data.stream:
            entry.log = EventLog()
            work = _background_stream(builder, run(runtime, job, builder.ready), entry.log, keep)
        else:
            work = _background(builder, collect(runtime, job, builder.ready), keep)
        entry.task = asyncio.create_task(work)
        finished = finished_logs_of(request)

        def ended(_task) -> None:
            gone()
            if entry.log is not None and entry.log.error is None:
                keep_finished(finished, builder.id, entry.log)

        entry.task.add_done_callback(ended)
        if entry.log is None:
            return entry.snapshot()
        # An error before the first event (unknown model, full queue) is an ordinary error
        # answer; a client that leaves before it only stops waiting.
        await until_disconnect(request, entry.log.started())
        return OwnTypeStream(entry.log.follow(), own_media_type=builder.media_type, headers=HEADERS)
    try:
        response = await answer(request, runtime, job, builder)
    except BaseException:
        gone()
        raise
    if not job.stream:
        gone()
        return response
    response.iterator = _then(response.iterator, gone)  # in progress until the stream ends
    return response


def _continued(request: Request, data: s.CreateResponse, conversation: str | None):
    """What ``data`` continues: the stored predecessor, the conversation's items (a tuple),
    or None; an unknown one is a 404."""
    if conversation is not None:
        items = conversations_of(request).items(conversation)
        if items is None:
            raise conversation_not_found(conversation)
        return items
    if data.previous_response_id is not None:
        previous = store_of(request).get(data.previous_response_id)
        if previous is None:
            raise previous_not_found(data.previous_response_id)
        return previous
    return None


@post(
    ["/v1/responses/input_tokens", "/responses/input_tokens"],
    status_code=200,
    summary="Count a response's input tokens",
    responses=error_specs(400, 401, 404, 413, 500, 503),
    description="Exactly the `usage.input_tokens` that `POST /v1/responses` reports for the same "
    "model, instructions, input (after `conversation` or `previous_response_id`), tools and "
    "reasoning, also for an input longer than the context. The prompt is rendered and read by "
    "the model (one token is sampled and dropped), so it then sits in the prompt cache. Nothing "
    "is stored.",
)
async def count_input_tokens(
    request: Request, data: Annotated[s.CountInputTokens, Body()]
) -> s.InputTokenCount:
    previous = _continued(request, data, conversation_id(data))
    images = Collector()
    job, _, _ = response_job(data, previous, sealer_of(request), images, references_of(request))
    job = await attach(runtime_of(request), attrs.evolve(job, endpoint="count_tokens"), images)
    counted = await until_disconnect(request, count_prompt(runtime_of(request), job))
    return s.InputTokenCount(input_tokens=counted)


async def _background(builder: ResponseBuilder, results, keep) -> None:
    """A ``background: true`` response, to its end: stored completed (or incomplete, by the
    builder's ``on_final``), failed with its error, or cancelled (by ``POST .../cancel``, or
    the server stopping)."""
    try:
        builder.whole(await results)
    except asyncio.CancelledError:
        keep(builder.response("cancelled"))
    except Exception as exc:
        error = errors.to_openai(exc)
        failure = s.ResponseError(code=errors.failure_code(error), message=error.message)
        keep(builder.response("failed", error=failure))


async def _background_stream(builder: ResponseBuilder, chunks, log: EventLog, keep) -> None:
    """A streamed ``background: true`` response, to its end, its events written to ``log``
    whoever reads it: stored as it ends (completed or incomplete, by the builder's
    ``on_final``), failed (after a ``response.failed`` event), or cancelled. A failure
    before the first event is left in the log for the creating request to answer."""
    error = None
    try:
        async with aclosing(chunks) as source:
            async for index, chunk in source:
                log.extend(builder.items(index, chunk))
    except asyncio.CancelledError:
        keep(builder.response("cancelled"))
    except Exception as exc:
        if not log.events:
            error = exc
        else:
            failure = errors.to_openai(exc)
            code = errors.failure_code(failure)
            log.extend(builder.failed(code, failure.message))
            keep(
                builder.response(
                    "failed", error=s.ResponseError(code=code, message=failure.message)
                )
            )
    finally:
        log.close(error)


@get(
    ["/v1/responses/{response_id:str}", "/responses/{response_id:str}"],
    summary="Retrieve a stored response, or stream a background one's events again",
    responses=error_specs(400, 401, 404),
)
async def retrieve_response(
    request: Request,
    response_id: ResponseId,
    stream: Annotated[
        bool,
        Parameter(
            description="stream the events of a response created with `background: true` and "
            "`stream: true` (while it runs, and for the last few after it ends)"
        ),
    ] = False,
    starting_after: Annotated[
        int | None,
        Parameter(ge=0, description="with `stream`: the sequence number to start after"),
    ] = None,
) -> s.Response:
    if stream:
        running = running_of(request).get(response_id)
        log = running.log if running is not None else finished_logs_of(request).get(response_id)
        if log is None:
            if store_of(request).get(response_id) is None:
                raise _not_found(response_id)
            raise ApiError(
                400,
                "Only a response created with 'background': true and 'stream': true can be "
                "streamed again ('stream=true'), while it runs or shortly after; GET it whole.",
                param="stream",
            )
        after = -1 if starting_after is None else starting_after
        return OwnTypeStream(log.follow(after), own_media_type="text/event-stream", headers=HEADERS)
    if starting_after is not None:
        raise ApiError(400, "'starting_after' needs 'stream=true'.", param="starting_after")
    stored = store_of(request).get(response_id)
    if stored is not None:
        return stored.response
    running = running_of(request).get(response_id)
    if running is not None:
        return running.snapshot()
    raise _not_found(response_id)


@post(
    ["/v1/responses/{response_id:str}/cancel", "/responses/{response_id:str}/cancel"],
    status_code=200,
    summary="Cancel a background response",
    responses=error_specs(400, 401, 404),
    description="Only a response created with `background: true` can be cancelled. While it "
    'generates, it stops and is stored with `status: "cancelled"`; once it has finished, it is '
    "answered as it is.",
)
async def cancel_response(request: Request, response_id: ResponseId) -> s.Response:
    running = running_of(request).get(response_id)
    if running is not None and running.task is not None:
        running.cancelled = True
        running.task.cancel()
        await asyncio.wait([running.task])
        stored = store_of(request).get(response_id)
        return stored.response if stored is not None else running.snapshot()
    stored = store_of(request).get(response_id)
    if running is None and stored is None:
        raise _not_found(response_id)
    if stored is not None and stored.response.background:
        return stored.response
    raise ApiError(
        400,
        "Only a response created with 'background': true can be cancelled.",
        param="response_id",
    )


@delete(
    ["/v1/responses/{response_id:str}", "/responses/{response_id:str}"],
    status_code=200,
    summary="Delete a stored response",
    responses=error_specs(401, 404),
)
async def delete_response(request: Request, response_id: ResponseId) -> s.DeletedResponse:
    if not store_of(request).delete(response_id):
        raise _not_found(response_id)
    return s.DeletedResponse(id=response_id)


@get(
    ["/v1/responses/{response_id:str}/input_items", "/responses/{response_id:str}/input_items"],
    summary="List a stored response's input items",
    responses=error_specs(400, 401, 404),
    description="The items the response was generated from, earlier responses' items included "
    "(`instructions` are not items). `order` is `desc` (newest first) by default.",
)
async def list_input_items(
    request: Request,
    response_id: ResponseId,
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    order: Annotated[
        Literal["asc", "desc"], Parameter(description="`desc` (newest first) or `asc`")
    ] = "desc",
    after: Annotated[str | None, Parameter(description="list the items after this item id")] = None,
) -> s.InputItemList:
    stored = store_of(request).get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return page_of([listed(item) for item in stored.context], limit, order, after, response_id)


def router() -> Router:
    """The Responses surface, with its own error mapping (the default shape, with this
    API's field names). Its URLs are under two prefixes (with and without ``/v1``), and an
    unknown URL under them gets the default body, which is the same."""
    return Router(
        "/",
        route_handlers=[
            create_response,
            retrieve_response,
            cancel_response,
            count_input_tokens,
            delete_response,
            list_input_items,
            *CONVERSATIONS,
        ],
        tags=TAGS,
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
