"""The model pool: each registered model's state, single-flight loading, and unloading.

States: unloaded → loading → loaded (busy while in use) → unloading → unloaded; a model
whose load failed, or that crashed, shows ``failed`` (not loaded, ``last_error`` and
``failed_at`` set) until it loads again.

Invariants, tested in ``tests/core``:
- N concurrent requests for an unloaded model load it once;
- a model that is loading or in use is never unloaded;
- a failed load leaves the model ``failed`` with ``last_error`` set, never ``loading``;
- a model that crashed twice or more in a row (its process died loading or serving, no
  request finished since) is not loaded again before a backoff (:func:`backoff`): no crash
  loop, no fork storm;
- a loaded model that fails on its own (a backend offering ``on_failure``, e.g. a model in a
  child process that died) is unloaded at once with ``last_error`` set, even while in use:
  its requests have already ended with the error, and the next request loads it again.

A config reload (:meth:`ModelPool.reconfigure`) never drops a request either:
- a model whose entry changed in a way that needs a new load (path, backend, options) keeps
  serving the requests it holds and admits no new one; once idle it unloads, takes its new
  entry and loads again with the new options (for the requests queued meanwhile, and
  because it was loaded); a changed model that was not loaded just takes its new entry;
- a removed model keeps its record until the requests it holds (and those already queued for
  it) have ended, then unloads and its record goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import attrs

from . import load_progress
from .delivery import DELIVERY_LOOP
from .errors import BackendNotFound, HoshikageError, ModelFailed, ModelLoadError
from .protocol import (
    BUSY,
    FAILED,
    LOADED,
    LOADING,
    UNLOADED,
    UNLOADING,
    EngineStats,
    LoadedModel,
    ModelStatus,
    PoolState,
    WatchesFailure,
    device_memory_of,
    pid_of,
    placement_of,
)
from .registry import ModelEntry, ModelRegistry

log = logging.getLogger("hoshikage.pool")

#: Longest wait before a model that keeps failing is loaded again (seconds).
MAX_BACKOFF = 300.0


def backoff(failures: int) -> float:
    """Seconds before a model that has crashed ``failures`` times in a row loads again: none
    after one crash (the next request tries at once), then 2, 4, 8, ... up to
    :data:`MAX_BACKOFF`."""
    return 0.0 if failures < 2 else min(MAX_BACKOFF, 2.0 ** (failures - 1))


class _Record:
    """The pool's own, mutable record of one registered model (readers get a :class:`ModelView`)."""

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
        "failed_at",
        "failures",
        "retry_at",
        "last_failure",
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
        #: A reload removed the model: the record goes once its requests have ended.
        self.retired = False
        #: While it loads: the share loaded (0.0 to 1.0), when its backend tells.
        self.load_progress: float | None = None
        #: The last failure (a failed load, a crash): when (``time.time()``), how many in a
        #: row, no load before ``retry_at`` (``time.monotonic()``), and the error.
        self.failed_at: float | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_failure: BaseException | None = None

    @property
    def public_state(self) -> str:
        if self.state == UNLOADED and self.last_error is not None:
            return FAILED
        return BUSY if self.state == LOADED and self.in_use else self.state

    def failed(self, error: BaseException) -> None:
        self.last_error = str(error)
        self.last_failure = error
        self.failed_at = time.time()
        if isinstance(error, ModelFailed) or getattr(error, "crashed", False):
            self.failures += 1  # crashes back off; a refusal (a missing file) is cheap to retry
        self.retry_at = time.monotonic() + backoff(self.failures)


@attrs.frozen(kw_only=True)
class ModelView:
    """One model as everyone outside the pool sees it: a frozen copy taken at one moment
    (``Runtime.status()``, Ollama's ``/api/ps``, the admin routes). Never blocks."""

    entry: ModelEntry
    #: ``unloaded``, ``loading``, ``loaded``, ``busy`` (loaded and in use) or ``unloading``;
    #: ``draining`` for a model a reload removed, until it has gone.
    state: str
    in_use: int
    #: Bytes held (host plus device), and of those on a GPU; 0 while not loaded.
    memory_bytes: int
    device_memory_bytes: int
    #: Bytes per backend buffer, when the backend tells (:class:`ReportsPlacement`).
    placement: Mapping[str, Mapping[str, int]] | None
    #: The engine's own counters while loaded, else None.
    engine: EngineStats | None
    #: The context window of one sequence while loaded, else None.
    n_ctx: int | None
    last_used: float | None
    #: When an idle loaded model unloads (``time.monotonic()``), None for never or not idle.
    expires_at: float | None
    #: The idle time it gets once its requests end (seconds; -1: never).
    idle_ttl: float
    requests: int
    last_tokens_per_second: float | None
    load_seconds: float | None
    last_error: str | None
    #: A reload changed it: it loads again with the new options when idle.
    reload_pending: bool
    #: While it loads: the share loaded (0.0 to 1.0), when its backend tells; else None.
    load_progress: float | None = None
    #: When it last failed (``time.time()``), and the seconds until it may load again.
    failed_at: float | None = None
    retry_in: float | None = None
    #: The id of the process it runs in, when it has one of its own (:class:`ReportsProcess`).
    pid: int | None = None

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def is_loaded(self) -> bool:
        return self.state in (LOADED, BUSY)


class ModelPool:
    def __init__(self, config, registry: ModelRegistry, pm):
        self.config = config
        self.registry = registry
        self.pm = pm
        self._records = {entry.name: _Record(entry) for entry in registry}
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

    def _record(self, name: str) -> _Record:
        return self._records[name]

    def view(self, name: str) -> ModelView:
        """A frozen copy of ``name``'s state (see :class:`ModelView`)."""
        record = self._records[name]
        model = record.model
        return ModelView(
            entry=record.entry,
            state="draining" if record.retired else record.public_state,
            in_use=record.in_use,
            memory_bytes=record.memory_bytes,
            device_memory_bytes=min(device_memory_of(model), record.memory_bytes)
            if model is not None
            else 0,
            placement=placement_of(model) if model is not None else None,
            pid=pid_of(model) if model is not None else None,
            engine=_engine_stats(model),
            n_ctx=int(model.n_ctx) if model is not None else None,
            last_used=record.last_used,
            expires_at=record.expires_at if record.state == LOADED and not record.in_use else None,
            idle_ttl=self.ttl(record),
            requests=record.requests,
            last_tokens_per_second=record.last_tps,
            load_seconds=record.load_seconds,
            last_error=record.last_error,
            reload_pending=record.pending is not None,
            load_progress=record.load_progress if record.state == LOADING else None,
            failed_at=record.failed_at if record.last_error is not None else None,
            retry_in=max(0.0, record.retry_at - time.monotonic())
            if record.state == UNLOADED and record.last_error is not None
            else None,
        )

    def names(self) -> list[str]:
        """Every model the pool holds a record of: the registered ones, and a removed one
        until its last request has ended."""
        return list(self._records)

    def loaded_model(self, name: str) -> LoadedModel | None:
        """The backend's model object while ``name`` is loaded, else None."""
        return self._records[name].model

    def count_request(self, name: str, tokens_per_second: float | None) -> None:
        """A request that read or wrote tokens ended (for status: requests, last tok/s)."""
        record = self._records[name]
        record.requests += 1
        record.failures = 0  # it works: a later failure loads again at once
        if tokens_per_second is not None:
            record.last_tps = tokens_per_second

    def is_loaded_and_idle(self, name: str) -> bool:
        record = self._records[name]
        return record.state == LOADED and not record.in_use

    def is_loading_or_busy(self, name: str) -> bool:
        record = self._records[name]
        return record.state == LOADING or bool(record.in_use)

    def draining(self) -> list[str]:
        """Models a reload removed that still serve (or hold) requests, or have not unloaded
        yet: their views say ``draining``, and ``/api/status`` lists them until they go."""
        return [name for name, record in self._records.items() if record.retired]

    def state(self, name: str) -> str:
        return self._records[name].public_state

    def snapshot(self, incoming: str | None = None) -> PoolState:
        queued = self.queued_counts()
        models = tuple(
            ModelStatus(
                name=name,
                state=record.public_state,
                in_use=record.in_use,
                queued=queued.get(name, 0),
                last_used=record.last_used,
                expires_at=record.expires_at
                if record.state == LOADED and not record.in_use
                else None,
                memory_bytes=record.memory_bytes,
            )
            for name, record in self._records.items()
        )
        incoming_bytes = 0
        if incoming is not None:
            incoming_bytes = self._records[incoming].entry.expected_bytes() or 0
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
        model = self._records[name].model
        return None if model is None else max(1, int(model.capacity))

    def is_resident(self, name: str) -> bool:
        """Loaded or loading: a request for it needs no swap."""
        return self._records[name].state in (LOADING, LOADED)

    def can_admit(self, name: str) -> bool:
        """Whether a request for ``name`` can start now without evicting a busy model."""
        record = self._records[name]
        if record.pending is not None:  # the old instance drains first, then the new one loads
            return False
        if record.state in (LOADING, LOADED) or record.in_use:
            return True
        if record.state == UNLOADING:
            return False
        others = [
            s
            for s in self._records.values()
            if s is not record and (s.state != UNLOADED or s.in_use)
        ]
        evictable = [s for s in others if s.state == LOADED and not s.in_use]
        max_loaded = self.config.unload.max_loaded
        if len(others) - len(evictable) + 1 > max_loaded:
            return False
        budget = self.config.unload.max_memory
        if budget is not None:
            pinned = sum(
                s.memory_bytes or s.entry.expected_bytes() or 0
                for s in others
                if s not in evictable
            )
            if pinned and pinned + (record.entry.expected_bytes() or 0) > budget:
                return False
        return True

    def reserve(self, name: str) -> None:
        record = self._records[name]
        record.in_use += 1
        record.expires_at = None

    def release(self, name: str, keep_alive: float | None = None) -> None:
        """A request is done with ``name``; ``keep_alive`` (seconds, -1 never) overrides the
        model's idle TTL for the idle period that follows."""
        record = self._records[name]
        record.in_use -= 1
        assert record.in_use >= 0, f"release without reserve for {name}"
        record.last_used = time.monotonic()
        record.keep_alive = keep_alive
        if record.in_use == 0:
            ttl = self.ttl(record)
            record.expires_at = None if ttl < 0 else record.last_used + ttl
            self._settle(record)
        self._changed()

    def ttl(self, record: _Record) -> float:
        """The idle time ``record``'s model gets once its requests end (seconds; -1: never)."""
        if record.unload_requested:
            return 0.0
        if record.keep_alive is not None:
            return record.keep_alive
        if record.entry.idle_ttl is not None:
            return record.entry.idle_ttl
        return self.config.unload.idle_ttl

    # ---- loading -----------------------------------------------------------------------

    async def ensure_loaded(self, name: str) -> LoadedModel:
        """The loaded model, loading it first if needed. Concurrent callers share one load."""
        record = self._records[name]
        while True:
            if record.state == LOADED:
                assert record.model is not None
                return record.model
            if record.state == UNLOADING and record.unload_task is not None:
                await asyncio.shield(record.unload_task)
                continue
            if record.state == UNLOADED:
                self._check_backoff(record)
                record.state = LOADING
                record.load_task = asyncio.create_task(self._load(record), name=f"load:{name}")
                self._changed()
            assert record.load_task is not None
            return await asyncio.shield(record.load_task)

    def _check_backoff(self, record: _Record) -> None:
        """Refuse a load of a model that keeps failing until its backoff has passed."""
        wait = record.retry_at - time.monotonic()
        if wait <= 0 or record.last_error is None:
            return
        error = record.last_failure
        reason = (
            f"{getattr(error, 'reason', None) or record.last_error} (it crashed {record.failures} "
            f"times in a row; it is tried again in {wait:.0f} s)"
        )
        if isinstance(error, ModelFailed):
            raise ModelFailed(record.entry.name, reason)
        raise ModelLoadError(record.entry.name, reason, crashed=True)

    async def _load(self, record: _Record) -> LoadedModel:
        name = record.entry.name
        started = time.monotonic()
        try:
            await self._make_room(name)
            record.load_progress = None
            # This is the load's own task: the backend, loading on a worker thread with a
            # copy of its context, reads its output on this loop (delivery.delivery_loop).
            DELIVERY_LOOP.set(asyncio.get_running_loop())
            model = await asyncio.to_thread(self._create, record.entry, record)
        except BaseException as exc:
            record.state = UNLOADED
            record.load_task = None
            record.load_progress = None
            error = exc if isinstance(exc, HoshikageError) else ModelLoadError(name, repr(exc))
            record.failed(error)
            log.warning("%s", error)
            self.pm.hook.model_load_failed(name=name, error=error)
            for listener in self._failure_listeners:
                listener(name, error)
            self._changed()
            if isinstance(exc, Exception) and error is not exc:
                raise error from exc
            raise
        record.model = model
        record.state = LOADED
        record.load_task = None
        record.load_progress = None
        record.last_error = None
        if isinstance(model, WatchesFailure):
            loop = asyncio.get_running_loop()
            model.on_failure(
                lambda error: loop.call_soon_threadsafe(self._failed, record, model, error)
            )
        record.loaded_at = time.monotonic()
        record.load_seconds = record.loaded_at - started
        try:
            record.memory_bytes = int(model.memory_bytes())
        except Exception:  # a status figure must not fail a load
            record.memory_bytes = record.entry.file_size() or 0
        if not record.in_use:  # preloaded or loaded by admin: starts its idle period now
            record.last_used = record.loaded_at
            ttl = self.ttl(record)
            record.expires_at = None if ttl < 0 else record.loaded_at + ttl
        self.pm.hook.model_loaded(
            name=name, seconds=record.load_seconds, memory_bytes=record.memory_bytes
        )
        self._changed()
        return model

    def _create(self, entry: ModelEntry, record: _Record | None = None) -> LoadedModel:
        def report(fraction: float) -> None:  # on the loading thread; a float store is atomic
            if record is not None:
                record.load_progress = fraction

        with load_progress.reporting(report):
            model = self.pm.hook.create_backend(entry=entry, config=self.config)
        if model is None:
            raise BackendNotFound(
                f"Model '{entry.name}' needs the backend '{entry.backend}', and no installed "
                f"plugin provides it. Install it (e.g. pip install hoshikage-{entry.backend})."
            )
        return model

    async def _make_room(self, incoming: str) -> None:
        # The policy's look at the incoming model's size reads its GGUF header (kept per
        # file, gguf_info.cached_info): read first on a worker thread, not on the event loop.
        await asyncio.to_thread(self._records[incoming].entry.expected_bytes)
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
            if n in self._records
            and n != incoming
            and self._records[n].state == LOADED
            and not self._records[n].in_use
        ]

    # ---- unloading ---------------------------------------------------------------------

    async def unload(self, name: str, reason: str = "request") -> bool:
        """Unload ``name`` if it is loaded and idle. True if it was unloaded by this call."""
        record = self._records[name]
        if record.state == UNLOADING and record.unload_task is not None:
            await asyncio.shield(record.unload_task)
            return False
        if record.state != LOADED or record.in_use:
            return False
        record.state = UNLOADING
        record.unload_task = asyncio.create_task(
            self._unload(record, reason), name=f"unload:{name}"
        )
        self._changed()
        await asyncio.shield(record.unload_task)
        return True

    async def _unload(self, record: _Record, reason: str) -> None:
        started = time.monotonic()
        model, record.model = record.model, None
        try:
            if model is not None:
                await asyncio.to_thread(model.close)
        except Exception:
            log.exception("closing model %s failed", record.entry.name)
        finally:
            del model
            record.state = UNLOADED
            record.unload_task = None
            record.unload_requested = False
            record.memory_bytes = 0
            record.loaded_at = None
            record.expires_at = None
            self.pm.hook.model_unloaded(
                name=record.entry.name, reason=reason, seconds=time.monotonic() - started
            )
            changed = reason == "reload" and record.pending is not None and not record.retired
            self._settle(record)
            self._changed()
            if changed:  # it was loaded: it stays loaded, now with its new options
                self.load_again(record.entry.name)

    def _failed(self, record: _Record, model: LoadedModel, error: BaseException) -> None:
        """``model`` reported that it stopped working: unload it (its in-flight requests
        already ended with ``error``), keeping the error for status."""
        if record.model is not model or record.state != LOADED:
            return
        record.failed(error)
        log.error("%s", error)
        record.state = UNLOADING
        record.unload_task = asyncio.create_task(
            self._unload(record, "failed"), name=f"unload:{record.entry.name}"
        )
        self._changed()

    def unload_when_idle(self, name: str) -> None:
        """Make ``name`` due for unload as soon as its in-flight requests end."""
        record = self._records[name]
        record.unload_requested = True
        if record.state == LOADED and not record.in_use:
            record.expires_at = time.monotonic()
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
            record = self._records.get(entry.name)
            if record is None:
                self._records[entry.name] = _Record(entry)
                continue
            record.retired = False
            if reload_all or not same_model(record.entry, entry):
                record.pending = entry
            else:
                record.entry, record.pending = (
                    entry,
                    None,
                )  # aliases or idle_ttl: no new load needed
                if record.state == LOADED and not record.in_use and record.last_used is not None:
                    ttl = self.ttl(record)
                    record.expires_at = None if ttl < 0 else record.last_used + ttl
        for name, record in self._records.items():
            if name not in names:
                record.retired = True
                record.pending = None
        for record in list(self._records.values()):
            self._settle(record)
        self._changed()

    def _settle(self, record: _Record) -> None:
        """Carry out a reload's change to ``record`` once nothing holds it: unload the old
        instance, then take the new entry (changed) or drop the record (removed)."""
        if record.pending is None and not record.retired:
            return
        if record.state in (LOADING, UNLOADING):
            return  # the end of the load's requests (or of the unload) settles it
        if record.state == UNLOADED and record.pending is not None:
            record.entry, record.pending = record.pending, None  # no instance to drain
            record.last_error = None
            return
        if record.in_use:
            return  # the end of the last request settles it
        name = record.entry.name
        if record.retired and self.queued_counts().get(name):
            return  # requests queued before the reload are still served
        if record.state == LOADED:
            task = asyncio.get_running_loop().create_task(
                self.unload(name, reason="removed" if record.retired else "reload"),
                name=f"unload:{name}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if self._records.get(name) is record:  # retired, unloaded and unused: it goes
            del self._records[name]

    async def run_reaper(self) -> None:
        """Unload models as the policy says, sleeping until the next keep-alive expires."""
        while True:
            self._wake.clear()
            for record in list(self._records.values()):
                self._settle(record)  # a removed model whose queued requests went away
            for victim in self._choose(None):
                await self.unload(victim, reason="idle")
            now = time.monotonic()
            future = [
                s.expires_at
                for s in self._records.values()
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
        for record in list(self._records.values()):
            if record.load_task is not None:
                try:
                    await asyncio.shield(record.load_task)
                except Exception:
                    pass
        await asyncio.gather(*(self.unload(name, reason=reason) for name in list(self._records)))
        for task in list(self._tasks):
            task.cancel()


def same_model(a: ModelEntry, b: ModelEntry) -> bool:
    """Whether a loaded ``a`` serves as ``b``: same file, backend and backend options."""
    return (a.path, a.backend, a.options) == (b.path, b.backend, b.options)


def _engine_stats(model: LoadedModel | None) -> EngineStats | None:
    if model is None:
        return None
    try:
        return model.stats()
    except Exception:  # a status figure must never fail the status
        return None
