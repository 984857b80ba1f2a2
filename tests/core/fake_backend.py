"""A deterministic backend for the scheduler tests, registered through ``create_backend``.

It stands in for a model only in tests of the core's own logic (admission, loading,
unloading); nothing here claims to test llama.cpp. Timing is controlled by the test:
``load_delay`` and ``token_delay`` in the entry's options, or a gate the test opens.
"""

from __future__ import annotations

import threading
import time

import attrs
from hoshikage_core.errors import ContextLengthExceeded, ModelLoadError
from hoshikage_core.hookspecs import hookimpl
from hoshikage_core.protocol import Chunk, Embeddings, EngineStats


@attrs.frozen(kw_only=True)
class FakeOptions:
    load_delay: float = 0.0
    token_delay: float = 0.0
    tokens: int = 5
    memory: int = 1000
    fail_load: bool = False
    #: The load crashes (as a model process killed by a signal while loading).
    crash_load: bool = False
    n_ctx: int = 64
    #: Sequences it decodes at once (its capacity).
    parallel: int = 1


class Recorder:
    """What happened, in order, across all fake models of one plugin instance."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.loads: dict[str, int] = {}
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}
        self.loaded: set[str] = set()
        self.max_loaded_at_once = 0
        self.gates: dict[str, threading.Event] = {}

    def log(self, kind: str, name: str) -> None:
        with self.lock:
            self.events.append((kind, name))

    def gate(self, name: str) -> threading.Event:
        """A gate generation of ``name`` waits on before each token (open by default)."""
        with self.lock:
            if name not in self.gates:
                ev = threading.Event()
                ev.set()
                self.gates[name] = ev
            return self.gates[name]


class FakeModel:
    def __init__(self, entry, rec: Recorder):
        self.name = entry.name
        self.opts: FakeOptions = entry.options
        self.rec = rec
        self.n_ctx = self.opts.n_ctx
        self.capacity = self.opts.parallel
        self.closed = False
        #: Set by :meth:`die`: every choice still running ends with it.
        self.failure: BaseException | None = None
        self.failure_callbacks: list = []

    def generate(self, request, cancel, sink, n=1):
        """Checks the request here, then runs each choice on a thread of its own."""
        prompt = (
            request.prompt
            if request.prompt is not None
            else " ".join(str(m.get("content", "")) for m in request.messages)
        )
        prompt_tokens = len(prompt.split())
        if prompt_tokens > self.n_ctx:
            raise ContextLengthExceeded(prompt_tokens, self.n_ctx)
        left = [n]
        lock = threading.Lock()

        def choice(index):
            try:
                for chunk in self._choice(request, cancel, prompt_tokens):
                    sink.put(index, chunk)
                    sink.flush()
            except BaseException as exc:
                sink.close(exc)
                sink.flush()
                return
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                sink.close()
                sink.flush()

        for index in range(n):
            threading.Thread(target=choice, args=(index,), daemon=True).start()

    def stats(self):
        return EngineStats(slots=self.capacity, running=self.rec.active.get(self.name, 0))

    def _choice(self, request, cancel, prompt_tokens):
        rec, name = self.rec, self.name
        with rec.lock:
            rec.active[name] = rec.active.get(name, 0) + 1
            rec.max_active[name] = max(rec.max_active.get(name, 0), rec.active[name])
        rec.log("start", name)
        produced = 0
        reason = "length"
        try:
            limit = request.max_tokens or self.opts.tokens
            for i in range(limit):
                gate = rec.gate(name)
                while not gate.wait(0.01):
                    if cancel.cancelled:
                        break
                if cancel.cancelled:
                    reason = "cancelled"
                    break
                if self.failure is not None:
                    raise self.failure
                if self.opts.token_delay:
                    time.sleep(self.opts.token_delay)
                produced += 1
                yield Chunk(text=f"t{i} ")
        finally:
            with rec.lock:
                rec.active[name] -= 1
            rec.log("end", name)
        yield Chunk(finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=produced)

    def on_failure(self, callback):
        self.failure_callbacks.append(callback)

    def die(self, error: BaseException) -> None:
        """What a backend does when it stops working on its own (a model process that
        died): running choices end with ``error``, then the callbacks hear of it."""
        self.failure = error
        for callback in self.failure_callbacks:
            callback(error)

    def embed(self, inputs):
        return Embeddings([[1.0, 0.0] for _ in inputs], sum(len(t.split()) for t in inputs))

    def tokenize(self, text):
        return list(range(len(text.split())))

    def count_tokens(self, text):
        return len(text.split())

    def memory_bytes(self):
        return self.opts.memory

    def close(self):
        assert not self.closed, "closed twice"
        self.closed = True
        with self.rec.lock:
            self.rec.loaded.discard(self.name)
        self.rec.log("unload", self.name)


class FakeBackendPlugin:
    def __init__(self) -> None:
        self.rec = Recorder()

    @hookimpl
    def backend_options(self, backend):
        return FakeOptions if backend == "fake" else None

    @hookimpl
    def create_backend(self, entry, config):
        if entry.backend != "fake":
            return None
        rec = self.rec
        rec.log("load", entry.name)
        with rec.lock:
            rec.loads[entry.name] = rec.loads.get(entry.name, 0) + 1
        if entry.options.load_delay:
            time.sleep(entry.options.load_delay)
        if entry.options.fail_load:
            raise ModelLoadError(entry.name, f"{entry.path}: not a GGUF file (bad magic)")
        if entry.options.crash_load:
            raise ModelLoadError(entry.name, "its process was killed by SIGSEGV", crashed=True)
        with rec.lock:
            rec.loaded.add(entry.name)
            rec.max_loaded_at_once = max(rec.max_loaded_at_once, len(rec.loaded))
        return FakeModel(entry, rec)
