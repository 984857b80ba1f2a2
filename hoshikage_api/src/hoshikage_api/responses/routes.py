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

from litestar import Request, Router, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, Parameter

from ..kernel.answer import answer
from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.errors import ApiError
from ..kernel.generation import collect
from ..kernel.wire import ErrorBody
from . import errors
from . import schemas as s
from .format import ResponseBuilder, listed
from .running import Running, running_of
from .store import Stored, store_of
from .translate import previous_not_found, response_job, wants_logprobs

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
    "a 404 (`previous_response_not_found`). With `stream: true` the answer is a `text/event-stream` "
    "of OpenAI's events, each with a `sequence_number`: `response.created`, `response.in_progress`, "
    "output item, content part, `response.output_text.delta` and function-call argument events, and "
    "`response.completed` or `response.incomplete` (or `response.failed` if generation fails after "
    "the stream started).",
)
async def create_response(
    request: Request, data: Annotated[s.CreateResponse, Body()]
) -> s.Response:
    store = store_of(request)
    previous = None
    if data.previous_response_id is not None:
        previous = store.get(data.previous_response_id)
        if previous is None:
            raise previous_not_found(data.previous_response_id)
    job, context = response_job(data, previous)

    def keep(response: s.Response) -> None:
        if data.store is not False:
            store.put(Stored(response, context))

    builder = ResponseBuilder(data, logprobs=wants_logprobs(data), on_final=keep)
    runtime = runtime_of(request)
    running = running_of(request)
    entry = running[builder.id] = Running(builder)  # GET answers it as in_progress

    def gone() -> None:
        running.pop(builder.id, None)

    if data.background:
        entry.task = asyncio.create_task(
            _background(builder, collect(runtime, job, builder.ready), keep)
        )
        entry.task.add_done_callback(lambda _task: gone())
        return entry.snapshot()
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


@get(
    ["/v1/responses/{response_id:str}", "/responses/{response_id:str}"],
    summary="Retrieve a stored response",
    responses=error_specs(400, 401, 404),
)
async def retrieve_response(
    request: Request,
    response_id: ResponseId,
    stream: Annotated[
        bool, Parameter(description="not supported: a stored response is whole")
    ] = False,
) -> s.Response:
    if stream:
        raise ApiError(
            400, "Streaming a stored response ('stream=true') is not supported.", param="stream"
        )
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
    items = [listed(item) for item in stored.context]
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise ApiError(
                400,
                f"Invalid 'after': no input item of '{response_id}' has id '{after}'.",
                param="after",
            )
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return s.InputItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(items) > limit,
    )


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
            delete_response,
            list_input_items,
        ],
        tags=TAGS,
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
