"""``hoshikage serve``: run the app on uvicorn.

SIGTERM (or Ctrl-C) stops accepting connections, gives in-flight requests
``server.shutdown_grace`` seconds, cancels the rest, unloads every model and exits.
"""

from __future__ import annotations

import argparse
import logging


def register(cli) -> None:
    cli.add(
        "serve",
        help="run the OpenAI-compatible HTTP server",
        setup=_setup,
        run=serve,
    )


def _setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: the config's, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default: the config's, 8000)")


def _configure_logging(debug: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, rich_tracebacks=debug, markup=False, log_time_format="%H:%M:%S")
    for name in ("hoshikage", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
        logger.propagate = False


def serve(args: argparse.Namespace, ctx) -> int:
    import attrs
    from hoshikage_core.runtime import Runtime

    config = ctx.config
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        config = attrs.evolve(config, server=attrs.evolve(config.server, **overrides))
    _configure_logging(ctx.debug)
    app = ctx.pm.hook.create_app(runtime=Runtime(config, ctx.pm))

    import uvicorn

    server = config.server
    log = logging.getLogger("hoshikage.api")
    where = config.source or "built-in defaults"
    log.info("serving %d model(s) from %s on %s", len(app.state.runtime.registry), where, server.base_url)
    log.info("web page: %s/ui/", server.base_url)
    uv_config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
    )
    _drain_first(uvicorn.Server)(uv_config, app.state.runtime).run()
    return 0


def _drain_first(base):
    """A uvicorn server that, on shutdown, stops listening and lets the runtime drain
    (``shutdown_grace``, then cancel, then unload) *before* uvicorn closes connections, so
    an in-flight stream ends with a clean error event instead of a cut connection."""

    class DrainingServer(base):
        def __init__(self, config, runtime):
            super().__init__(config)
            self.runtime = runtime

        async def shutdown(self, sockets=None):
            for listener in self.servers:
                listener.close()
            await self.runtime.stop()
            await super().shutdown(sockets)

    return DrainingServer
