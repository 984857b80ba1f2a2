"""``GET /metrics``: Prometheus text format."""

from __future__ import annotations

from litestar import Request, get

from ..kernel.deps import runtime_of
from ..kernel.docs import errors

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@get(
    "/metrics",
    media_type=CONTENT_TYPE,
    tags=["Server"],
    summary="Prometheus metrics",
    responses=errors(401),
)
async def metrics(request: Request) -> str:
    return request.app.state.metrics.render(runtime_of(request))
