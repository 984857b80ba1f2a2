"""``POST /tokenize``, ``/detokenize`` and ``/apply-template``, as llama-server serves them.

Each runs in a session on the named model (it is loaded if need be, and the call waits its
turn like any request), on a worker thread. Errors have OpenAI's shape, as llama-server's do.
"""

from __future__ import annotations

from typing import Annotated

from hoshikage_core.protocol import TokenCodec
from litestar import Request, post
from litestar.params import Body

from ..body import StrictBody
from ..disconnect import until_disconnect
from ..errors import invalid
from ..routes.deps import runtime_of
from ..routes.docs import GENERATION_ERRORS
from .schemas import (
    ApplyTemplateRequest,
    Content,
    DetokenizeRequest,
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


_COMMON = {"dto": StrictBody, "return_dto": None, "status_code": 200, "tags": ["llama-server"]}


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


def handlers() -> list:
    return [tokenize, detokenize, apply_template]
