"""The server's pulls (:class:`hoshikage_core.pull.jobs.Pulls`), made on first use and
shared by every surface that pulls (Ollama's ``/api/pull``, Hoshikage's
``/api/models/pull``, the web page). A finished pull refreshes the registry before its
``success``, so the model is served at once; :func:`remove_pulled` deletes one (Ollama's
``/api/delete``, ``DELETE /api/models/{name}``)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request

from .deps import runtime_of
from .errors import ApiError, invalid


def pulls_of(request: Request):
    state = request.app.state
    pulls = getattr(state, "pulls", None)
    if pulls is None:
        from hoshikage_core.pull.fetch import Settings
        from hoshikage_core.pull.jobs import Pulls
        from hoshikage_core.reload import refresh

        runtime = runtime_of(request)

        async def on_done(_record) -> None:
            await refresh(runtime)

        pulls = Pulls(
            lambda: Settings.of(runtime.config),
            on_done,
            concurrency=runtime.config.pull.concurrency,
        )
        state.pulls = pulls
    return pulls


def checked(pulls, reference: str, param: str = "model") -> str:
    """``reference`` when it names something to pull; a 400 saying why not otherwise."""
    from hoshikage_core.pull.refs import BadReference

    try:
        pulls.key(reference)
    except BadReference as exc:
        raise invalid(str(exc), param) from exc
    return reference


async def remove_pulled(request: Request, name: str) -> dict[str, Any]:
    from hoshikage_core.pull import store
    from hoshikage_core.reload import refresh

    runtime = runtime_of(request)
    root = store.root_of(runtime.config)
    record = await asyncio.to_thread(store.remove, root, name)
    if record is None:
        if name in runtime.registry and runtime.resolve(name).source != store.SOURCE:
            raise ApiError(
                400,
                f"'{name}' is not a pulled model: it comes from {runtime.resolve(name).source}; "
                "remove it there.",
                param="model",
                code="not_pulled",
            )
        raise ApiError(404, f"No pulled model '{name}'.", param="model", code="model_not_found")
    await refresh(runtime)
    return record
