"""The catalog: every model the server offers, composed from the config's ``[[models]]``,
its ``models_dir`` folders (:mod:`hoshikage_core.discovery`), the pulled models
(:mod:`hoshikage_core.pull.store`) and the ``register_models`` hook into one
:class:`~hoshikage_core.registry.ModelRegistry`.

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
    _add_pulled(registry, config, pm)

    def register(entry: ModelEntry) -> None:
        if isinstance(entry.options, dict):
            options = structure_options(pm, entry.backend, entry.options, entry.name)
            entry = attrs.evolve(entry, options=options)
        registry.register(entry)

    pm.hook.register_models(register=register, config=config)
    return registry


def _add_pulled(registry: ModelRegistry, config, pm) -> None:
    """The store's pulled models, after the config's (a name the config took is left out,
    with a note; so is a record whose options its backend refuses)."""
    from .pull import store

    taken = {label: f"'{registry.resolve(label).name}'" for label in registry.names()}
    entries, notes = store.entries(store.root_of(config), taken)
    registry.notes.extend(notes)
    for entry in entries:
        try:
            options = structure_options(pm, entry.backend, entry.options, entry.name)
        except ConfigError as exc:
            registry.notes.append(f"pulled model '{entry.name}' left out: {exc}")
            continue
        registry.register(attrs.evolve(entry, options=options))
