"""The child side of an isolated model (see :mod:`.isolation`): ``python -m
hoshikage_llamacpp.lifecycle.child FD PARENT_PID [MODEL]`` (the model's name is there for ``ps``;
without it the process is a spare, :mod:`.spare`, that imports what a load needs, says
``("ready",)`` and then waits for its model).

It owns the llama.cpp context and the engine of one :class:`~.model.LlamaCppModel`, and
speaks to the server over the socket ``FD`` in the messages :mod:`.wire` describes. When
llama.cpp aborts (an RPC host went away), only this process dies. It dies with the server
too: ``PR_SET_PDEATHSIG`` kills it when the parent goes, and the socket closing ends it
otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .wire import dump_error, dump_output

#: A test-only fault: ``HOSHIKAGE_FAULT="[model@]point[:SIGNAL][:extra],..."`` makes this
#: process kill itself with ``SIGNAL`` (SIGSEGV by default, or SIGABRT, ...) at ``point``:
#: ``load`` (before the weights), ``warmup`` (before the warm-up decode), ``decode`` (after
#: its first decode step, before any output is sent) or ``stream`` (after output was sent),
#: for ``model`` only when named, and with ``extra`` only while the extra buffer types are
#: in use (as the AMX crash). Real signals, so the server sees exactly a native crash.
FAULT_ENV = "HOSHIKAGE_FAULT"

#: Calls the server may make with ``("call", ...)``.
CALLS = ("tokenize", "count_tokens", "embed", "encode", "token_bytes", "apply_template", "rerank")


def faults(name: str, extra: bool, spec: str | None = None) -> dict[str, int]:
    """The points at which :data:`FAULT_ENV` (or ``spec``) makes model ``name``'s process
    die, with the signal of each."""
    spec = os.environ.get(FAULT_ENV, "") if spec is None else spec
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        model, _, rest = item.rpartition("@")
        point, *more = rest.split(":")
        if model and model != name or "extra" in more and not extra:
            continue
        names = [m for m in more if m != "extra"]
        points[point] = signal.Signals[names[0] if names else "SIGSEGV"].value
    return points


def _die(faults: dict[str, int], point: str) -> None:
    if point in faults:
        _err.write(f"{FAULT_ENV}: dying at {point}\n")
        _err.flush()
        # To this thread, so nothing after this line runs (os.kill may be delivered to another
        # thread while this one goes on); no handler is set for these signals: the default kills.
        signal.pthread_kill(threading.get_ident(), faults[point])
        while True:
            time.sleep(1)


class _Outgoing:
    """Everything the engine put into the sinks since the last flush, sent as one message."""

    def __init__(self, conn, model, faults: dict[str, int]):
        self._conn = conn
        self._model = model
        self._lock = threading.Lock()
        self.items: list = []
        self.closes: list = []
        self.send_lock = threading.Lock()
        self._faults = faults
        self._sent = 0  # messages with output sent, for the test-only faults

    def flush(self) -> None:
        with self._lock:
            if not (self.items or self.closes):
                return
            if self._faults and self.items:
                _die(self._faults, "decode" if self._sent == 0 else "stream")
                self._sent += 1
            items, closes = self.items, self.closes
            self.items, self.closes = [], []
            stats = self._model.stats()
            message = dump_output(
                items,
                closes,
                (
                    stats.running,
                    stats.prompt_tokens,
                    stats.cached_tokens,
                    stats.draft_tokens,
                    stats.draft_accepted,
                ),
            )
            with self.send_lock:
                self._conn.send_bytes(message)


class _RemoteSink:
    """A :class:`~hoshikage_core.protocol.ChunkSink` whose output goes to the server."""

    __slots__ = ("job_id", "out", "tokens")

    def __init__(self, job_id: int, out: _Outgoing, tokens: dict):
        self.job_id = job_id
        self.out = out
        self.tokens = tokens

    def put(self, index, chunk) -> None:
        with self.out._lock:
            self.out.items.append((self.job_id, index, chunk))

    def close(self, error=None) -> None:
        self.tokens.pop(self.job_id, None)
        with self.out._lock:
            self.out.closes.append((self.job_id, None if error is None else dump_error(error)))

    def flush(self) -> None:
        self.out.flush()


#: The longest a request not streamed holds its chunks in the model process (seconds):
#: its output goes at least this often, and with it the model's counters (``/api/status``)
#: and the sign of life that the server's hang watch counts.
HOLD = 0.5


class _HeldSink(_RemoteSink):
    """A :class:`_RemoteSink` for a request nobody reads until it ends
    (``GenerationRequest.stream`` false): its first step's chunks go at once (the first
    token's time, and a crash after it is one of a serving model), then the rest at its
    close, or every :data:`HOLD` seconds while it runs. A token then costs the server no
    wake-up of its own."""

    __slots__ = ("held", "sent_at")

    def __init__(self, job_id: int, out: _Outgoing, tokens: dict):
        super().__init__(job_id, out, tokens)
        self.held: list = []
        self.sent_at: float | None = None

    def put(self, index, chunk) -> None:
        self.held.append((self.job_id, index, chunk))

    def close(self, error=None) -> None:
        self._release()
        super().close(error)

    def flush(self) -> None:
        if self.held:
            now = time.monotonic()
            if self.sent_at is None or now - self.sent_at >= HOLD:
                self.sent_at = now
                self._release()
        self.out.flush()

    def _release(self) -> None:
        held, self.held = self.held, []
        with self.out._lock:
            self.out.items.extend(held)


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the socket closing still ends this process
    if os.getppid() != parent:  # the parent went before the signal was armed
        os._exit(0)


#: llama.cpp's log lines the server keeps to explain a crash: the buffers it allocated
#: (``AMX model buffer size = ...``), repacking, errors.
_TELLING = re.compile(r"buffer size|repack|error|fail|GGML_ASSERT|aborted", re.IGNORECASE)
#: The server's end of this process's stderr, kept apart from fd 2, which llama-cpp-python
#: points at /dev/null while it loads weights with ``verbose=False``.
_err = sys.stderr


class _Telling(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage().strip()
        if record.levelno < logging.WARNING and line and _TELLING.search(line):
            _err.write(f"llama.cpp: {line}\n")


def _tell_buffers() -> None:
    """llama.cpp logs at DEBUG through :mod:`.logging_bridge`; its telling lines also go to
    stderr, which the server reads, so a crash report can say which buffers were in use."""
    global _err
    _err = os.fdopen(os.dup(2), "w", buffering=1, errors="replace")
    logger = logging.getLogger("hoshikage.llamacpp")
    logger.setLevel(logging.DEBUG)
    handler = _Telling(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False
    warnings = logging.StreamHandler(_err)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(warnings)


#: What a load imports: a spare (:mod:`.spare`) imports it ahead.
PREPARED = (
    "hoshikage_llamacpp.lifecycle.model",
    "hoshikage_llamacpp.lifecycle.safe_mode",
    "hoshikage_llamacpp.llama.build",
    "hoshikage_llamacpp.llama.logging_bridge",
    "hoshikage_llamacpp.dialects.templating",
    "hoshikage_llamacpp.engine.cache.disk",
    "llama_cpp",
)


def _prepare() -> None:
    """Import :data:`PREPARED` on a thread of the lowest priority (a spare waits beside
    models that decode: it takes only the CPU they leave), and wait for it. numpy first,
    here: OpenBLAS starts its threads in the thread that imports it, with its priority."""
    import importlib

    import numpy  # noqa: F401

    def run() -> None:
        if sys.platform.startswith("linux"):  # a thread's id is a process id elsewhere
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only
            except OSError:
                pass
        for module in PREPARED:
            importlib.import_module(module)

    thread = threading.Thread(target=run, name="hoshikage-prepare")
    thread.start()
    thread.join()


def main(argv: list[str]) -> None:
    from multiprocessing.connection import Connection

    from . import sources

    fd, parent = int(argv[0]), int(argv[1])
    if sources.stale():  # the files changed under the server: say so, and run nothing
        sys.stderr.write(f"error: {sources.STALE}\n")
        sys.stderr.flush()
        os._exit(sources.STALE_EXIT)
    _die_with_parent(parent)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    _tell_buffers()
    conn = Connection(fd)
    try:
        if len(argv) == 2:  # a spare (:mod:`.spare`): ready before its model is known
            _prepare()
            conn.send(("ready",))
        _serve(conn)
    finally:
        sys.stderr.flush()
        os._exit(0)  # no interpreter teardown: llama.cpp's state is gone already


def _serve(conn) -> None:
    from hoshikage_core.protocol import CancelToken

    from .model import LlamaCppModel

    try:
        _, name, path, options, default_max_tokens = conn.recv()
    except EOFError:
        return
    dies = faults(name, options.extra_buffers is True)
    _die(dies, "load")

    def before_warm_up(placement) -> None:
        conn.send(("stage", "warming up", placement))
        _die(dies, "warmup")

    told = [-1.0]

    def progress(fraction: float) -> None:  # on the load's thread, while it loads
        if fraction >= 1.0 or fraction - told[0] >= 0.01:
            told[0] = fraction
            conn.send(("progress", fraction))

    try:
        model = LlamaCppModel.load(
            name,
            path,
            options,
            default_max_tokens,
            progress,
            before_warm_up=before_warm_up,
            alone=True,
        )
    except BaseException as exc:
        conn.send(("loaded", False, dump_error(exc)))
        return
    conn.send(
        (
            "loaded",
            True,
            {
                "n_ctx": model.n_ctx,
                "capacity": model.capacity,
                "memory_bytes": model.memory_bytes(),
                "placement": model.placement,
                "embedding": model.embedding,
                "default_max_tokens": model.default_max_tokens,
                "modalities": model.modalities,
            },
        )
    )
    out = _Outgoing(conn, model, {p: s for p, s in dies.items() if p in ("decode", "stream")})
    tokens: dict[int, CancelToken] = {}
    calls = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hoshikage-child-call")

    def reply(call_id: int, ok: bool, value) -> None:
        with out.send_lock:
            conn.send(("reply", call_id, ok, value))

    def run_call(call_id: int, method: str, args: tuple) -> None:
        try:
            value = getattr(model, method)(*args)
        except BaseException as exc:
            reply(call_id, False, dump_error(exc))
        else:
            reply(call_id, True, value)

    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind in ("generate", "score"):
                _, call_id, job_id, request, *n = message
                token = tokens[job_id] = CancelToken()
                try:
                    held = kind == "generate" and not request.stream
                    sink = (_HeldSink if held else _RemoteSink)(job_id, out, tokens)
                    if kind == "generate":
                        model.generate(request, token, sink, *n)
                    else:
                        model.score(request, token, sink)
                except BaseException as exc:
                    tokens.pop(job_id, None)
                    reply(call_id, False, dump_error(exc))
                else:
                    reply(call_id, True, None)
            elif kind == "cancel":
                token = tokens.get(message[1])
                if token is not None:
                    token.cancel()
            elif kind == "call":
                _, call_id, method, args = message
                if method in CALLS:
                    calls.submit(run_call, call_id, method, args)
                else:
                    reply(call_id, False, dump_error(ValueError(f"unknown call {method!r}")))
            elif kind == "close":
                break
    finally:
        calls.shutdown(wait=True)
        model.close()  # frees the remote buffers too; what still ran ends as cancelled
        out.flush()
        conn.close()
        from ..engine.cache.disk import wait_for_writers

        wait_for_writers()  # the prompt states for the next load, on disk before the exit


if __name__ == "__main__":
    main(sys.argv[1:])
