"""``POST /v1/rerank`` and ``POST /rerank`` (llama-server serves both).

A model with a relevance head (rank pooling, loaded with ``embedding = true``) scores every
pair in batched decodes; any other model answers through the scoring primitive in its
engine, every document's prompt sharing the instructions and the query. Either way the
request is one session: queued, counted and cancelled like a generation. Errors have
OpenAI's shape.
"""

from __future__ import annotations

from typing import Annotated

from hoshikage_core.protocol import Reranker
from litestar import Request, Router, post
from litestar.params import Body

from ..kernel import errors
from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.docs import GENERATION_ERRORS
from .schemas import RerankRequest, RerankResponse
from .translate import relevance, response, score_request, texts


@post(
    ["/v1/rerank", "/rerank"],
    status_code=200,
    summary="Rank documents by relevance to a query (Jina/Cohere shape, as llama-server)",
    responses=GENERATION_ERRORS,
)
async def rerank(request: Request, data: Annotated[RerankRequest, Body()]) -> RerankResponse:
    documents = texts(data)
    runtime = runtime_of(request)

    async def work():
        async with runtime.session(data.model, endpoint="rerank") as session:
            model = session.model
            if isinstance(model, Reranker):
                ranking = await session.call(lambda m: m.rerank(data.query, documents))
                if ranking is not None:
                    session.record.prompt_tokens += ranking.prompt_tokens
                    return list(ranking.scores), ranking.prompt_tokens
            scores = await session.score(score_request(data.query, documents))
            return relevance(scores), scores.prompt_tokens

    scores, prompt_tokens = await until_disconnect(request, work())
    return response(data, documents, scores, prompt_tokens)


def router() -> Router:
    """The rerank surface: ``/v1/rerank`` and ``/rerank``, errors in OpenAI's shape."""
    return Router(
        "/",
        route_handlers=[rerank],
        tags=["Rerank"],
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
