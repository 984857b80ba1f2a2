"""``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``,
``GET /v1/models`` and ``GET /v1/models/{id}``, each also without ``/v1``, as llama-server
serves them (clients set up for it, such as Continue's ``llama.cpp`` provider, leave it out).

Generation is a translator onto the one answer path (:func:`hoshikage_api.kernel.answer.answer`).
The models routes read the registry and the pool's in-memory state only, so they answer at
once even while a generation runs. Errors have the default (OpenAI) shape.
"""

from __future__ import annotations

import base64
import os
import sys
from array import array
from datetime import UTC, datetime
from typing import Annotated

from hoshikage_core.runtime import Runtime
from litestar import Request, Router, get, post
from litestar.params import Body

from ..kernel import errors
from ..kernel.answer import answer
from ..kernel.body import StrictBody
from ..kernel.deps import ModelPath, context_length, runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.docs import GENERATION_ERRORS
from ..kernel.docs import errors as error_specs
from ..kernel.job import keep_alive
from .audio import transcriptions
from .format import ChatFormat, CompletionFormat
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelCard,
    ModelList,
)
from .translate import chat_job, completion_job, echo, embedding_inputs, include_usage


@post(
    ["/v1/chat/completions", "/chat/completions"],
    status_code=200,
    summary="Create a chat completion",
    responses=GENERATION_ERRORS,
    description="With `stream: true` the answer is a `text/event-stream` of "
    "`chat.completion.chunk` objects ending with `data: [DONE]`.",
)
async def chat_completions(
    request: Request, data: Annotated[ChatCompletionRequest, Body()]
) -> ChatCompletion:
    from ..kernel.media import Collector, attach

    images = Collector()
    job = await attach(runtime_of(request), chat_job(data, images), images)
    fmt = ChatFormat(job, include_usage=include_usage(data))
    return await answer(request, runtime_of(request), job, fmt)


@post(
    ["/v1/completions", "/completions"],
    status_code=200,
    summary="Create a text completion",
    responses=GENERATION_ERRORS,
    description="With `stream: true` the answer is a `text/event-stream` of `text_completion` "
    "objects ending with `data: [DONE]`.",
)
async def completions(request: Request, data: Annotated[CompletionRequest, Body()]) -> Completion:
    job = completion_job(data)
    fmt = CompletionFormat(job, include_usage=include_usage(data), echo=echo(data))
    return await answer(request, runtime_of(request), job, fmt)


# ---- embeddings ---------------------------------------------------------------------------


def float32_base64(vector: list[float]) -> str:
    """Little-endian float32 bytes in base64, as OpenAI sends them."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


@post(
    ["/v1/embeddings", "/embeddings"],
    status_code=200,
    summary="Create embeddings",
    responses=GENERATION_ERRORS,
)
async def embeddings(request: Request, data: Annotated[EmbeddingRequest, Body()]) -> EmbeddingList:
    inputs = embedding_inputs(data)
    ka = keep_alive(data.keep_alive)
    runtime = runtime_of(request)

    async def embed():
        async with runtime.session(data.model, endpoint="embeddings", keep_alive=ka) as session:
            return await session.embed(inputs)

    result = await until_disconnect(request, embed())
    encode = float32_base64 if data.encoding_format == "base64" else list
    return EmbeddingList(
        data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(result.vectors)],
        model=data.model,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


# ---- models -------------------------------------------------------------------------------


def _cards(runtime: Runtime, entry) -> list[ModelCard]:
    try:
        created = int(os.path.getmtime(entry.path))
    except OSError:
        created = int(runtime.started_at)
    state = runtime.pool.state(entry.name)
    context = context_length(runtime, entry)
    common = {
        "created": created,
        "state": state,
        "context_length": context,
        "created_at": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z"),
        "max_input_tokens": context,
        "max_tokens": context,
        "input": ["text", *entry.modalities()],
    }
    cards = [ModelCard(id=entry.name, display_name=entry.name, **common)]
    cards += [ModelCard(id=a, display_name=a, alias_of=entry.name, **common) for a in entry.aliases]
    return cards


@get(["/v1/models", "/models"], summary="List models and aliases", responses=error_specs(401))
async def list_models(request: Request) -> ModelList:
    runtime = runtime_of(request)
    cards = [card for entry in runtime.registry for card in _cards(runtime, entry)]
    return ModelList(
        data=cards,
        first_id=cards[0].id if cards else None,
        last_id=cards[-1].id if cards else None,
    )


@get(
    ["/v1/models/{model_id:path}", "/models/{model_id:path}"],
    summary="Describe a model or alias",
    responses=error_specs(401, 404),
)
async def get_model(model_id: ModelPath, request: Request) -> ModelCard:
    name = model_id.lstrip("/")
    runtime = runtime_of(request)
    entry = runtime.resolve(name)
    return next(card for card in _cards(runtime, entry) if card.id == name)


def router() -> Router:
    """The OpenAI surface, with the default error shape."""
    return Router(
        "/",
        route_handlers=[
            chat_completions,
            completions,
            embeddings,
            list_models,
            get_model,
            transcriptions,
        ],
        tags=["OpenAI"],
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
