"""Every hook Hoshikage calls, in one place. Each spec is a docstring only.

Plugins implement them with ``@hoshikage_core.hookimpl`` and register through the
``hoshikage`` entry-point group. ``docs/plugin-hooks.md`` documents each one, and a test
fails when a spec here is missing from it.
"""

from __future__ import annotations

import pluggy

PROJECT = "hoshikage"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_models(register, config):
    """Contribute model entries by calling ``register(ModelEntry(...))``.

    ``config`` is the loaded :class:`~hoshikage_core.config.Config`. Models from the config
    file (its ``[[models]]``, then its ``models_dir`` folders) are registered before any
    plugin's. A name or alias registered twice is an error. Called again with the new config
    on every config reload, into a fresh registry.
    """


@hookspec(firstresult=True)
def backend_options(backend):
    """Return the attrs class that holds the options of backend ``backend``, or None.

    The core structures each model's extra config keys into it with cattrs, forbidding
    unknown keys, so ``hoshikage config check`` reports ``models[0].n_ctxx`` by name.
    """


@hookspec(firstresult=True)
def create_backend(entry, config):
    """Load ``entry`` (a :class:`~hoshikage_core.registry.ModelEntry`) and return a
    :class:`~hoshikage_core.protocol.LoadedModel`, or None if ``entry.backend`` is not yours.

    Called in a worker thread. Raise :class:`~hoshikage_core.errors.ModelLoadError` with the
    path and the reason when the model cannot be loaded. To show the load's progress, call
    :func:`hoshikage_core.load_progress.reporter` on that thread and, if it returns a
    function, call it with the share loaded (0.0 to 1.0).
    """


@hookspec(firstresult=True)
def cached_prompts(entry, config):
    """Return how many prompt prefixes your backend keeps on disk for ``entry`` (states an
    earlier load left, which the next load can restore), or None if ``entry.backend`` is
    not yours. Called for every model, loaded or not, on a worker thread at most once a
    second while status is asked for (the status shows the last count): it may touch the
    disk, but keep it cheap.
    """


@hookspec(firstresult=True)
def create_scheduler(config, pool):
    """Return the scheduler that admits requests: a
    :class:`~hoshikage_core.protocol.Scheduler` (``acquire(model, sequences)``,
    ``release(lease)``, ``wake()``, ``reconfigure(config)``, ``snapshot()``).

    ``pool`` is the :class:`~hoshikage_core.pool.ModelPool`: its ``capacity``,
    ``is_resident``, ``can_admit`` and ``reserve`` are what a scheduler asks and tells.
    The built-in :class:`~hoshikage_core.scheduler.FairScheduler` is ``trylast``.
    """


@hookspec(firstresult=True)
def choose_unload(state, now, config):
    """Return the names of the models to unload now, as a list (empty: none).

    ``state`` is a :class:`~hoshikage_core.protocol.PoolState`: every model's status plus
    ``incoming``, the model about to load, if any, that needs room. ``now`` is
    ``time.monotonic()``. Models that are loading or in use are never unloaded, whatever
    this returns. The built-in policy (``trylast``) unloads models past their keep-alive and
    makes room for ``incoming`` by evicting the least recently used idle models.
    """


@hookspec
def model_loaded(name, seconds, memory_bytes):
    """A model finished loading in ``seconds`` and holds ``memory_bytes``."""


@hookspec
def model_unloaded(name, reason, seconds):
    """A model was unloaded; ``reason`` is ``idle``, ``evicted``, ``request``, ``reload``
    (a config reload changed it), ``removed`` (a config reload removed it), ``shutdown`` or
    ``failed`` (it stopped working on its own, see the pool). ``seconds`` is how long the
    unload took."""


@hookspec
def model_load_failed(name, error):
    """A model failed to load; ``error`` is the exception (usually ModelLoadError)."""


@hookspec
def request_finished(record):
    """A request left the server. ``record`` is a
    :class:`~hoshikage_core.runtime.RequestRecord`: model, endpoint, status, token counts,
    time to first token and duration. Called once per request, never per token."""


@hookspec
def register_commands(cli):
    """Add CLI subcommands with ``cli.add(name, help=..., setup=..., run=...)``.

    See :class:`~hoshikage_core.cli.Commands`.
    """


@hookspec(firstresult=True)
def create_app(runtime):
    """Return the ASGI app serving ``runtime`` (a :class:`~hoshikage_core.runtime.Runtime`)."""


@hookspec
def doctor_checks(config):
    """Return a list of :class:`~hoshikage_core.doctor.Check` for ``hoshikage doctor``:
    facts about this plugin's environment (GPU offload, libraries found, ...)."""
