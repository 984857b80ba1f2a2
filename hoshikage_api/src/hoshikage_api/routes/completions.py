"""``POST /v1/completions``."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, post
from litestar.params import Body

from ..body import StrictBody
from ..formats import CompletionFormat
from ..respond import respond
from ..schemas import Completion, CompletionRequest
from ..translate import completion_job
from .deps import runtime_of
from .docs import GENERATION_ERRORS


@post(
    "/v1/completions",
    dto=StrictBody,
    return_dto=None,
    status_code=200,
    tags=["OpenAI"],
    summary="Create a text completion",
    responses=GENERATION_ERRORS,
    description="With `stream: true` the answer is a `text/event-stream` of `text_completion` "
    "objects ending with `data: [DONE]`.",
)
async def completions(request: Request, data: Annotated[CompletionRequest, Body()]) -> Completion:
    job = completion_job(data)
    return await respond(request, runtime_of(request), job, CompletionFormat(job))
