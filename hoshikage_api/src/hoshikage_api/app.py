"""``create_app(runtime)``: the Litestar app, composed of the surfaces' routers. Litestar is
imported here, not at plugin import, so ``hoshikage --help`` stays fast."""

from __future__ import annotations

from contextlib import asynccontextmanager


def create_app(runtime):
    """The ASGI app serving ``runtime``; its lifespan starts and stops the runtime."""
    from litestar.config.cors import CORSConfig
    from litestar.datastructures import State
    from litestar.openapi import OpenAPIConfig

    from hoshikage_core import __version__

    from . import anthropic, decisions, llamaserver, ollama, openai, rerank, responses, server
    from .auth import api_key_guard
    from .events import EventSink
    from .guard import browser_guard
    from .kernel import errors
    from .metrics import Metrics

    surfaces = (anthropic, ollama, responses, openai, decisions, rerank, llamaserver, server)
    routers = [surface.router() for surface in surfaces]
    settings = runtime.config.server
    metrics = Metrics()
    sink = EventSink(metrics)

    @asynccontextmanager
    async def lifespan(app):
        runtime.pm.register(sink)
        await runtime.start()
        try:
            yield
        finally:
            try:
                pulls = getattr(app.state, "pulls", None)
                if pulls is not None:  # downloads stop at their next chunk, partial kept
                    pulls.stop()
                await runtime.stop()
            finally:
                runtime.pm.unregister(sink)

    return _app_class()(
        route_handlers=routers,
        exception_handlers={Exception: errors.app_handler(unmatched(routers))},
        guards=[
            *([api_key_guard(settings.api_key)] if settings.api_key else []),
            browser_guard(settings),
        ],
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins))
        if settings.cors_origins
        else None,
        request_max_body_size=settings.max_body_size,
        lifespan=[lifespan],
        state=State({"metrics": metrics, "runtime": runtime}),
        openapi_config=OpenAPIConfig(
            title="Hoshikage",
            version=__version__,
            description="A quiet local LLM server for GGUF models with OpenAI-, Anthropic- and Ollama-compatible APIs.",
        ),
        logging_config=None,
    )


def _app_class():
    """Litestar without its pydantic plugins. No route here takes or returns a pydantic
    model (the schemas are msgspec Structs), but Litestar imports pydantic whenever it is
    installed (beside the openai and anthropic clients, say), which holds about 8 MB of a
    quiet server's resident memory for nothing (49 MB at startup instead of 57).
    Checked by tests/api/test_server_routes.py."""
    from litestar import Litestar

    class App(Litestar):
        @staticmethod
        def _get_default_plugins(plugins):
            from litestar.plugins.attrs import AttrsSchemaPlugin
            from litestar.plugins.core import MsgspecDIPlugin

            plugins.append(MsgspecDIPlugin())
            if not any(isinstance(plugin, AttrsSchemaPlugin) for plugin in plugins):
                plugins.append(AttrsSchemaPlugin())
            return plugins

    return App


def unmatched(routers) -> list[tuple[str, object]]:
    """The unmatched-URL table: ``(path prefix, exception handler)`` of each surface whose
    router has a path of its own (``/v1/messages``, ``/api``), so a URL under it that
    matches no route or method keeps that surface's error shape."""
    from litestar.types import Empty

    table = []
    for router in routers:
        handler = (router.exception_handlers or {}).get(Exception, Empty)
        if router.path != "/" and handler is not Empty:
            table.append((router.path, handler))
    return table
