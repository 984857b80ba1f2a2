"""Ollama's model management: ``POST /api/pull`` and ``DELETE /api/delete``, for the models
pulled into the store (``/api/create`` and ``/api/copy`` are :mod:`.create`'s).

``POST /api/pull`` streams the progress lines Ollama streams.

Ollama answers a pull with NDJSON progress objects::

    {"status": "pulling manifest"}
    {"status": "pulling 3f1c2a9b8d7e", "digest": "sha256:3f1c…", "total": 98, "completed": 98}
    {"status": "verifying sha256 digest"}
    {"status": "writing manifest"}
    {"status": "success"}

and with ``"stream": false`` only the last, ``{"status": "success"}``. A model that is
already served (its name, ``name:latest`` or an alias) answers these at once, as Ollama does
for a model whose blobs are all present: clients such as Codex's ``--oss`` mode pull before
every session. An error before the first line is an ordinary error in Ollama's shape; one
after it is a last line ``{"error": "..."}``.

Any other name is pulled (:mod:`hoshikage_core.pull`): an Ollama name from the registry, an
``hf.co/{org}/{repo}:{quant}`` from Hugging Face, with the real progress, and served under
its name as soon as ``success`` is sent. A client that disconnects leaves the pull; the last
one to leave cancels it (the partial file stays, to resume).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, delete, post
from litestar.params import Body
from msgspec import Meta, Struct

from ..kernel.answer import stream_response
from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.errors import ApiError, invalid
from ..kernel.pulls import checked, pulls_of, remove_pulled
from ..kernel.wire import line
from . import models
from .errors import to_ollama

NDJSON = "application/x-ndjson"


class PullRequest(Struct, kw_only=True):
    """``POST /api/pull``: ``model`` (or the older ``name``)."""

    model: Annotated[str, Meta(max_length=1024)] | None = None
    name: Annotated[str, Meta(max_length=1024)] | None = None
    #: NDJSON progress unless false.
    stream: bool | None = None
    #: Accepted and ignored (Ollama's: allow plain HTTP to a registry).
    insecure: bool | None = None
    username: str | None = None
    password: str | None = None


class PullStatus(Struct, kw_only=True, omit_defaults=True):
    """One progress object (and, alone, the answer of ``stream: false``)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


def served_steps(runtime, label: str) -> list[dict[str, Any]]:
    """Ollama's progress for a model already here: its one layer complete at once."""
    facts = models.Facts(runtime, runtime.resolve(label))
    digest = "sha256:" + facts.digest
    return [
        {"status": "pulling manifest"},
        {
            "status": f"pulling {facts.digest[:12]}",
            "digest": digest,
            "total": facts.size,
            "completed": facts.size,
        },
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]


async def ndjson_lines(steps: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """NDJSON lines over ``steps``; an error after the first line is a last ``{"error"}``."""
    sent = False
    try:
        async for step in steps:
            sent = True
            yield line(step)
    except Exception as exc:
        if not sent:
            raise
        yield line(to_ollama(exc)[1])


async def each_step(steps: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Steps known at once, as the stream of steps :func:`ndjson_lines` reads."""
    for step in steps:
        yield step


def name_of(data: PullRequest) -> str:
    name = (data.model or data.name or "").strip()
    if not name:
        raise invalid("'model' is required.", "model")
    return name


@post(
    "/pull",
    status_code=200,
    summary="Pull a model (Ollama)",
    name="ollama_pull",
    operation_id="ollama_pull",
    description="NDJSON progress (`application/x-ndjson`) unless `stream` is false, then one "
    '`{"status": "success"}`. A model already served answers at once.',
)
async def pull(request: Request, data: Annotated[PullRequest, Body()]) -> PullStatus:
    runtime = runtime_of(request)
    name = name_of(data)
    try:
        label = models.resolve(runtime, name)
    except ApiError:
        pulls = pulls_of(request)
        steps = _pulled(pulls, checked(pulls, name))
    else:
        steps = each_step(served_steps(runtime, label))
    if data.stream is False:
        last = await until_disconnect(request, _last(steps))
        return PullStatus(status=last["status"])
    return await stream_response(request, ndjson_lines(steps), NDJSON)


async def _last(steps: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    last: dict[str, Any] = {}
    async for step in steps:
        last = step
    return last


async def _pulled(pulls, name: str) -> AsyncIterator[dict[str, Any]]:
    async for step in pulls.follow(name):
        out = step.to_dict()
        out.pop("file", None)  # Hoshikage's own; Ollama's objects have no such key
        yield out


class DeleteRequest(Struct, kw_only=True):
    """``DELETE /api/delete``: ``model`` (or the older ``name``)."""

    model: Annotated[str, Meta(max_length=1024)] | None = None
    name: Annotated[str, Meta(max_length=1024)] | None = None


@delete(
    "/delete",
    status_code=200,
    summary="Delete a pulled model (Ollama)",
    name="ollama_delete",
    operation_id="ollama_delete",
)
async def remove(request: Request, data: Annotated[DeleteRequest, Body()]) -> None:
    """Delete a pulled model and the files no other pulled model uses; it is no longer
    served. A model from the config or ``models_dir`` is refused (400): remove it there."""
    name = (data.model or data.name or "").strip()
    if not name:
        raise invalid("'model' is required.", "model")
    try:
        await remove_pulled(request, name)
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(404, f"model '{name}' not found", param="model") from None
        raise
