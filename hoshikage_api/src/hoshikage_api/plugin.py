"""The ``api`` plugin of the ``hoshikage`` entry-point group.

Importing it costs nothing: Litestar and uvicorn are imported only when an app is created or
``hoshikage serve`` runs. The event hooks (metrics, serve log) live on a per-app object
registered by :func:`hoshikage_api.app.create_app`.
"""

from __future__ import annotations

from hoshikage_core.hookspecs import hookimpl


@hookimpl
def create_app(runtime):
    from .app import create_app as build

    return build(runtime)


@hookimpl
def register_commands(cli):
    from .serve import register

    register(cli)
