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
