"""``POST /v1/decisions``: every question's answer from one reading of the input.

The questions become prompts that share the rendered input (:mod:`.translate`), scored in
one session on the model's engine (:meth:`hoshikage_core.runtime.Session.score`): admitted
by the scheduler like a generation, cancelled if the client goes away, counted in the
metrics and in ``request_finished``.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Router, post
from litestar.params import Body

from ..kernel.body import StrictBody
from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.docs import GENERATION_ERRORS
from . import errors
from .schemas import Decision, DecisionRequest
from .translate import decision, score_request


@post(
    "/v1/decisions",
    status_code=200,
    summary="Answer predicate, choice and score questions about an input (OpenAI Decisions API)",
    responses=GENERATION_ERRORS,
    description="Up to 400 questions about one input, answered together from the model's "
    "probabilities of each answer's text: the input is read once for all of them. No stream.",
)
async def create_decision(request: Request, data: Annotated[DecisionRequest, Body()]) -> Decision:
    scoring, _labels = score_request(data)
    runtime = runtime_of(request)

    async def answer():
        async with runtime.session(data.model, endpoint="decisions") as session:
            return await session.score(scoring)

    scores = await until_disconnect(request, answer())
    return decision(data, scores)


def router() -> Router:
    """The Decisions surface: its route, errors in OpenAI's shape."""
    return Router(
        "/",
        route_handlers=[create_decision],
        tags=["OpenAI Decisions"],
        dto=StrictBody,
        return_dto=None,
        exception_handlers={Exception: errors.handle},
    )
