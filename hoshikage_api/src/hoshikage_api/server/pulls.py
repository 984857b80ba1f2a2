"""Hoshikage's own pull routes: ``POST /api/models/pull`` (progress as server-sent events),
``DELETE /api/models/pull`` (cancel), ``POST /api/models/plan`` (will it fit, before any
download) and ``DELETE /api/models/{name}`` (delete a pulled model). The web page's "get a
model" box uses them.

The stream of ``POST /api/models/pull``::

    event: progress
    data: {"status": "pulling 3f1c2a9b8d7e", "digest": "sha256:…", "total": 98178720,
           "completed": 1048576, "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}

    event: done
    data: {"status": "success", "model": "smollm2-135m-instruct.q4_1", "aliases": [...]}

or, when it fails after it started, a last ``event: error`` with the default error shape. A
client that disconnects leaves the pull; when no one follows it any more it is cancelled (its
partial file stays for the next pull to resume), as ``DELETE`` cancels it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, delete, post
from litestar.params import Body, Parameter
from msgspec import Meta, Struct

from ..kernel.answer import stream_response
from ..kernel.deps import ModelPath, runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.docs import errors
from ..kernel.errors import to_api_error
from ..kernel.pulls import checked, pulls_of, remove_pulled
from ..kernel.wire import named_event


class PullBody(Struct, kw_only=True):
    #: What to pull: ``hf.co/org/repo:QUANT``, ``org/repo/file.gguf``, ``qwen3:8b``…
    model: Annotated[str, Meta(min_length=1, max_length=1024)]


def _served(request: Request, name: str) -> str | None:
    runtime = runtime_of(request)
    if name in runtime.registry:
        return runtime.resolve(name).name
    return None


async def _events(request: Request, reference: str) -> AsyncIterator[bytes]:
    served = _served(request, reference)
    if served is not None:
        entry = runtime_of(request).resolve(served)
        yield named_event(
            "done", {"status": "success", "model": entry.name, "aliases": list(entry.aliases)}
        )
        return
    pulls = pulls_of(request)
    sent = False
    try:
        async for step in pulls.follow(reference):
            if step.status == "success":
                break
            sent = True
            yield named_event("progress", step.to_dict())
        entry = runtime_of(request).resolve(_served(request, reference) or reference)
        yield named_event(
            "done", {"status": "success", "model": entry.name, "aliases": list(entry.aliases)}
        )
    except Exception as exc:
        if not sent:
            raise
        error = to_api_error(exc)
        yield named_event("error", error.body())


@post(
    "/api/models/pull",
    status_code=200,
    tags=["Models"],
    summary="Pull a model (server-sent progress)",
    responses=errors(400, 401, 403, 404, 502, 507),
)
async def pull(request: Request, data: Annotated[PullBody, Body()]) -> None:
    """Download ``model`` from Hugging Face or Ollama's registry and serve it: progress as
    ``event: progress``, then ``event: done`` with the name it is served under (at once, no
    restart). A model already served answers ``done`` at once. Errors before the first event
    are ordinary JSON errors; after it, a last ``event: error``."""
    reference = data.model.strip()
    if _served(request, reference) is None:
        checked(pulls_of(request), reference)
    return await stream_response(request, _events(request, reference), "text/event-stream")


@delete(
    "/api/models/pull",
    status_code=200,
    tags=["Models"],
    summary="Cancel a pull",
    responses=errors(400, 401),
)
async def cancel(
    request: Request, model: Annotated[str, Parameter(description="the reference being pulled")]
) -> dict[str, Any]:
    """Stop the pull of ``model`` (query); its partial file stays for the next pull to
    resume. ``cancelled`` says whether one was running."""
    pulls = pulls_of(request)
    return {"model": model, "cancelled": pulls.cancel(checked(pulls, model))}


@post(
    "/api/models/plan",
    status_code=200,
    tags=["Models"],
    summary="Will it fit? (before downloading)",
    responses=errors(400, 401, 403, 404, 502),
)
async def plan(request: Request, data: Annotated[PullBody, Body()]) -> dict[str, Any]:
    """For each quant ``model`` may mean: the weights' size, the KV bytes per token of
    context, the largest context that fits this machine's free memory, whether it fits at
    the configured ``n_ctx`` (and with how many GPU layers), and the largest quant that fits,
    from the GGUF header read by HTTP ``Range`` (never the weights)."""
    from hoshikage_core.pull.fetch import Settings
    from hoshikage_core.pull.plan import backend_defaults
    from hoshikage_core.pull.plan import plan as make_plan

    runtime = runtime_of(request)
    reference = checked(pulls_of(request), data.model.strip())
    settings = Settings.of(runtime.config)
    work = asyncio.to_thread(make_plan, reference, settings, backend_defaults(runtime.pm))
    return await until_disconnect(request, work)


@delete(
    "/api/models/{name:str}",
    status_code=200,
    tags=["Models"],
    summary="Delete a pulled model",
    responses=errors(400, 401, 404),
)
async def remove(name: ModelPath, request: Request) -> dict[str, Any]:
    """Delete the pulled model ``name`` (or alias) and the files no other pulled model
    uses; it is no longer served. A model from the config or ``models_dir`` is not deleted
    (400): remove it there."""
    record = await remove_pulled(request, name)
    return {"deleted": record["name"]}
