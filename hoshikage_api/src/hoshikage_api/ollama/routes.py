"""Ollama's native API: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/ps``,
``/api/show``, ``/api/embed``, ``/api/embeddings``, ``/api/version``, ``/api/pull``,
``/api/delete`` (:mod:`.pull`), ``/api/create``, its blobs and ``/api/copy``
(:mod:`.create`), and a clear 501 for ``/api/push``.

Generation is a translator onto the one answer path (:func:`hoshikage_api.kernel.answer.answer`):
the same session, scheduler, keep-alive, cancel-on-disconnect and ``request_finished`` as the
OpenAI routes. Errors have Ollama's shape (:mod:`.errors`). With ``api_key`` set, these
routes need it like every other (``Authorization: Bearer <key>``).
"""

from __future__ import annotations

import json
import time
from typing import Annotated

from litestar import Request, Router, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body

from ..kernel.answer import answer
from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.errors import invalid
from ..kernel.media import Collector, attach
from . import errors, models
from . import schemas as s
from .create import blob_head, blob_post, copy, create
from .format import ChatFormat, GenerateFormat, load_answer
from .pull import pull, remove
from .translate import chat_job, check_load, generate_job, keep_alive, options

#: The Ollama API version these routes follow, for clients that check ``/api/version``: at
#: least every known client's minimum (tests/api/test_ollama.py lists them; Codex's ``--oss``
#: needs 0.13.4, for the Responses API at ``/v1/responses``).
OLLAMA_VERSION = "0.13.5"

_ERROR_TEXT = {
    400: (
        "Bad JSON, a wrong type or value, an option out of range, a bad image, `think`, `suffix`, "
        "`template` or `context`, or a prompt over the context (a chat's with `truncate: false`)."
    ),
    401: "Missing or wrong API key (`Authorization: Bearer <key>`).",
    404: 'Unknown model: `model "x" not found, try pulling it first`.',
    413: "Body over `max_body_size`.",
    500: "The model failed to load, or an internal error.",
    503: "The queue is full or the server is shutting down; see `Retry-After`.",
}


def _responses(*codes: int) -> dict[int, ResponseSpec]:
    return {
        c: ResponseSpec(data_container=s.OllamaErrorBody, description=_ERROR_TEXT[c]) for c in codes
    }


GENERATION = _responses(400, 401, 404, 413, 500, 503)


def _check_think(request: Request, label: str, data: s.GenerationFields) -> None:
    """Ollama's answer to ``think`` (true or an effort level) on a model without a thinking
    mode: 400 ``"<model>" does not support thinking``. ``think: false`` is always fine."""
    if (
        data.think is None
        or data.think is False
        or data.think not in (True, "high", "medium", "low")
    ):
        return  # off, or a value the translation refuses by itself
    runtime = runtime_of(request)
    if not models.Facts(runtime, runtime.resolve(label)).thinks():
        raise invalid(f"{json.dumps(data.model)} does not support thinking", "think")


async def _load_or_unload(request: Request, label: str, data: s.GenerationFields, fmt):
    """No prompt or messages: load the model (``done_reason: load``), or with
    ``keep_alive: 0`` unload it without loading it first (``done_reason: unload``)."""
    runtime = runtime_of(request)
    seconds = check_load(data)
    if seconds == 0:
        await runtime.unload(label)
        return load_answer(fmt, "unload")
    await until_disconnect(request, runtime.load(label, keep_alive=seconds))
    return load_answer(fmt, "load")


@post(
    "/chat",
    status_code=200,
    summary="Chat (Ollama)",
    responses=GENERATION,
    description="NDJSON (`application/x-ndjson`) unless `stream` is false. No messages: load the "
    "model (`done_reason: load`), or with `keep_alive: 0` unload it (`done_reason: unload`).",
)
async def chat(request: Request, data: Annotated[s.ChatRequest, Body()]) -> s.ChatResponse:
    label = models.resolve(runtime_of(request), data.model)
    _check_think(request, label, data)
    fmt = ChatFormat(data.model)
    if not data.messages:
        return await _load_or_unload(request, label, data, fmt)
    images = Collector()
    job = await attach(runtime_of(request), chat_job(data, label, images), images)
    return await answer(request, runtime_of(request), job, fmt)


@post(
    "/generate",
    status_code=200,
    summary="Generate (Ollama)",
    responses=GENERATION,
    description="NDJSON (`application/x-ndjson`) unless `stream` is false. An empty prompt: load "
    "the model (`done_reason: load`), or with `keep_alive: 0` unload it (`done_reason: unload`).",
)
async def generate(
    request: Request, data: Annotated[s.GenerateRequest, Body()]
) -> s.GenerateResponse:
    label = models.resolve(runtime_of(request), data.model)
    _check_think(request, label, data)
    fmt = GenerateFormat(data.model)
    if not data.prompt:
        return await _load_or_unload(request, label, data, fmt)
    images = Collector()
    job = await attach(runtime_of(request), generate_job(data, label, images), images)
    return await answer(request, runtime_of(request), job, fmt)


async def _embed(request: Request, model: str, inputs: list[str], raw_options, raw_keep_alive):
    """``(vectors, prompt tokens, load seconds, total seconds)`` over the embeddings route's
    session path; no inputs only loads the model."""
    runtime = runtime_of(request)
    label = models.resolve(runtime, model)
    options(raw_options)  # checked, then nothing applies to embeddings
    seconds = keep_alive(raw_keep_alive)
    start = time.monotonic()

    async def work():
        async with runtime.session(label, endpoint="ollama_embed", keep_alive=seconds) as session:
            loaded = time.monotonic()
            if not inputs:
                return [], 0, loaded - start
            result = await session.embed(inputs)
            return result.vectors, result.prompt_tokens, loaded - start

    vectors, tokens, load = await until_disconnect(request, work())
    return vectors, tokens, load, time.monotonic() - start


@post(
    "/embed",
    status_code=200,
    summary="Embed (Ollama)",
    responses=GENERATION,
)
async def embed(request: Request, data: Annotated[s.EmbedRequest, Body()]) -> s.EmbedResponse:
    """``input`` (a string or a list) → ``embeddings``, L2-normalised. An empty input loads
    the model. ``dimensions`` is refused; ``truncate`` is accepted, but an input over the
    context is a 400 rather than cut."""
    if data.dimensions is not None:
        raise invalid(
            "'dimensions' is not supported: the model's own size is returned.", "dimensions"
        )
    inputs = [data.input] if isinstance(data.input, str) else list(data.input)
    inputs = [] if inputs == [""] else inputs
    for i, text in enumerate(inputs):
        if not text:
            raise invalid(f"Invalid 'input[{i}]': must not be an empty string.", f"input[{i}]")
    vectors, tokens, load, total = await _embed(
        request, data.model, inputs, data.options, data.keep_alive
    )
    return s.EmbedResponse(
        model=data.model,
        embeddings=vectors,
        total_duration=int(total * 1e9),
        load_duration=int(load * 1e9),
        prompt_eval_count=tokens,
    )


@post(
    "/embeddings",
    status_code=200,
    summary="Embedding (Ollama, older)",
    responses=GENERATION,
)
async def embeddings(
    request: Request, data: Annotated[s.EmbeddingsRequest, Body()]
) -> s.EmbeddingsResponse:
    """``prompt`` → ``embedding``. An empty prompt loads the model and returns an empty list."""
    inputs = [data.prompt] if data.prompt else []
    vectors, _tokens, _load, _total = await _embed(
        request, data.model, inputs, data.options, data.keep_alive
    )
    return s.EmbeddingsResponse(embedding=vectors[0] if vectors else [])


@get("/tags", summary="List models (Ollama)", responses=_responses(401))
async def tags(request: Request) -> s.TagsResponse:
    """Every registered model and alias as ``name:latest``."""
    return models.tags(runtime_of(request))


@get("/ps", summary="Loaded models (Ollama)", responses=_responses(401))
async def ps(request: Request) -> s.PsResponse:
    """The loaded models, with memory (``size``, ``size_vram``) and ``expires_at``, the real
    unload deadline."""
    return models.ps(runtime_of(request))


@post(
    "/show",
    status_code=200,
    summary="Show a model (Ollama)",
    responses=_responses(400, 401, 404),
)
async def show(request: Request, data: Annotated[s.ShowRequest, Body()]) -> s.ShowResponse:
    """Details, GGUF ``model_info``, the chat template, parameters and capabilities."""
    name = data.model or data.name
    if not name:
        raise invalid("'model' is required.", "model")
    runtime = runtime_of(request)
    return models.show(runtime, models.resolve(runtime, name))


@get("/version", summary="Ollama API version", responses=_responses(401))
async def version() -> s.VersionResponse:
    """The Ollama API version these routes follow (not Hoshikage's; see ``/health``)."""
    return s.VersionResponse(version=OLLAMA_VERSION)


# ---- model management: not here -----------------------------------------------------------


def _managed(action: str):
    async def refuse() -> None:
        raise errors.not_supported(action)

    return refuse


_NOT_HERE = {
    "responses": {
        501: ResponseSpec(
            data_container=s.OllamaErrorBody, description="Models are managed by the config."
        )
    },
}
push = post(
    "/push",
    summary="Push (Ollama): not supported",
    name="ollama_push",
    operation_id="ollama_push",
    **_NOT_HERE,
)(_managed("push"))


def router() -> Router:
    """The Ollama surface: its routes under ``/api``, and every error there (an unknown URL
    under it too; Hoshikage's own admin routes under ``/api`` are the server's) in Ollama's
    shape."""
    return Router(
        "/api",
        route_handlers=[
            chat,
            generate,
            embed,
            embeddings,
            tags,
            ps,
            show,
            version,
            pull,
            push,
            create,
            copy,
            remove,
            blob_head,
            blob_post,
        ],
        tags=["Ollama"],
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
