"""Admin routes for the CLI: status, load, unload and reload."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import Parameter

from ..kernel.deps import ModelPath, runtime_of
from ..kernel.docs import errors
from ..kernel.job import keep_alive as parse_keep_alive

KeepAliveQuery = Annotated[
    str | None, Parameter(description="idle time after the load: seconds, 5m, -1")
]


@get("/api/status", tags=["Admin"], summary="Server and model status", responses=errors(401))
async def status(request: Request) -> dict[str, Any]:
    """Each model's state, aliases, memory, last use and unload time, in-flight and queued
    requests, plus the server's uptime and version."""
    return runtime_of(request).status()


@post(
    "/api/models/{name:str}/load",
    status_code=200,
    tags=["Admin"],
    summary="Load a model",
    responses=errors(401, 404, 500, 503),
)
async def load(
    name: ModelPath, request: Request, keep_alive: KeepAliveQuery = None
) -> dict[str, Any]:
    """Load ``name`` now (through the queue, like a request). ``keep_alive`` (query) sets
    how long it then stays loaded while idle."""
    runtime = runtime_of(request)
    seconds = await runtime.load(name, keep_alive=parse_keep_alive(keep_alive))
    entry = runtime.resolve(name)
    return {"name": entry.name, "state": runtime.pool.state(entry.name), "load_seconds": seconds}


@post(
    "/api/models/{name:str}/unload",
    status_code=200,
    tags=["Admin"],
    summary="Unload a model",
    responses=errors(401, 404),
)
async def unload(name: ModelPath, request: Request) -> dict[str, Any]:
    """``result`` is ``unloaded``, ``scheduled`` (when its requests end) or ``not_loaded``."""
    runtime = runtime_of(request)
    result = await runtime.unload(name)
    entry = runtime.resolve(name)
    return {"name": entry.name, "result": result, "state": runtime.pool.state(entry.name)}


@post(
    "/api/reload",
    status_code=200,
    tags=["Admin"],
    summary="Reload the config",
    responses=errors(400, 401),
)
async def reload(request: Request) -> dict[str, Any]:
    """Re-read the config file and rescan ``models_dir``, without a restart and without
    dropping a request: models ``added`` can be used at once, ``removed`` ones answer 404 at
    once and unload when their requests end, ``changed`` ones load again with their new
    options when idle. ``needs_restart`` lists the ``[server]`` keys whose new value waits
    for a restart. A config with errors is refused as a whole: 400 ``config_error`` with
    every error in ``problems``, and the running config stays."""
    result = await runtime_of(request).reload()
    return result.to_dict()
