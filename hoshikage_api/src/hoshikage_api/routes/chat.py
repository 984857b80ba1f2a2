"""``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, post
from litestar.params import Body

from ..body import StrictBody
from ..formats import ChatFormat
from ..respond import respond
from ..schemas import ChatCompletion, ChatCompletionRequest
from ..translate import chat_job
from .deps import runtime_of
from .docs import GENERATION_ERRORS


@post(
    "/v1/chat/completions",
    dto=StrictBody,
    return_dto=None,
    status_code=200,
    tags=["OpenAI"],
    summary="Create a chat completion",
    responses=GENERATION_ERRORS,
    description="With `stream: true` the answer is a `text/event-stream` of "
    "`chat.completion.chunk` objects ending with `data: [DONE]`.",
)
async def chat_completions(
    request: Request, data: Annotated[ChatCompletionRequest, Body()]
) -> ChatCompletion:
    job = chat_job(data)
    return await respond(request, runtime_of(request), job, ChatFormat(job))
