"""``POST /v1/embeddings``."""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Annotated

from litestar import Request, post
from litestar.params import Body

from ..body import StrictBody
from ..disconnect import until_disconnect
from ..schemas import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from ..translate import embedding_inputs, keep_alive
from .deps import runtime_of
from .docs import GENERATION_ERRORS


def float32_base64(vector: list[float]) -> str:
    """Little-endian float32 bytes in base64, as OpenAI sends them."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


@post(
    "/v1/embeddings",
    dto=StrictBody,
    return_dto=None,
    status_code=200,
    tags=["OpenAI"],
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
