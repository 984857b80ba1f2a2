"""``GET /v1/models`` and ``GET /v1/models/{id}``: every model and alias, with its state.

These read the registry and the pool's in-memory state only, so they answer at once even
while a generation runs.
"""

from __future__ import annotations

import os

from hoshikage_core.runtime import Runtime
from litestar import Request, get

from ..schemas import ModelCard, ModelList
from .deps import ModelPath, runtime_of
from .docs import errors


def _cards(runtime: Runtime, entry) -> list[ModelCard]:
    try:
        created = int(os.path.getmtime(entry.path))
    except OSError:
        created = int(runtime.started_at)
    state = runtime.pool.state(entry.name)
    cards = [ModelCard(id=entry.name, created=created, state=state)]
    cards += [
        ModelCard(id=a, created=created, state=state, alias_of=entry.name) for a in entry.aliases
    ]
    return cards


@get("/v1/models", tags=["OpenAI"], summary="List models and aliases", responses=errors(401))
async def list_models(request: Request) -> ModelList:
    runtime = runtime_of(request)
    return ModelList(data=[card for entry in runtime.registry for card in _cards(runtime, entry)])


@get(
    "/v1/models/{model_id:path}",
    tags=["OpenAI"],
    summary="Describe a model or alias",
    responses=errors(401, 404),
)
async def get_model(model_id: ModelPath, request: Request) -> ModelCard:
    name = model_id.lstrip("/")
    runtime = runtime_of(request)
    entry = runtime.resolve(name)
    return next(card for card in _cards(runtime, entry) if card.id == name)
