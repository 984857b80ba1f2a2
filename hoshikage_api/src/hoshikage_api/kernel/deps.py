"""What handlers need besides their body: the runtime, and annotated parameters."""

from __future__ import annotations

from typing import Annotated

from hoshikage_core.runtime import Runtime
from litestar import Request
from litestar.params import Parameter

#: A model name in the URL path.
ModelPath = Annotated[str, Parameter(description="a model name or alias")]


def runtime_of(request: Request) -> Runtime:
    """The runtime the app serves (set by ``create_app``)."""
    return request.app.state.runtime


def context_length(runtime: Runtime, entry) -> int | None:
    """The context window a request to ``entry`` gets, in tokens: the loaded model's, else
    what it will get once loaded (:meth:`~hoshikage_core.registry.ModelEntry.context_window`).
    Each surface advertises it where its API has a place for it."""
    try:
        loaded = runtime.pool.view(entry.name).n_ctx
    except KeyError:
        loaded = None
    if isinstance(loaded, int | float) and loaded > 0:
        return int(loaded)
    return entry.context_window()
