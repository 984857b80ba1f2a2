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

from typing import Annotated, Literal

from litestar import Request, Router, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, Parameter

from ..kernel.answer import answer
from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.errors import ApiError
from ..kernel.wire import ErrorBody
from . import errors
from . import schemas as s
from .format import ResponseBuilder, listed
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
    return await answer(request, runtime_of(request), job, builder)


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
    if stored is None:
        raise _not_found(response_id)
    return stored.response


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
        route_handlers=[create_response, retrieve_response, delete_response, list_input_items],
        tags=TAGS,
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
