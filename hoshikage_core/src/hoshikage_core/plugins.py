"""Plugin manager factory and plugin loading.

Plugins come from the ``hoshikage`` entry-point group. Set ``HOSHIKAGE_LOAD_PLUGINS`` to a
comma-separated allow-list of entry-point names (empty: none) to rescue a broken install.
Set ``HOSHIKAGE_TRACE_HOOKS=1`` to print every hook call.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "hoshikage"
DEFAULT_PLUGINS = ("hoshikage_core.defaults",)


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the specs, the built-in defaults and installed plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    #: (entry-point name, error) for every plugin that failed to import; doctor shows them.
    pm.load_errors = []
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        allow = os.environ.get("HOSHIKAGE_LOAD_PLUGINS")
        wanted = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # one broken plugin must not take the CLI down
                pm.load_errors.append((ep.name, f"{ep.value}: {exc!r}"))
                sys.stderr.write(
                    f"warning: plugin '{ep.name}' ({ep.value}) failed to load: {exc!r}; "
                    "skipping it (HOSHIKAGE_LOAD_PLUGINS=name,... selects plugins)\n"
                )
                continue
            pm.register(plugin, name=ep.name)
            _remember_distribution(pm, plugin, ep)
    if os.environ.get("HOSHIKAGE_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


def _remember_distribution(pm: pluggy.PluginManager, plugin, ep) -> None:
    """Record where a plugin came from, as pluggy's own entry-point loader does."""
    try:
        from pluggy._manager import DistFacade

        if ep.dist is not None:
            pm._plugin_distinfo.append((plugin, DistFacade(ep.dist)))
    except (ImportError, AttributeError):  # pluggy internals moved: versions show "unknown"
        pass


def plugin_names(pm: pluggy.PluginManager) -> list[tuple[str, str]]:
    """(name, distribution version or "built-in") of every registered plugin."""
    versions = {id(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    return [(name, versions.get(id(plugin), "built-in")) for name, plugin in pm.list_name_plugin()]
