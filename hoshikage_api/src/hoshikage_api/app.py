"""``create_app(runtime)``: the Litestar app. Litestar is imported here, not at plugin import,
so ``hoshikage --help`` stays fast."""

from __future__ import annotations

from contextlib import asynccontextmanager


def create_app(runtime):
    """The ASGI app serving ``runtime``; its lifespan starts and stops the runtime."""
    from litestar import Litestar
    from litestar.config.cors import CORSConfig
    from litestar.datastructures import State
    from litestar.openapi import OpenAPIConfig

    from hoshikage_core import __version__

    from . import errors
    from .auth import api_key_guard
    from .events import EventSink
    from .guard import browser_guard
    from .metrics import Metrics
    from .routes import handlers

    server = runtime.config.server
    metrics = Metrics()
    sink = EventSink(metrics)

    @asynccontextmanager
    async def lifespan(_app):
        runtime.pm.register(sink)
        await runtime.start()
        try:
            yield
        finally:
            try:
                await runtime.stop()
            finally:
                runtime.pm.unregister(sink)

    return Litestar(
        route_handlers=handlers(),
        exception_handlers={Exception: errors.handle},
        guards=[
            *([api_key_guard(server.api_key)] if server.api_key else []),
            browser_guard(server),
        ],
        cors_config=CORSConfig(allow_origins=list(server.cors_origins))
        if server.cors_origins
        else None,
        request_max_body_size=server.max_body_size,
        lifespan=[lifespan],
        state=State({"metrics": metrics, "runtime": runtime}),
        openapi_config=OpenAPIConfig(
            title="Hoshikage",
            version=__version__,
            description="A quiet local LLM server for GGUF models with OpenAI-, Anthropic- and Ollama-compatible APIs.",
        ),
        logging_config=None,
    )
