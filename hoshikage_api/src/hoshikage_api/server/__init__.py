"""Hoshikage's own routes, no API surface's: admin (for the CLI), health, metrics and the
web page. They import the kernel only, and their errors have the default shape."""

from __future__ import annotations


def router():
    """Hoshikage's own routes, with the default error shape."""
    from litestar import Router

    from ..kernel import errors
    from . import admin, health, metrics, pulls, web

    return Router(
        "/",
        route_handlers=[
            health.health,
            metrics.metrics,
            admin.status,
            admin.load,
            admin.unload,
            admin.reload,
            pulls.pull,
            pulls.cancel,
            pulls.plan,
            pulls.remove,
            web.root,
            web.page,
            web.page_file,
        ],
        exception_handlers={Exception: errors.handle},
    )
