"""The ``hoshikage`` command. Plugins add subcommands through ``register_commands``.

Kept light: ``hoshikage --help`` imports argparse and pluggy and the plugin modules, never a
backend or a web framework (plugins defer those imports into their commands).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import cached_property
from typing import Any

from ..errors import HoshikageError

Run = Callable[[argparse.Namespace, "Context"], "int | None"]
Setup = Callable[[argparse.ArgumentParser], None]


class Commands:
    """What ``register_commands(cli)`` receives."""

    def __init__(self, subparsers, parents: list[argparse.ArgumentParser]):
        self._subparsers = subparsers
        self._parents = parents
        self._groups: dict[str, Commands] = {}

    def add(
        self,
        name: str,
        *,
        help: str,
        run: Run,
        setup: Setup | None = None,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        """Add ``hoshikage NAME``; ``setup(parser)`` adds its arguments, ``run(args, ctx)``
        does the work and returns the exit code (None: 0)."""
        parser = self._subparsers.add_parser(
            name,
            help=help,
            description=description or help,
            parents=self._parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if setup is not None:
            setup(parser)
        parser.set_defaults(_run=run)
        return parser

    def group(self, name: str, *, help: str) -> Commands:
        """A command with subcommands, e.g. ``hoshikage config check``."""
        if name not in self._groups:
            parser = self._subparsers.add_parser(name, help=help, description=help)
            sub = parser.add_subparsers(title="commands", metavar="COMMAND")
            parser.set_defaults(_run=lambda args, ctx: parser.print_help() or 2)
            self._groups[name] = Commands(sub, self._parents)
        return self._groups[name]


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--api-key``, for commands that talk to a running server."""
    parser.add_argument(
        "--url", help="server URL (default: from the config, http://127.0.0.1:8000)"
    )
    parser.add_argument(
        "--api-key", default=None, help="API key (default: $HOSHIKAGE_API_KEY, else the config's)"
    )


class Context:
    """Shared state for a command: parsed args, plugin manager, lazily loaded config."""

    def __init__(self, args: argparse.Namespace, pm):
        self.args = args
        self.pm = pm

    @property
    def debug(self) -> bool:
        return bool(getattr(self.args, "debug", False))

    @cached_property
    def console(self):
        from rich.console import Console

        return Console()

    @cached_property
    def err(self):
        from rich.console import Console

        return Console(stderr=True)

    @cached_property
    def config(self):
        from .. import config

        return config.load(getattr(self.args, "config", None), pm=self.pm)

    def client(self):
        from .client import ServerClient

        url = getattr(self.args, "url", None) or self.config.server.base_url
        key = getattr(self.args, "api_key", None)
        if key is None:
            key = os.environ.get("HOSHIKAGE_API_KEY") or self.config.server.api_key
        return ServerClient(url, key)

    def print_json(self, data: Any) -> None:
        import json

        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def build_parser(pm) -> argparse.ArgumentParser:
    from .. import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $HOSHIKAGE_CONFIG, else ~/.config/hoshikage/config.toml)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    parser = argparse.ArgumentParser(
        prog="hoshikage",
        description="Hoshikage (星影): a quiet local LLM server with an OpenAI-compatible API.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"hoshikage {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    pm.hook.register_commands(cli=Commands(sub, [common]))
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..plugins import make_plugin_manager

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        pm = make_plugin_manager()
        parser = build_parser(pm)
        args = parser.parse_args(argv)
        run = getattr(args, "_run", None)
        if run is None:
            parser.print_help()
            return 0
        code = run(args, Context(args, pm))
        return int(code or 0)
    except HoshikageError as exc:
        if debug:
            raise
        _print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, the traceback only with --debug
        if debug:
            raise
        _print_error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}"
    )
