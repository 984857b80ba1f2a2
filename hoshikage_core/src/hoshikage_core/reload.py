"""Config reload without restart: ``hoshikage reload``, ``POST /api/reload`` and SIGHUP all
call :meth:`Runtime.reload <hoshikage_core.runtime.Runtime.reload>`.

A reload re-reads the config file, rescans ``models_dir`` and runs every
``register_models`` implementation again (so plugins contribute as at start). Then:

- **all or nothing**: a config with errors (or a ``models_dir`` folder that is gone, or a
  name registered twice) is refused as a whole with every problem listed
  (:class:`~hoshikage_core.errors.ConfigError`), and the running config stays;
- **added** models can be used at once;
- **removed** models answer 404 to new requests at once; the requests they hold (and those
  already queued for them) finish, then they unload (``/api/status`` shows them as
  ``draining`` until then);
- **changed** models (path, backend or backend options; or every model when
  ``[server].max_tokens``, which the backends read, changed) finish the requests they hold,
  admit no new one meanwhile, unload, and load again at once with the new options (a changed
  model that was not loaded simply uses them at its next load). A change of aliases or
  ``idle_ttl`` alone applies at once and reloads nothing;
- ``[server]`` ``concurrency``, ``max_queue``, ``affinity_wait``, ``max_tokens``,
  ``shutdown_grace`` and ``responses_store`` and all of ``[unload]`` apply at once; :data:`RESTART_KEYS` (the socket
  and the HTTP app are built once) keep their running values until a restart, and the
  answer lists those that differ under ``needs_restart``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import attrs

from .catalog import build_registry
from .errors import Cancelled, ConfigError
from .pool import same_model

log = logging.getLogger("hoshikage.reload")

#: ``[server]`` keys a reload cannot change: the listening socket (host, port) and what the
#: HTTP app and its connections were built with. ``url`` is the CLI's.
RESTART_KEYS = (
    "host",
    "port",
    "api_key",
    "cors_origins",
    "allowed_hosts",
    "max_body_size",
    "send_timeout",
    "send_buffer",
    "header_timeout",
    "body_timeout",
    "max_connections",
)


@attrs.frozen(kw_only=True)
class ReloadResult:
    """What ``POST /api/reload`` answers and ``hoshikage reload`` prints."""

    #: The config file read, or None for built-in defaults.
    source: str | None
    added: list[str]
    removed: list[str]
    #: Models that load again with their new options when idle.
    changed: list[str]
    #: ``server.port``...: keys whose new value waits for a restart.
    needs_restart: list[str]
    #: What ``models_dir`` discovery did (renamed or overridden files).
    notes: list[str]
    #: Every model now registered.
    models: list[str]

    def to_dict(self) -> dict:
        return attrs.asdict(self)


def read(load_config, pm):
    """The new config and registry, or ConfigError with every problem (blocking: files)."""
    config = load_config()
    return config, build_registry(config, pm)


async def reload(runtime) -> ReloadResult:
    """Read, check and apply the config (see the module docstring); ConfigError, with every
    problem, leaves the running config as it was."""
    started = time.monotonic()
    if runtime.closing:
        raise Cancelled("The server is shutting down.")
    try:
        config, registry = await asyncio.to_thread(read, runtime.load_config, runtime.pm)
    except ConfigError as exc:
        log.error("reload refused, the running config stays: %s", exc)
        raise
    if runtime.closing:  # it began shutting down while the file was read
        raise Cancelled("The server is shutting down.")
    return apply(runtime, config, registry, started)


async def refresh(runtime) -> ReloadResult:
    """The running config's models again, without re-reading the file: a model pulled into
    the store (or removed from it) is served (or gone) at once. The same rules as a reload
    for what is added, removed or changed."""
    if runtime.closing:
        raise Cancelled("The server is shutting down.")
    registry = await asyncio.to_thread(build_registry, runtime.config, runtime.pm)
    return apply(runtime, runtime.config, registry, time.monotonic())


def apply(runtime, config, registry, started: float) -> ReloadResult:
    """Switch ``runtime`` to ``config`` and ``registry`` in one synchronous step."""
    old = runtime.config
    needs_restart = [
        f"server.{k}" for k in RESTART_KEYS if getattr(config.server, k) != getattr(old.server, k)
    ]
    kept = {
        k.removeprefix("server."): getattr(old.server, k.removeprefix("server."))
        for k in needs_restart
    }
    config = attrs.evolve(config, server=attrs.evolve(config.server, **kept))

    before = {entry.name: entry for entry in runtime.registry}
    after = {entry.name: entry for entry in registry}
    reload_all = config.server.max_tokens != old.server.max_tokens
    added = [name for name in after if name not in before]
    removed = [name for name in before if name not in after]
    changed = [
        name
        for name in after
        if name in before and (reload_all or not same_model(before[name], after[name]))
    ]

    # Applied in one synchronous step on the event loop: no request sees half of it.
    runtime.config = config
    runtime.registry = registry
    runtime.pool.reconfigure(config, registry, reload_all=reload_all)
    runtime.scheduler.reconfigure(config)
    for name in added:
        if after[name].preload:
            runtime.preload(name)

    result = ReloadResult(
        source=str(config.source) if config.source else None,
        added=added,
        removed=removed,
        changed=changed,
        needs_restart=needs_restart,
        notes=list(registry.notes),
        models=list(after),
    )
    log.info(
        "reloaded %s in %.2fs: %d model(s); added %s; removed %s; changed %s",
        config.source or "built-in defaults",
        time.monotonic() - started,
        len(after),
        ", ".join(added) or "none",
        ", ".join(removed) or "none",
        ", ".join(changed) or "none",
    )
    if needs_restart:
        log.warning("these changes need a restart: %s", ", ".join(needs_restart))
    for note in registry.notes:
        log.info("models_dir: %s", note)
    return result
