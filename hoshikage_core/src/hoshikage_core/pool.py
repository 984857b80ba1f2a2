"""The model pool: each registered model's state, single-flight loading, and unloading.

States: unloaded → loading → loaded (busy while in use) → unloading → unloaded.

Invariants, tested in ``tests/core``:
- N concurrent requests for an unloaded model load it once;
- a model that is loading or in use is never unloaded;
- a failed load leaves the model ``unloaded`` with ``last_error`` set, never ``loading``;
- a loaded model that fails on its own (a backend offering ``on_failure``, e.g. a model in a
  child process that died) is unloaded at once with ``last_error`` set, even while in use:
  its requests have already ended with the error, and the next request loads it again.

A config reload (:meth:`ModelPool.reconfigure`) never drops a request either:
- a model whose entry changed in a way that needs a new load (path, backend, options) keeps
  serving the requests it holds and admits no new one; once idle it unloads, takes its new
  entry and loads again with the new options (for the requests queued meanwhile, and
  because it was loaded); a changed model that was not loaded just takes its new entry;
- a removed model keeps its slot until the requests it holds (and those already queued for
  it) have ended, then unloads and its slot goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import load_progress
from .errors import BackendNotFound, HoshikageError, ModelLoadError
from .protocol import LoadedModel
from .registry import ModelEntry, ModelRegistry
from .unload import BUSY, LOADED, LOADING, UNLOADED, UNLOADING, ModelStatus, PoolState

log = logging.getLogger("hoshikage.pool")


class _Slot:
    __slots__ = (
        "entry",
        "state",
        "model",
        "in_use",
        "last_used",
        "keep_alive",
        "expires_at",
        "memory_bytes",
        "loaded_at",
        "load_seconds",
        "load_task",
        "unload_task",
        "last_error",
        "requests",
        "last_tps",
        "unload_requested",
        "pending",
        "retired",
        "load_progress",
    )

    def __init__(self, entry: ModelEntry):
        self.entry = entry
        self.state = UNLOADED
        self.model: LoadedModel | None = None
        self.in_use = 0
        self.last_used: float | None = None
        self.keep_alive: float | None = None
        self.expires_at: float | None = None
        self.memory_bytes = 0
        self.loaded_at: float | None = None
        self.load_seconds: float | None = None
        self.load_task: asyncio.Task | None = None
        self.unload_task: asyncio.Task | None = None
        self.last_error: str | None = None
        self.requests = 0
        self.last_tps: float | None = None
        #: An admin unload arrived while busy: unload as soon as it is idle.
        self.unload_requested = False
        #: A reload changed the entry: the one to load next, once this instance is idle.
        self.pending: ModelEntry | None = None
        #: A reload removed the model: the slot goes once its requests have ended.
        self.retired = False
        #: While it loads: the share loaded (0.0 to 1.0), when its backend tells.
        self.load_progress: float | None = None

    @property
    def public_state(self) -> str:
        return BUSY if self.state == LOADED and self.in_use else self.state


class ModelPool:
    def __init__(self, config, registry: ModelRegistry, pm):
        self.config = config
        self.registry = registry
        self.pm = pm
        self._slots = {entry.name: _Slot(entry) for entry in registry}
        self._listeners: list[Callable[[], None]] = []
        self._failure_listeners: list[Callable[[str, BaseException], None]] = []
        self._wake = asyncio.Event()
        #: Set by the runtime: name -> number of queued requests.
        self.queued_counts: Callable[[], dict[str, int]] = dict
        #: Unloads started by a reload (kept so they are not garbage-collected mid-way).
        self._tasks: set[asyncio.Task] = set()
        #: Set by the runtime: load ``name`` again in the background, through the scheduler
        #: (a loaded model that a reload changed has unloaded to take its new options).
        self.load_again: Callable[[str], None] = lambda _name: None

    # ---- observation -------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a model's state or use changes."""
        self._listeners.append(listener)

    def subscribe_load_failures(self, listener: Callable[[str, BaseException], None]) -> None:
        """Call ``listener(name, error)`` when a load fails, before anything else runs."""
        self._failure_listeners.append(listener)

    def _changed(self) -> None:
        self._wake.set()
        for listener in self._listeners:
            listener()

    def slot(self, name: str) -> _Slot:
        return self._slots[name]

    def state(self, name: str) -> str:
        return self._slots[name].public_state

    def snapshot(self, incoming: str | None = None) -> PoolState:
        queued = self.queued_counts()
        models = tuple(
            ModelStatus(
                name=name,
                state=slot.public_state,
                in_use=slot.in_use,
                queued=queued.get(name, 0),
                last_used=slot.last_used,
                expires_at=slot.expires_at if slot.state == LOADED and not slot.in_use else None,
                memory_bytes=slot.memory_bytes,
            )
            for name, slot in self._slots.items()
        )
        incoming_bytes = 0
        if incoming is not None:
            incoming_bytes = self._slots[incoming].entry.file_size() or 0
        return PoolState(
            models=models,
            incoming=incoming,
            incoming_bytes=incoming_bytes,
            max_loaded=self.config.unload.max_loaded,
            max_memory=self.config.unload.max_memory,
        )

    # ---- admission (called synchronously by the scheduler) -----------------------------

    def capacity(self, name: str) -> int | None:
        """Sequences the loaded model decodes at once; None while it is not loaded."""
        model = self._slots[name].model
        return None if model is None else max(1, int(model.capacity))

    def is_resident(self, name: str) -> bool:
        """Loaded or loading: a request for it needs no swap."""
        return self._slots[name].state in (LOADING, LOADED)

    def can_admit(self, name: str) -> bool:
        """Whether a request for ``name`` can start now without evicting a busy model."""
        slot = self._slots[name]
        if slot.pending is not None:  # the old instance drains first, then the new one loads
            return False
        if slot.state in (LOADING, LOADED) or slot.in_use:
            return True
        if slot.state == UNLOADING:
            return False
        others = [
            s for s in self._slots.values() if s is not slot and (s.state != UNLOADED or s.in_use)
        ]
        evictable = [s for s in others if s.state == LOADED and not s.in_use]
        max_loaded = self.config.unload.max_loaded
        if len(others) - len(evictable) + 1 > max_loaded:
            return False
        budget = self.config.unload.max_memory
        if budget is not None:
            pinned = sum(
                s.memory_bytes or s.entry.file_size() or 0 for s in others if s not in evictable
            )
            if pinned and pinned + (slot.entry.file_size() or 0) > budget:
                return False
        return True

    def reserve(self, name: str) -> None:
        slot = self._slots[name]
        slot.in_use += 1
        slot.expires_at = None

    def release(self, name: str, keep_alive: float | None = None) -> None:
        """A request is done with ``name``; ``keep_alive`` (seconds, -1 never) overrides the
        model's idle TTL for the idle period that follows."""
        slot = self._slots[name]
        slot.in_use -= 1
        assert slot.in_use >= 0, f"release without reserve for {name}"
        slot.last_used = time.monotonic()
        slot.keep_alive = keep_alive
        if slot.in_use == 0:
            ttl = self.ttl(slot)
            slot.expires_at = None if ttl < 0 else slot.last_used + ttl
            self._settle(slot)
        self._changed()

    def ttl(self, slot: _Slot) -> float:
        """The idle time ``slot``'s model gets once its requests end (seconds; -1: never)."""
        if slot.unload_requested:
            return 0.0
        if slot.keep_alive is not None:
            return slot.keep_alive
        if slot.entry.idle_ttl is not None:
            return slot.entry.idle_ttl
        return self.config.unload.idle_ttl

    # ---- loading -----------------------------------------------------------------------

    async def ensure_loaded(self, name: str) -> LoadedModel:
        """The loaded model, loading it first if needed. Concurrent callers share one load."""
        slot = self._slots[name]
        while True:
            if slot.state == LOADED:
                assert slot.model is not None
                return slot.model
            if slot.state == UNLOADING and slot.unload_task is not None:
                await asyncio.shield(slot.unload_task)
                continue
            if slot.state == UNLOADED:
                slot.state = LOADING
                slot.load_task = asyncio.create_task(self._load(slot), name=f"load:{name}")
                self._changed()
            assert slot.load_task is not None
            return await asyncio.shield(slot.load_task)

    async def _load(self, slot: _Slot) -> LoadedModel:
        name = slot.entry.name
        started = time.monotonic()
        try:
            await self._make_room(name)
            slot.load_progress = None
            model = await asyncio.to_thread(self._create, slot.entry, slot)
        except BaseException as exc:
            slot.state = UNLOADED
            slot.load_task = None
            slot.load_progress = None
            error = exc if isinstance(exc, HoshikageError) else ModelLoadError(name, repr(exc))
            slot.last_error = str(error)
            log.warning("%s", error)
            self.pm.hook.model_load_failed(name=name, error=error)
            for listener in self._failure_listeners:
                listener(name, error)
            self._changed()
            if isinstance(exc, Exception) and error is not exc:
                raise error from exc
            raise
        slot.model = model
        slot.state = LOADED
        slot.load_task = None
        slot.load_progress = None
        slot.last_error = None
        watch = getattr(model, "on_failure", None)
        if callable(watch):
            loop = asyncio.get_running_loop()
            watch(lambda error: loop.call_soon_threadsafe(self._failed, slot, model, error))
        slot.loaded_at = time.monotonic()
        slot.load_seconds = slot.loaded_at - started
        try:
            slot.memory_bytes = int(model.memory_bytes())
        except Exception:  # a status figure must not fail a load
            slot.memory_bytes = slot.entry.file_size() or 0
        if not slot.in_use:  # preloaded or loaded by admin: starts its idle period now
            slot.last_used = slot.loaded_at
            ttl = self.ttl(slot)
            slot.expires_at = None if ttl < 0 else slot.loaded_at + ttl
        self.pm.hook.model_loaded(
            name=name, seconds=slot.load_seconds, memory_bytes=slot.memory_bytes
        )
        self._changed()
        return model

    def _create(self, entry: ModelEntry, slot: _Slot | None = None) -> LoadedModel:
        def report(fraction: float) -> None:  # on the loading thread; a float store is atomic
            if slot is not None:
                slot.load_progress = fraction

        with load_progress.reporting(report):
            model = self.pm.hook.create_backend(entry=entry, config=self.config)
        if model is None:
            raise BackendNotFound(
                f"Model '{entry.name}' needs the backend '{entry.backend}', and no installed "
                f"plugin provides it. Install it (e.g. pip install hoshikage-{entry.backend})."
            )
        return model

    async def _make_room(self, incoming: str) -> None:
        victims = self._choose(incoming)
        if victims:
            await asyncio.gather(*(self.unload(v, reason="evicted") for v in victims))

    def _choose(self, incoming: str | None) -> list[str]:
        """Ask the unload policy, then drop anything it may not touch."""
        now = time.monotonic()
        answer = self.pm.hook.choose_unload(
            state=self.snapshot(incoming), now=now, config=self.config
        )
        return [
            n
            for n in dict.fromkeys(answer or ())
            if n in self._slots
            and n != incoming
            and self._slots[n].state == LOADED
            and not self._slots[n].in_use
        ]

    # ---- unloading ---------------------------------------------------------------------

    async def unload(self, name: str, reason: str = "request") -> bool:
        """Unload ``name`` if it is loaded and idle. True if it was unloaded by this call."""
        slot = self._slots[name]
        if slot.state == UNLOADING and slot.unload_task is not None:
            await asyncio.shield(slot.unload_task)
            return False
        if slot.state != LOADED or slot.in_use:
            return False
        slot.state = UNLOADING
        slot.unload_task = asyncio.create_task(self._unload(slot, reason), name=f"unload:{name}")
        self._changed()
        await asyncio.shield(slot.unload_task)
        return True

    async def _unload(self, slot: _Slot, reason: str) -> None:
        started = time.monotonic()
        model, slot.model = slot.model, None
        try:
            if model is not None:
                await asyncio.to_thread(model.close)
        except Exception:
            log.exception("closing model %s failed", slot.entry.name)
        finally:
            del model
            slot.state = UNLOADED
            slot.unload_task = None
            slot.unload_requested = False
            slot.memory_bytes = 0
            slot.loaded_at = None
            slot.expires_at = None
            self.pm.hook.model_unloaded(
                name=slot.entry.name, reason=reason, seconds=time.monotonic() - started
            )
            changed = reason == "reload" and slot.pending is not None and not slot.retired
            self._settle(slot)
            self._changed()
            if changed:  # it was loaded: it stays loaded, now with its new options
                self.load_again(slot.entry.name)

    def _failed(self, slot: _Slot, model: LoadedModel, error: BaseException) -> None:
        """``model`` reported that it stopped working: unload it (its in-flight requests
        already ended with ``error``), keeping the error for status."""
        if slot.model is not model or slot.state != LOADED:
            return
        slot.last_error = str(error)
        log.error("%s", error)
        slot.state = UNLOADING
        slot.unload_task = asyncio.create_task(
            self._unload(slot, "failed"), name=f"unload:{slot.entry.name}"
        )
        self._changed()

    def unload_when_idle(self, name: str) -> None:
        """Make ``name`` due for unload as soon as its in-flight requests end."""
        slot = self._slots[name]
        slot.unload_requested = True
        if slot.state == LOADED and not slot.in_use:
            slot.expires_at = time.monotonic()
        self._changed()

    # ---- reload ------------------------------------------------------------------------

    def reconfigure(self, config, registry: ModelRegistry, reload_all: bool = False) -> None:
        """Take a reloaded config and registry (see the module docstring). ``reload_all``:
        the config the backends are given changed, so every loaded model loads again."""
        self.config = config
        self.registry = registry
        names = set()
        for entry in registry:
            names.add(entry.name)
            slot = self._slots.get(entry.name)
            if slot is None:
                self._slots[entry.name] = _Slot(entry)
                continue
            slot.retired = False
            if reload_all or not same_model(slot.entry, entry):
                slot.pending = entry
            else:
                slot.entry, slot.pending = entry, None  # aliases or idle_ttl: no new load needed
                if slot.state == LOADED and not slot.in_use and slot.last_used is not None:
                    ttl = self.ttl(slot)
                    slot.expires_at = None if ttl < 0 else slot.last_used + ttl
        for name, slot in self._slots.items():
            if name not in names:
                slot.retired = True
                slot.pending = None
        for slot in list(self._slots.values()):
            self._settle(slot)
        self._changed()

    def _settle(self, slot: _Slot) -> None:
        """Carry out a reload's change to ``slot`` once nothing holds it: unload the old
        instance, then take the new entry (changed) or drop the slot (removed)."""
        if slot.pending is None and not slot.retired:
            return
        if slot.state in (LOADING, UNLOADING):
            return  # the end of the load's requests (or of the unload) settles it
        if slot.state == UNLOADED and slot.pending is not None:
            slot.entry, slot.pending = slot.pending, None  # no instance to drain
            slot.last_error = None
            return
        if slot.in_use:
            return  # the end of the last request settles it
        name = slot.entry.name
        if slot.retired and self.queued_counts().get(name):
            return  # requests queued before the reload are still served
        if slot.state == LOADED:
            task = asyncio.get_running_loop().create_task(
                self.unload(name, reason="removed" if slot.retired else "reload"),
                name=f"unload:{name}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if self._slots.get(name) is slot:  # retired, unloaded and unused: it goes
            del self._slots[name]

    async def run_reaper(self) -> None:
        """Unload models as the policy says, sleeping until the next keep-alive expires."""
        while True:
            self._wake.clear()
            for slot in list(self._slots.values()):
                self._settle(slot)  # a removed model whose queued requests went away
            for victim in self._choose(None):
                await self.unload(victim, reason="idle")
            now = time.monotonic()
            future = [
                s.expires_at
                for s in self._slots.values()
                if s.state == LOADED
                and not s.in_use
                and s.expires_at is not None
                and s.expires_at > now
            ]
            timeout = min(future) - now if future else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def unload_all(self, reason: str = "shutdown") -> None:
        for slot in list(self._slots.values()):
            if slot.load_task is not None:
                try:
                    await asyncio.shield(slot.load_task)
                except Exception:
                    pass
        await asyncio.gather(*(self.unload(name, reason=reason) for name in list(self._slots)))
        for task in list(self._tasks):
            task.cancel()


def same_model(a: ModelEntry, b: ModelEntry) -> bool:
    """Whether a loaded ``a`` serves as ``b``: same file, backend and backend options."""
    return (a.path, a.backend, a.options) == (b.path, b.backend, b.options)
