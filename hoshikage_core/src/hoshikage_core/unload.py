"""The unload policy: which idle models to unload now.

The built-in policy (registered ``trylast`` in :mod:`hoshikage_core.defaults`):

- a model past its keep-alive (``idle_ttl``, or the last request's ``keep_alive``) unloads;
- when a model is about to load and ``max_loaded`` or ``max_memory`` would be exceeded,
  the least recently used idle models are evicted to make room.

Whatever a policy answers, the pool never unloads a model that is loading or in use.
"""

from __future__ import annotations

import attrs

#: The states a model moves through.
UNLOADED, LOADING, LOADED, BUSY, UNLOADING = "unloaded", "loading", "loaded", "busy", "unloading"
#: Not loaded because its last load failed or it crashed (``last_error`` says why); the next
#: request loads it again, after a backoff once it has failed twice in a row.
FAILED = "failed"


@attrs.frozen(kw_only=True)
class ModelStatus:
    name: str
    state: str
    #: Requests holding the model (running, or admitted and waiting for the load).
    in_use: int = 0
    #: Requests waiting in the scheduler's queue for this model.
    queued: int = 0
    #: time.monotonic() at the end of the last request, or None.
    last_used: float | None = None
    #: time.monotonic() when it becomes due for unload; None: never / not loaded / busy.
    expires_at: float | None = None
    memory_bytes: int = 0

    @property
    def idle(self) -> bool:
        return self.state == LOADED and self.in_use == 0


@attrs.frozen(kw_only=True)
class PoolState:
    models: tuple[ModelStatus, ...]
    #: The model about to load that needs room, or None for a periodic check.
    incoming: str | None = None
    #: Estimated bytes the incoming model will take (its file size).
    incoming_bytes: int = 0
    max_loaded: int = 1
    max_memory: int | None = None


def choose(state: PoolState, now: float) -> list[str]:
    """The built-in policy: expired keep-alives, then LRU eviction to make room."""
    victims = [
        m.name
        for m in state.models
        if m.idle and m.queued == 0 and m.expires_at is not None and m.expires_at <= now
    ]
    if state.incoming is None:
        return victims
    staying = [
        m
        for m in state.models
        if m.state != UNLOADED and m.name not in victims and m.name != state.incoming
    ]
    evictable = sorted((m for m in staying if m.idle), key=lambda m: m.last_used or 0.0)

    def over() -> bool:
        if len(staying) + 1 > state.max_loaded:
            return True
        if state.max_memory is not None:
            used = sum(m.memory_bytes for m in staying)
            return used + state.incoming_bytes > state.max_memory
        return False

    while evictable and over():
        victim = evictable.pop(0)
        staying.remove(victim)
        victims.append(victim.name)
    return victims
