"""``hoshikage serve``: run the app on uvicorn.

SIGTERM (or Ctrl-C) stops accepting connections, gives in-flight requests
``server.shutdown_grace`` seconds, cancels the rest, unloads every model and exits.

SIGHUP reloads the config (as ``hoshikage reload`` and ``POST /api/reload`` do; see
:mod:`hoshikage_core.reload`) and logs what changed, or every error of a refused config.
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

    handler = RichHandler(
        show_path=False, rich_tracebacks=debug, markup=False, log_time_format="%H:%M:%S"
    )
    for name in ("hoshikage", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
        logger.propagate = False


def serve(args: argparse.Namespace, ctx) -> int:
    import attrs
    from hoshikage_core.runtime import Runtime

    from hoshikage_core import config as config_mod

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}

    def with_overrides(config):
        return (
            attrs.evolve(config, server=attrs.evolve(config.server, **overrides))
            if overrides
            else config
        )

    def load_config():  # for a reload: the same file, the same --host/--port
        return with_overrides(config_mod.load(getattr(args, "config", None), pm=ctx.pm))

    config = with_overrides(ctx.config)
    _configure_logging(ctx.debug)
    app = ctx.pm.hook.create_app(runtime=Runtime(config, ctx.pm, load_config=load_config))

    import uvicorn

    server = config.server
    log = logging.getLogger("hoshikage.api")
    where = config.source or "built-in defaults"
    log.info(
        "serving %d model(s) from %s on %s", len(app.state.runtime.registry), where, server.base_url
    )
    log.info("web page: %s/ui/", server.base_url)
    for note in app.state.runtime.registry.notes:
        log.info("models_dir: %s", note)
    from .connections import buffered_send, quiet_slow_clients, timed_protocol

    quiet_slow_clients()
    uv_config = uvicorn.Config(
        buffered_send(app, server.send_timeout, server.send_buffer),
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
        http=timed_protocol(server.header_timeout, server.body_timeout, server.send_timeout),
        limit_concurrency=server.max_connections,
    )
    _drain_first(uvicorn.Server)(uv_config, app.state.runtime).run()
    return 0


def _drain_first(base):
    """A uvicorn server that, on shutdown, stops listening and lets the runtime drain
    (``shutdown_grace``, then cancel, then unload) *before* uvicorn closes connections, so
    an in-flight stream ends with a clean error event instead of a cut connection. It also
    reloads the config on SIGHUP."""

    class DrainingServer(base):
        def __init__(self, config, runtime):
            super().__init__(config)
            self.runtime = runtime
            self._reloads: set = set()

        async def startup(self, sockets=None):
            await super().startup(sockets)
            import asyncio
            import signal

            if hasattr(signal, "SIGHUP"):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload)

        def _reload(self) -> None:
            import asyncio

            task = asyncio.get_running_loop().create_task(
                self._reload_logged(), name="hoshikage-sighup-reload"
            )
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

        async def _reload_logged(self) -> None:
            from hoshikage_core.errors import ConfigError

            log = logging.getLogger("hoshikage.reload")
            log.info("SIGHUP: reloading the config")
            try:
                await self.runtime.reload()  # it logs the outcome, or every error
            except ConfigError:
                pass
            except Exception:
                log.exception("reload failed")

        async def main_loop(self) -> None:
            """uvicorn's own loop wakes ten times a second to look at its exit flag. This one
            ticks once a second (the ``Date`` header changes no faster), and a signal wakes
            it at once (:meth:`handle_exit`): an idle server stays idle."""
            import asyncio

            self._exit_now = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            counter = 0
            while not await self.on_tick(counter):  # counter % 10 == 0: every tick is a second
                counter = (counter + 10) % 864000
                try:
                    await asyncio.wait_for(self._exit_now.wait(), 1.0)
                except TimeoutError:
                    pass

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            loop = getattr(self, "_loop", None)
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._exit_now.set)

        async def shutdown(self, sockets=None):
            for listener in self.servers:
                listener.close()
            await self.runtime.stop()
            await super().shutdown(sockets)

    return DrainingServer
