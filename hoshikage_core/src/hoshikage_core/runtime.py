"""The runtime: what the HTTP API talks to. It owns the registry, pool and scheduler.

One path for every request::

    async with runtime.session("gemma", endpoint="chat", keep_alive=60, sequences=n) as session:
        async for index, chunk in session.stream(request, n):   # from the model's engine
            ...

Entering the session resolves the name (ModelNotFound), waits for admission by the
scheduler (QueueFull), and ensures the model is loaded (ModelLoadError). Leaving it releases
its lease, applies the keep-alive and fires ``request_finished``. A generation whose
consumer goes away (client disconnect, task cancelled) is cancelled at the engine's next
step, and its lease is released only after the engine has really stopped using the model.
A generation cancelled by the server (shutdown) raises ``Cancelled`` with the reason.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any

import attrs

from . import __version__
from .catalog import build_registry
from .delivery import LoopSink, LoopWaker
from .errors import Cancelled, HoshikageError, InvalidRequest
from .limits import Limits, check_choices, check_request
from .pool import ModelPool, ModelView
from .protocol import (
    CancelToken,
    Chunk,
    Embeddings,
    GenerationRequest,
    LoadedModel,
    Scorer,
    ScoreRequest,
    Scores,
    TokenCounts,
)
from .registry import ModelEntry

log = logging.getLogger("hoshikage.runtime")


@attrs.define(kw_only=True)
class RequestRecord:
    """What ``request_finished`` receives, once per request."""

    model: str
    #: The name the client used (may be an alias).
    requested_as: str
    endpoint: str
    #: "ok", "cancelled", or the error code (e.g. "context_length_exceeded").
    status: str = "ok"
    error: str | None = None
    prompt_tokens: int = 0
    #: Of ``prompt_tokens``, those found in the model's KV cache.
    cached_tokens: int = 0
    completion_tokens: int = 0
    #: Speculative decoding: tokens drafted, and how many of them the model confirmed.
    draft_tokens: int = 0
    draft_accepted: int = 0
    queued_seconds: float = 0.0
    #: Seconds from the request's arrival to its first output, or None.
    ttft: float | None = None
    duration: float = 0.0

    @property
    def usage(self) -> TokenCounts:
        return TokenCounts(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
        )

    @property
    def tokens_per_second(self) -> float | None:
        """Decode rate: completion tokens after the first, over the time after the first."""
        if self.ttft is None or self.completion_tokens < 2:
            return None
        decode = self.duration - self.ttft
        return (self.completion_tokens - 1) / decode if decode > 0 else None


#: Why a generation was cancelled (its token's reason), as the error a client reads.
CANCEL_MESSAGES = {
    "shutdown": "The generation was cancelled because the server is shutting down.",
}


def cancelled_error(reason: str | None) -> Cancelled:
    return Cancelled(
        CANCEL_MESSAGES.get(reason or "", f"The generation was {reason or 'cancelled'}.")
    )


#: Threads for the backends' blocking calls (planning a request, embeddings), made on
#: demand and reused: no thread per request.
WORKER_THREADS = 8
#: Seconds between two counts of the prompt prefixes on disk (``cached_prompts``): a status
#: request shows the last count, taken on a worker thread.
PROMPT_COUNT_INTERVAL = 1.0


def _in_pool(loop: asyncio.AbstractEventLoop, pool, target: Callable[[], Any]) -> asyncio.Future:
    """Run ``target`` on the runtime's worker threads; the future resolves when it has
    really returned, even if whoever awaited it was cancelled in the meantime."""
    done = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(result)
        else:
            done.set_exception(exc)

    def run() -> None:
        try:
            result, exc = target(), None
        except BaseException as e:  # handed to the event loop, not lost
            result, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    pool.submit(run)
    return done


class Session:
    """One request's hold on one model. Use as ``async with runtime.session(...)``."""

    def __init__(
        self,
        runtime: Runtime,
        requested: str,
        endpoint: str,
        keep_alive: float | None,
        sequences: int = 1,
    ):
        self.runtime = runtime
        self.requested = requested
        self.keep_alive = keep_alive
        #: Choices decoded at once (``n``): the scheduler holds that many sequences.
        self.sequences = max(1, sequences)
        self.entry: ModelEntry | None = None
        self.model: LoadedModel | None = None
        self.record = RequestRecord(model=requested, requested_as=requested, endpoint=endpoint)
        self._arrived = time.monotonic()
        self._lease = None
        #: Futures that resolve when the backend is done with this session's work.
        self._workers: list[asyncio.Future] = []
        self._tokens: list[CancelToken] = []

    async def __aenter__(self) -> Session:
        rt = self.runtime
        self.entry = rt.resolve(self.requested)
        self.record.model = self.entry.name
        if rt.closing:
            raise Cancelled("The server is shutting down.")
        self._lease = await rt.scheduler.acquire(self.entry.name, self.sequences)
        rt.sessions_opened()
        self.record.queued_seconds = time.monotonic() - self._arrived
        try:
            self.model = await rt.pool.ensure_loaded(self.entry.name)
        except BaseException as exc:
            self._finish(exc)
            raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        pending = [w for w in self._workers if not w.done()]
        if pending:
            for token in self._tokens:
                token.cancel("request ended")
            all_done = asyncio.gather(*pending, return_exceptions=True)
            try:
                await asyncio.shield(all_done)
            except asyncio.CancelledError:
                # Release the model only once its threads have really stopped.
                all_done.add_done_callback(lambda _f: self._finish(exc))
                raise
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        rt, rec = self.runtime, self.record
        if self._lease is None or self._lease.released:
            return
        rec.duration = time.monotonic() - self._arrived
        if exc is None:
            pass
        elif isinstance(exc, (asyncio.CancelledError, Cancelled, GeneratorExit)):
            rec.status = "cancelled"
        elif isinstance(exc, HoshikageError):
            rec.status, rec.error = exc.code, str(exc)
        else:
            rec.status, rec.error = "error", repr(exc)
        if rec.completion_tokens or rec.prompt_tokens:
            rt.pool.count_request(self.entry.name, rec.tokens_per_second)
        rt.pool.release(self.entry.name, self.keep_alive)
        rt.scheduler.release(self._lease)
        rt.sessions_closed()
        rt.pm.hook.request_finished(record=rec)

    def _in_thread(self, target: Callable[[], Any]) -> asyncio.Future:
        future = self.runtime.in_thread(target)
        self._workers.append(future)
        return future

    @property
    def usage(self) -> TokenCounts:
        """The tokens this session has read and written so far: each prompt once, however
        many choices it decoded (the one count every surface reports)."""
        return self.record.usage

    async def stream(
        self, request: GenerationRequest, n: int = 1
    ) -> AsyncIterator[tuple[int, Chunk]]:
        """Stream ``n`` choices of one prompt as ``(index, chunk)``, decoded together.

        Errors found before generation are raised before the first item. If the consumer
        goes away, every choice is cancelled within a step. If the server cancels the
        generation (shutdown), :class:`Cancelled` is raised with the reason.
        """
        rt, rec, model = self.runtime, self.record, self.model
        sink = LoopSink(rt.waker)
        cancel = CancelToken()
        self._tokens.append(cancel)
        self._workers.append(sink.done)
        rt.track(cancel)

        limits = Limits.of(rt.config.server)
        check_choices(limits, n)

        def submit() -> None:
            try:
                model.generate(check_request(limits, request), cancel, sink, n)
            except BaseException as exc:
                sink.close(exc)  # nothing was started: the sink is done
                sink.flush()
                raise

        try:
            await self._in_thread(submit)
            counted_prompt = False
            async for index, chunk in sink:
                if rec.ttft is None and (chunk.text or chunk.tool_deltas or chunk.tool_calls):
                    rec.ttft = time.monotonic() - self._arrived
                if chunk.finish_reason is not None:
                    if not counted_prompt:  # one prompt, read once, however many choices
                        counted_prompt = True
                        rec.prompt_tokens += chunk.prompt_tokens or 0
                        rec.cached_tokens += chunk.cached_tokens or 0
                    rec.completion_tokens += chunk.completion_tokens or 0
                    rec.draft_tokens += chunk.draft_tokens or 0
                    rec.draft_accepted += chunk.draft_accepted or 0
                    if chunk.finish_reason == "cancelled":
                        raise cancelled_error(cancel.reason)
                yield index, chunk
        finally:
            if not sink.done.done():
                cancel.cancel("client went away")
                try:
                    await asyncio.shield(sink.done)
                except BaseException:
                    pass  # __aexit__ waits for the backend before releasing the model
            rt.untrack(cancel)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Stream one choice's chunks (see :meth:`stream`)."""
        async with aclosing(self.stream(request)) as chunks:
            async for _index, chunk in chunks:
                yield chunk

    async def score(self, request: ScoreRequest) -> Scores:
        """Score continuations after prompts (:class:`~hoshikage_core.protocol.Scorer`), in
        the model's engine beside its generations. Cancelled within a step if the caller
        goes away; counted in the record like a prompt that generated nothing."""
        rt, rec, model = self.runtime, self.record, self.model
        if not isinstance(model, Scorer):
            raise InvalidRequest(
                f"The model '{self.entry.name}' cannot score continuations (its backend has no scoring)",
                "model",
            )
        sink = LoopSink(rt.waker)
        cancel = CancelToken()
        self._tokens.append(cancel)
        self._workers.append(sink.done)
        rt.track(cancel)

        def submit() -> None:
            try:
                model.score(request, cancel, sink)
            except BaseException as exc:
                sink.close(exc)
                sink.flush()
                raise

        try:
            await self._in_thread(submit)
            result: Scores | None = None
            async for _index, item in sink:
                result = item
            if result is None:
                raise cancelled_error(cancel.reason)
            rec.prompt_tokens += result.prompt_tokens
            rec.cached_tokens += result.cached_tokens
            return result
        finally:
            if not sink.done.done():
                cancel.cancel("client went away")
                try:
                    await asyncio.shield(sink.done)
                except BaseException:
                    pass
            rt.untrack(cancel)

    async def call(self, target: Callable[[Any], Any]) -> Any:
        """``target(model)`` on a worker thread (a blocking backend call such as
        tokenizing), with the session's hold on the model."""
        model = self.model
        return await self._in_thread(lambda: target(model))

    async def embed(self, inputs: list[str]) -> Embeddings:
        result = await self._in_thread(lambda: self.model.embed(inputs))
        self.record.prompt_tokens += result.prompt_tokens
        return result

    @property
    def load_seconds(self) -> float | None:
        return self.runtime.pool.view(self.entry.name).load_seconds


class Runtime:
    def __init__(self, config, pm=None, load_config: Callable[[], Any] | None = None):
        if pm is None:
            from .plugins import make_plugin_manager

            pm = make_plugin_manager()
        self.config = config
        self.pm = pm
        #: Reads the config again for :meth:`reload` (``hoshikage serve`` passes one that
        #: keeps its --host/--port); default: the file ``config`` came from.
        self.load_config = load_config or self._read_config_file
        self._reload_lock = asyncio.Lock()
        self.registry = build_registry(config, pm)
        self.pool = ModelPool(config, self.registry, pm)
        self.scheduler = pm.hook.create_scheduler(config=config, pool=self.pool)
        self.pool.queued_counts = lambda: self.scheduler.snapshot().queued_by_model
        self.pool.load_again = self.preload
        self.started_at = time.time()
        self._started = time.monotonic()
        self.closing = False
        self._reaper: asyncio.Task | None = None
        self._preloads: list[asyncio.Task] = []
        self._sessions = 0
        self._sessions_changed = asyncio.Event()
        self._cancel_tokens: set[CancelToken] = set()
        #: Threads for the backend's blocking calls (planning a request, embeddings).
        self._threads = ThreadPoolExecutor(
            max_workers=WORKER_THREADS, thread_name_prefix="hoshikage-worker"
        )
        self._loop_waker: LoopWaker | None = None
        #: Each model's ``cached_prompts`` as last counted on a worker thread (the hook
        #: touches the file system), when, and whether a count is under way: status shows
        #: the last count, never waiting for the disk.
        self._prompt_counts: dict[str, int] = {}
        self._prompt_counts_at = -PROMPT_COUNT_INTERVAL
        self._prompt_counting = False

    # ---- for sessions -------------------------------------------------------------------

    def sessions_opened(self) -> None:
        self._sessions += 1

    def sessions_closed(self) -> None:
        self._sessions -= 1
        self._sessions_changed.set()

    def track(self, cancel: CancelToken) -> None:
        """Cancel ``cancel`` when the server shuts down (until :meth:`untrack`)."""
        self._cancel_tokens.add(cancel)

    def untrack(self, cancel: CancelToken) -> None:
        self._cancel_tokens.discard(cancel)

    def in_thread(self, target: Callable[[], Any]) -> asyncio.Future:
        """Run a backend's blocking call on the runtime's worker threads (see :func:`_in_pool`)."""
        return _in_pool(asyncio.get_running_loop(), self._threads, target)

    @property
    def waker(self) -> LoopWaker:
        """The waker of the running event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        if self._loop_waker is None or self._loop_waker._loop is not loop:
            self._loop_waker = LoopWaker(loop)
        return self._loop_waker

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self.pool.run_reaper(), name="hoshikage-reaper")
        for entry in self.registry:
            if entry.preload:
                self.preload(entry.name)

    def preload(self, name: str) -> None:
        """Load ``name`` in the background (a failure is recorded, not raised)."""
        task = asyncio.create_task(self._preload(name))
        self._preloads.append(task)
        task.add_done_callback(self._preloads.remove)

    def _read_config_file(self):
        from . import config as config_mod

        return config_mod.load(self.config.source, pm=self.pm)

    async def reload(self):
        """Re-read the config, rescan ``models_dir`` and apply the difference without
        dropping a request; returns a :class:`~hoshikage_core.reload.ReloadResult`. Raises
        ConfigError (every problem) and keeps the running config when the new one is bad.
        Reloads run one at a time."""
        from .reload import reload

        async with self._reload_lock:
            return await reload(self)

    async def _preload(self, name: str) -> None:
        try:
            await self.load(name)
        except HoshikageError:
            pass  # recorded as last_error and reported by model_load_failed

    async def stop(self, grace: float | None = None) -> None:
        """Stop admitting, let in-flight requests finish for ``grace`` seconds, cancel the
        rest, then unload every model."""
        self.closing = True
        await self._sessions_end(self.config.server.shutdown_grace if grace is None else grace)
        for token in list(self._cancel_tokens):
            token.cancel("shutdown")
        await self._sessions_end(5.0)  # cancelled backends stop within a token
        for task in [self._reaper, *self._preloads]:
            if task is not None:
                task.cancel()
        await self.pool.unload_all("shutdown")
        self._threads.shutdown(wait=False)

    async def _sessions_end(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every open session to close."""
        deadline = time.monotonic() + seconds
        while self._sessions and time.monotonic() < deadline:
            self._sessions_changed.clear()
            try:
                await asyncio.wait_for(self._sessions_changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                return

    def resolve(self, name: str) -> ModelEntry:
        return self.registry.resolve(name)

    def session(
        self,
        model: str,
        *,
        endpoint: str = "",
        keep_alive: float | None = None,
        sequences: int = 1,
        choices: int | None = None,
    ) -> Session:
        """A request's hold on ``model``; ``sequences``: choices it decodes at once (``n``);
        ``choices``: all it asks for (prompts × ``n``), checked against ``max_choices``
        before it queues."""
        check_choices(Limits.of(self.config.server), max(sequences, choices or 0))
        return Session(self, model, endpoint, keep_alive, sequences)

    async def load(self, name: str, keep_alive: float | None = None) -> float:
        """Load ``name`` (through the scheduler, like any request); returns the load time,
        0.0 if it was already loaded."""
        entry = self.resolve(name)
        was_loaded = self.pool.state(entry.name) not in ("unloaded", "loading")
        async with self.session(name, endpoint="load", keep_alive=keep_alive) as session:
            return 0.0 if was_loaded else (session.load_seconds or 0.0)

    async def unload(self, name: str) -> str:
        """Returns ``unloaded``, ``scheduled`` (it unloads when its requests end) or ``not_loaded``."""
        entry = self.resolve(name)
        if self.pool.is_loaded_and_idle(entry.name):
            await self.pool.unload(entry.name, reason="request")
            return "unloaded"
        if self.pool.is_loading_or_busy(entry.name):
            self.pool.unload_when_idle(entry.name)
            return "scheduled"
        return "not_loaded"

    def views(self) -> list[ModelView]:
        """Every registered model's :class:`ModelView`, in registry order."""
        return [self.pool.view(entry.name) for entry in self.registry]

    def view(self, name: str) -> ModelView:
        """The view of the model ``name`` (or an alias) names; ModelNotFound if none."""
        return self.pool.view(self.resolve(name).name)

    def _count_prompts_soon(self, entries: list, now: float) -> None:
        """Count every model's prompt prefixes on disk again on a worker thread, at most
        once per :data:`PROMPT_COUNT_INTERVAL`: status reads the last count and never waits
        for the disk (a slow or network file system must not stall the event loop)."""
        if self._prompt_counting or now - self._prompt_counts_at < PROMPT_COUNT_INTERVAL:
            return
        self._prompt_counting = True

        def count() -> None:
            counts = {}
            try:
                for entry in entries:
                    try:
                        hook = self.pm.hook.cached_prompts(entry=entry, config=self.config)
                        counts[entry.name] = int(hook or 0)
                    except Exception:  # a status figure must not fail the status
                        log.debug("cached_prompts failed for %s", entry.name, exc_info=True)
                self._prompt_counts = counts
            finally:
                self._prompt_counts_at = time.monotonic()
                self._prompt_counting = False

        try:
            self._threads.submit(count)
        except RuntimeError:  # shut down
            self._prompt_counting = False

    def status(self) -> dict[str, Any]:
        """Everything ``GET /api/status`` and ``hoshikage status`` show."""
        now = time.monotonic()
        sched = self.scheduler.snapshot()
        # The registry's models, then those a reload removed that are still draining.
        views = [*self.views(), *(self.pool.view(name) for name in self.pool.draining())]
        self._count_prompts_soon([view.entry for view in views], now)
        counts = self._prompt_counts
        models = [
            _status_of(view, sched.queued_by_model, now, counts.get(view.entry.name, 0))
            for view in views
        ]
        return {
            "version": __version__,
            "uptime_seconds": now - self._started,
            "started_at": self.started_at,
            "concurrency": sched.concurrency,
            "sequences": sched.sequences,
            "max_queue": sched.max_queue,
            "running": sched.running,
            "queued": sched.queued,
            "max_loaded": self.config.unload.max_loaded,
            "rss_bytes": resident_bytes(),
            "pss_bytes": proportional_bytes(),
            "models": models,
        }


def process_tree(pid: int | str = "self") -> list[str]:
    """``pid`` and its descendants (the model processes), from ``/proc`` (Linux)."""
    import os

    found = [str(os.getpid()) if pid == "self" else str(pid)]
    for parent in found:  # grows as children are found
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    found.extend(f.read().split())
        except OSError:
            continue
    return found


def resident_bytes() -> int | None:
    """The resident memory of the server and its model processes now: from
    ``/proc/<pid>/statm`` (Linux), else the server's own from psutil when it happens to be
    installed, else None. (``resource``'s ``ru_maxrss`` is the peak, which never falls, so
    it is no stand-in.)"""
    import os

    try:
        total = 0
        for pid in process_tree():
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return total
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # not installed, or no figure on this platform
        return None


def proportional_bytes() -> int | None:
    """The machine's cost of the server and its model processes: their summed PSS (pages
    shared between them, such as the Python libraries, counted once), from
    ``/proc/<pid>/smaps_rollup`` (Linux); None elsewhere."""
    total = 0
    try:
        for pid in process_tree():
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
    except (OSError, ValueError, StopIteration):
        return None
    return total


def _status_of(
    view: ModelView, queued: dict[str, int], now: float, cached_prompts: int = 0
) -> dict[str, Any]:
    """One model's entry in :meth:`Runtime.status`."""
    entry, engine = view.entry, view.engine
    unload_in: float | None = None
    if view.state == "loaded":
        unload_in = -1.0 if view.expires_at is None else max(0.0, view.expires_at - now)
    return {
        "name": entry.name,
        "aliases": list(entry.aliases),
        "backend": entry.backend,
        "path": entry.path,
        "state": view.state,
        "memory_bytes": view.memory_bytes,
        "file_bytes": entry.file_size(),
        "in_use": view.in_use,
        "queued": queued.get(entry.name, 0),
        # The engine's own view: sequences it decodes at once and is decoding now.
        "slots": engine.slots if engine else None,
        "running_sequences": engine.running if engine else 0,
        "prompt_tokens": engine.prompt_tokens if engine else 0,
        "cached_prompt_tokens": engine.cached_tokens if engine else 0,
        # Speculative decoding since the load: tokens drafted and confirmed.
        "draft_tokens": engine.draft_tokens if engine else 0,
        "draft_accepted": engine.draft_accepted if engine else 0,
        "idle_seconds": None if view.in_use or view.last_used is None else now - view.last_used,
        "unload_in_seconds": unload_in,
        "requests": view.requests,
        "last_tokens_per_second": view.last_tokens_per_second,
        "load_seconds": view.load_seconds,
        # While loading: the share loaded, 0.0 to 1.0 (None: not told).
        "load_progress": view.load_progress,
        # Prompt prefixes on disk that the next load can restore.
        "cached_prompts": cached_prompts,
        "last_error": view.last_error,
        # state "failed": when (ISO 8601, UTC), and seconds until it may load again.
        "failed_at": None
        if view.failed_at is None
        else datetime.datetime.fromtimestamp(view.failed_at, datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "retry_in_seconds": view.retry_in,
        # A reload changed it: it loads again with the new options when idle.
        "reload_pending": view.reload_pending,
        # Bytes per backend buffer (llamacpp: "CPU_Mapped", "CUDA0", "RPC0[host:port]"...):
        # where the weights and the KV cache went.
        "placement": view.placement,
        # The model's own process (llamacpp's model process) while loaded, else null.
        "pid": view.pid,
    }
