"""The unload policy: which idle models to unload now.

The built-in policy (registered ``trylast`` in :mod:`hoshikage_core.defaults`):

- a model past its keep-alive (``idle_ttl``, or the last request's ``keep_alive``) unloads;
- when a model is about to load and ``max_loaded`` or ``max_memory`` would be exceeded,
  the least recently used idle models are evicted to make room.

Whatever a policy answers, the pool never unloads a model that is loading or in use.
"""

from __future__ import annotations

from . import protocol

#: The pool's states, moved to :mod:`hoshikage_core.protocol` (the plugin contract): their
#: old names here still work for one release, with a DeprecationWarning.
_MOVED = (
    "UNLOADED",
    "LOADING",
    "LOADED",
    "BUSY",
    "UNLOADING",
    "FAILED",
    "ModelStatus",
    "PoolState",
)


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .moved import warn

    warn(f"{__name__}.{name}", f"hoshikage_core.protocol.{name}")
    return getattr(protocol, name)


def choose(state: protocol.PoolState, now: float) -> list[str]:
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
        if m.state != protocol.UNLOADED and m.name not in victims and m.name != state.incoming
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
