"""The catalog: every model the server offers, composed from the config's ``[[models]]``,
its ``models_dir`` folders (:mod:`hoshikage_core.discovery`) and the ``register_models``
hook into one :class:`~hoshikage_core.registry.ModelRegistry`.

The registry is plain data; this module is the only one that knows where entries come from,
so the registry and discovery never import each other.
"""

from __future__ import annotations

import attrs

from .config import describe, structure_options
from .discovery import discover
from .errors import ConfigError
from .registry import ModelEntry, ModelRegistry


def build_registry(config, pm) -> ModelRegistry:
    """Models from ``config`` (its ``[[models]]``, then its ``models_dir`` folders) then
    from every ``register_models`` implementation. A ``models_dir`` folder that does not
    exist raises ConfigError."""
    found = discover(config)
    if found.problems:
        raise ConfigError(describe(config.source, list(found.problems)), list(found.problems))
    registry = ModelRegistry()
    registry.notes = list(found.notes)
    for model in config.models:
        registry.register(
            ModelEntry(
                name=model.name,
                path=model.path,
                aliases=model.aliases,
                backend=model.backend,
                options=model.options,
                preload=model.preload,
                idle_ttl=model.idle_ttl,
                source=str(config.source) if config.source else "config",
            )
        )
    for entry in found.entries:
        registry.register(entry)

    def register(entry: ModelEntry) -> None:
        if isinstance(entry.options, dict):
            options = structure_options(pm, entry.backend, entry.options, entry.name)
            entry = attrs.evolve(entry, options=options)
        registry.register(entry)

    pm.hook.register_models(register=register, config=config)
    return registry
