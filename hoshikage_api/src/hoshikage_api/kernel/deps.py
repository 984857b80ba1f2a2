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
    its configured ``n_ctx`` (what it will get once loaded). Each surface advertises it where
    its API has a place for it."""
    try:
        loaded = runtime.pool.view(entry.name).n_ctx
    except KeyError:
        loaded = None
    configured = entry.option("n_ctx")
    value = loaded or configured
    return int(value) if isinstance(value, int | float) and value > 0 else None
