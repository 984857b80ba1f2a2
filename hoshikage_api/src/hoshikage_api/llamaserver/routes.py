"""``POST /tokenize``, ``/detokenize`` and ``/apply-template``, as llama-server serves them.

Each runs in a session on the named model (it is loaded if need be, and the call waits its
turn like any request), on a worker thread. Errors have OpenAI's shape, as llama-server's do.
"""

from __future__ import annotations

from typing import Annotated

from hoshikage_core.protocol import TokenCodec
from litestar import Request, Router, post
from litestar.params import Body

from ..kernel import errors
from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.docs import GENERATION_ERRORS
from ..kernel.errors import invalid
from ..kernel.job import Job
from .schemas import (
    ApplyTemplateRequest,
    Content,
    DetokenizeRequest,
    InfillRequest,
    InfillResult,
    Piece,
    Prompt,
    TokenizeRequest,
    Tokens,
)


def model_name(runtime, name: str | None) -> str:
    """The model a body names, or the only one registered when it names none."""
    if name is not None:
        return name
    entries = list(runtime.registry)
    if len(entries) == 1:
        return entries[0].name
    raise invalid("'model' is required: more than one model is registered.", "model")


async def on_model(request: Request, name: str | None, endpoint: str, target):
    """``target(model)`` in a session on the model, on a worker thread."""
    runtime = runtime_of(request)
    name = model_name(runtime, name)

    async def work():
        async with runtime.session(name, endpoint=endpoint) as session:
            if not isinstance(session.model, TokenCodec):
                raise invalid(f"The model '{name}' does not expose its tokenizer.", "model")
            return await session.call(target)

    return await until_disconnect(request, work())


def _piece(raw: bytes) -> str | list[int]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


_COMMON = {"status_code": 200}


@post("/tokenize", summary="Tokenize text (llama-server)", responses=GENERATION_ERRORS, **_COMMON)
async def tokenize(request: Request, data: Annotated[TokenizeRequest, Body()]) -> Tokens:
    def run(model):
        tokens = model.encode(data.content, data.add_special, data.parse_special)
        if not data.with_pieces:
            return Tokens(tokens=tokens)
        return Tokens(
            tokens=[Piece(id=t, piece=_piece(model.token_bytes(t, special=True))) for t in tokens]
        )

    return await on_model(request, data.model, "tokenize", run)


@post(
    "/detokenize",
    summary="Detokenize tokens (llama-server)",
    responses=GENERATION_ERRORS,
    **_COMMON,
)
async def detokenize(request: Request, data: Annotated[DetokenizeRequest, Body()]) -> Content:
    def run(model):
        raw = b"".join(model.token_bytes(t, special=True) for t in data.tokens)
        return Content(content=raw.decode("utf-8", errors="replace"))

    return await on_model(request, data.model, "detokenize", run)


@post(
    "/apply-template",
    summary="Render messages with the model's chat template (llama-server)",
    responses=GENERATION_ERRORS,
    **_COMMON,
)
async def apply_template(request: Request, data: Annotated[ApplyTemplateRequest, Body()]) -> Prompt:
    tools = tuple(data.tools) if data.tools else None

    def run(model):
        return Prompt(prompt=model.apply_template(tuple(data.messages), tools))

    return await on_model(request, data.model, "apply-template", run)


# ---- fill in the middle ---------------------------------------------------------------------


def infill_job(runtime, data: InfillRequest) -> Job:
    from hoshikage_core.protocol import GenerationRequest

    limit = data.max_tokens if data.max_tokens is not None else data.n_predict
    request = GenerationRequest(
        prompt=data.input_prefix + data.prompt,
        suffix=data.input_suffix,
        fim_files=tuple({"filename": f.filename, "text": f.text} for f in data.input_extra),
        max_tokens=None if limit is None or limit < 0 else limit,
        temperature=data.temperature,
        top_k=data.top_k,
        top_p=data.top_p,
        min_p=data.min_p,
        seed=data.seed,
        stop=tuple(data.stop),
    )
    return Job(
        endpoint="infill",
        model=model_name(runtime, data.model),
        keep_alive=None,
        requests=(request,),
        stream=data.stream,
    )


def _stop_type(finish: str | None, stop_sequence: str | None) -> str:
    if finish == "length":
        return "limit"
    return "word" if stop_sequence else "eos"


def infill_result(job: Job, result) -> InfillResult:
    return InfillResult(
        content=result.text,
        model=job.model,
        stop_type=_stop_type(result.finish_reason, result.stop_sequence),
        stopping_word=result.stop_sequence or "",
        tokens_predicted=result.completion_tokens,
        tokens_evaluated=result.prompt_tokens,
        tokens_cached=result.cached_tokens,
    )


@post(
    "/infill",
    summary="Fill in the middle (llama-server)",
    responses=GENERATION_ERRORS,
    description="For models whose metadata names FIM tokens (else 400). With `stream: true`, "
    'server-sent events `data: {"content", "stop": false}`, then the final object with `stop: true`.',
    **_COMMON,
)
async def infill(request: Request, data: Annotated[InfillRequest, Body()]) -> InfillResult:
    from ..kernel.answer import stream_response
    from ..kernel.generation import ChoiceResult, collect, run
    from ..kernel.wire import data_event as event

    runtime = runtime_of(request)
    job = infill_job(runtime, data)
    if not job.stream:
        (result,) = await until_disconnect(request, collect(runtime, job))
        return infill_result(job, result)
    total = ChoiceResult()
    started = []

    def render(chunk):
        total.add(chunk)
        if chunk.text:
            started.append(True)
            yield event({"content": chunk.text, "stop": False})
        if chunk.finish_reason is not None:
            started.append(True)
            final = infill_result(job, total)
            final.content = ""
            yield event(final)

    async def events():
        try:
            async for _index, chunk in run(runtime, job):
                for item in render(chunk):
                    yield item
        except Exception as exc:  # before anything went out, the answer is a plain error
            if not started:
                raise
            yield event(errors.to_api_error(exc).body())

    return await stream_response(request, events(), "text/event-stream")


def router() -> Router:
    """llama-server's utility routes at its paths, errors in OpenAI's shape."""
    return Router(
        "/",
        route_handlers=[tokenize, detokenize, apply_template, infill],
        tags=["llama-server"],
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
