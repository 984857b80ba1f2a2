"""A model in a process of its own: :class:`ProcessModel` implements the core's
:class:`~hoshikage_core.protocol.LoadedModel` by forwarding to :mod:`.child`.

Why. llama.cpp's RPC backend aborts the whole process when a remote host dies in the middle
of a call (``ggml-rpc.cpp: Remote RPC server crashed or returned malformed response``), and
when a host cannot be reached at load. In-process, that would take down the server and every
model it holds. A model with ``rpc_servers`` therefore runs in a child process (``isolation =
"process"``, its default there); only the child dies. Registered RPC devices are also
process-wide in llama.cpp, so in-process they would be offered to every model loaded after;
a child keeps them to its own model.

How. The child owns the context and the engine, exactly as in-process. Requests go to it as
pickled messages over a socket pair (:mod:`.wire`). In the server, the event loop that reads
the sinks reads the socket too (the pool's, :func:`~hoshikage_core.delivery.delivery_loop`):
each engine step's message (every job's chunks in it) is delivered to the sinks on the loop
itself, which then only schedules their readers, so a token costs the server no thread
woken and no wake-up of the loop beyond the socket's own; a timer sends the cancellations
and watches for a hang while jobs run. Without a loop (a model driven from plain threads) a
reader thread does the same. When the child dies, the reader closes every active sink with
:class:`~hoshikage_core.errors.ModelFailed` naming the RPC hosts and what the child last
said, then calls the callbacks given to :meth:`ProcessModel.on_failure`: the pool unloads
the model, so the next request loads it again.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import re
import signal
import subprocess
import threading
import time
from typing import Any

import attrs
from hoshikage_core.delivery import delivery_loop
from hoshikage_core.errors import Cancelled, HoshikageError, ModelFailed, ModelLoadError
from hoshikage_core.protocol import (
    CancelToken,
    ChunkSink,
    Embeddings,
    EngineStats,
    GenerationRequest,
)

from ..llama.rpc import check_reachable
from ..options import LlamaOptions, rpc_server_list
from . import sources
from .wire import Inbox, load_chunk, load_error

log = logging.getLogger("hoshikage.llamacpp.isolation")

#: Lines of the child's output logged at WARNING (the rest, llama.cpp's chatter, at DEBUG).
_ALARMING = re.compile(r"error|abort|crash|fail|traceback|exception", re.IGNORECASE)
_SOURCE_PREFIX = re.compile(r"^\S+\.(?:cpp|c|h):\d+: ")
#: How often the reader looks for cancelled requests while it waits for output (only while
#: some run: an idle model's reader sleeps until its process speaks).
CANCEL_POLL = 0.05


_BUFFER_LINE = re.compile(r"(\S+) (?:model|KV|compute|output) buffer size")


def _buffers(lines) -> list[str]:
    """The llama.cpp buffer types named in a child's telling lines (``AMX``, ``CPU_Mapped``)."""
    return sorted({m.group(1) for line in lines if (m := _BUFFER_LINE.search(line))})


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a closed child to exit (it writes its prompt states first), killing it if
    it has not within a minute: no zombie, no orphan."""
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Died(Exception):
    """The child died while loading or warming up; the message says how."""


class _Waiter:
    __slots__ = ("event", "ok", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None


class ProcessModel:
    """One llamacpp model running in a child process. Build it with :meth:`load`."""

    def __init__(self, name: str, path: str, options: LlamaOptions):
        self.name = name
        self.path = path
        self.options = options
        self.servers = rpc_server_list(options.rpc_servers)
        self.n_ctx = 0
        self.capacity = 1
        self.embedding = options.embedding
        #: Bytes per llama.cpp buffer, as the child's llama.cpp reported them.
        self.placement: dict[str, dict[str, int]] = {}
        #: What the model takes besides text ("vision", "audio"), from its projector.
        self.modalities: tuple[str, ...] = ()
        self._memory = 0
        self._stats = (0, 0, 0, 0, 0)
        self._ids = itertools.count(1)
        self._jobs: dict[int, tuple[ChunkSink, CancelToken]] = {}
        self._cancel_sent: set[int] = set()
        self._waiters: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        #: Held while the child is killed or its socket closed: a hang seen by a call and by
        #: the running streams at once must not close the descriptor twice.
        self._kill_lock = threading.Lock()
        self._failure: ModelFailed | None = None
        self._closing = False
        self._callbacks: list = []
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._reader: threading.Thread | None = None
        self._stderr_thread: threading.Thread | None = None
        #: Why the child was killed as hung (see :meth:`_hung`), or None.
        self._hung_reason: str | None = None
        #: Whether the child runs with llama.cpp's extra buffer types, and whether it was
        #: loaded again without them after a crash (:mod:`.safe_mode`).
        self.extra_buffers = False
        self.safe_mode = False
        self._may_fall_back = False
        self._subject = None
        self._progress = None
        self._shown = 0.0
        self._default_max_tokens: int | None = None
        self.default_max_tokens: int | None = None
        #: What the child was doing, for the report of its death.
        self._stage = "loading"
        #: Whether this child has delivered any output (a death before is "in its first decode").
        self._delivered = False
        #: Calls sent and not answered: call id -> the message, sent again to a child that
        #: replaces a dead one (see :meth:`_replace`).
        self._sent: dict[int, tuple] = {}
        #: Each running job's submission, sent again to a child that replaces a dead one.
        self._submitted: dict[int, tuple] = {}
        #: Jobs that have had output: never sent again to a new child.
        self._started: set[int] = set()
        #: A new child is loading in place of a dead one (calls wait to be sent).
        self._replacing = False
        #: The event loop that reads the child's socket (see the module's docstring); None:
        #: a reader thread does.
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set once the loop has seen the child's socket close.
        self._unwatched: threading.Event | None = None
        #: The loop's timer while jobs run (:meth:`_on_tick`), and when the child last spoke.
        self._tick: asyncio.TimerHandle | None = None
        self._heard = 0.0
        #: Counted among the model processes that keep a spare (:mod:`.spare`).
        self._counted = False

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def load(
        cls, name: str, path: str, options: LlamaOptions, default_max_tokens: int | None = None
    ) -> ProcessModel:
        """Start the child and load the model there; every failure is a
        :class:`ModelLoadError` naming ``path`` (and the RPC hosts when one is at fault).

        With ``extra_buffers = "auto"`` the extra buffer types are tried unless a verdict says
        they crash here (:mod:`.safe_mode`); a child that dies loading or warming up with them
        is replaced at once by one in safe mode (without them), and the verdict remembered."""
        from .safe_mode import OK, Subject, decide, remember

        self = cls(name, os.path.expanduser(path), options)
        self._loop = delivery_loop()
        if self.servers:
            down = check_reachable(self.servers)
            if down:
                raise ModelLoadError(
                    name, f"{self.path}: cannot reach the RPC server(s) {', '.join(down)}"
                )
        from hoshikage_core.load_progress import reporter

        self._progress = reporter()  # the pool's, on this (the loading) thread
        # The process starts (Python, its imports) while this reads the weights' types.
        self._start()
        try:
            self._subject = Subject.of(self.path)
            decision = decide(options.extra_buffers, self._subject, isolated=True)
        except BaseException:
            self._kill()
            raise
        self.safe_mode = decision.safe
        self._default_max_tokens = default_max_tokens
        try:
            self._spawn(decision.extra, started=True)
        except _Died as died:
            if self._proc.returncode == sources.STALE_EXIT:
                raise ModelLoadError(name, sources.STALE) from None
            if not (decision.may_fall_back and self._native_crash(self._proc)):
                raise ModelLoadError(name, f"{self.path}: {died}", crashed=True) from None
            self._fall_back(str(died))
            try:
                self._spawn(False)
            except _Died as again:
                raise ModelLoadError(
                    name,
                    f"{self.path}: {again}, in safe mode too (extra buffer types off)",
                    crashed=True,
                ) from None
        else:
            if decision.extra and decision.may_fall_back:
                if self._computes_here():
                    remember(self._subject, OK)
        self._may_fall_back = decision.may_fall_back and decision.extra
        from . import spare

        self._counted = True
        spare.loaded()
        return self

    def _computes_here(self) -> bool:
        """Whether this host's CPU computes the model's layers (a warm-up then says something
        about its kernels): not with RPC servers, nor with layers offloaded to a GPU."""
        if self.servers:
            return False
        from ..llama.build import is_gpu_build

        return self.options.n_gpu_layers == 0 or not is_gpu_build()

    def _fall_back(self, reason: str) -> None:
        """The extra buffer types crashed this model: remember it, and go on in safe mode."""
        from .safe_mode import CRASH, remember

        remember(self._subject, CRASH, reason)
        log.warning(
            "model %s: %s; loading it again in safe mode (extra buffer types off; "
            "remembered for %s)",
            self.name,
            reason,
            self._subject.describe(),
        )
        self.safe_mode = True
        self._may_fall_back = False

    def _spawn(self, extra: bool, reader: bool = True, started: bool = False) -> None:
        """A child with the model loaded and warmed up (in the one just started, with
        ``started``, else in a new one), and (``reader``) its reader thread running; raises
        :class:`_Died` when the child dies on the way (a native crash)."""
        options = attrs.evolve(self.options, extra_buffers=extra)
        self.extra_buffers = extra
        self._stage = "loading"
        self.placement = {}
        self._hung_reason = None
        self._delivered = False
        if not started:
            self._stderr_tail.clear()
            self._start()
        try:
            self._send(("load", self.name, self.path, options, self._default_max_tokens))
            deadline = time.monotonic() + options.load_timeout
            while True:
                if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                    self._kill()
                    raise ModelLoadError(
                        self.name,
                        f"{self.path}: the load did not finish within "
                        f"{options.load_timeout:g}s (load_timeout){self._hosts_note()}; "
                        "its process was killed",
                    )
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    raise _Died(self._death_reason()) from None
                if message[0] == "progress":
                    # Never backwards: a load again in safe mode starts over from 0.
                    if self._progress is not None and message[1] >= self._shown:
                        self._shown = message[1]
                        self._progress(message[1])
                    continue
                if message[0] == "ready":  # a spare's, taken before it was ready
                    continue
                if message[0] == "stage":
                    _, self._stage, self.placement = message
                    continue
                _, ok, value = message
                break
            if not ok:
                error = load_error(value)
                if isinstance(error, HoshikageError):
                    raise error
                raise ModelLoadError(self.name, f"{self.path}: {error}")
        except BaseException:
            self._kill()
            raise
        self.n_ctx = value["n_ctx"]
        self.capacity = value["capacity"]
        self._memory = value["memory_bytes"]
        self.placement = value["placement"]
        #: Tokens for a request that gives no max_tokens (None: up to the context).
        self.default_max_tokens = value["default_max_tokens"]
        self.modalities = tuple(value.get("modalities", ()))
        self._stats = (0, 0, 0, 0, 0)
        self._stage = "in its first decode"
        if reader:
            self._watch(self._conn, self._proc)

    def _watch(self, conn, proc) -> None:
        """Read the child's messages from now on: on the event loop the model delivers to,
        or on a reader thread of its own when there is none."""
        if self._loop is not None:
            inbox = Inbox(conn, own=True)
            done = threading.Event()
            try:
                self._loop.call_soon_threadsafe(self._watch_on_loop, inbox, conn, proc, done)
            except RuntimeError:  # the loop is closed: a thread reads from now on
                inbox.close()
                self._loop = None
            else:
                self._unwatched = done
                return
        self._reader = threading.Thread(
            target=self._read,
            args=(conn, proc),
            name=f"hoshikage-proxy:{self.name}",
            daemon=True,
        )
        self._reader.start()

    def _start(self) -> None:
        """The model's process: the spare when it may be taken (:mod:`.spare`), else a new one."""
        from . import spare

        env = spare.child_env()
        self._proc, self._conn = spare.take(env) or spare.spawn(env, self.name)
        spare.started()
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name=f"hoshikage-child-log:{self.name}", daemon=True
        )
        self._stderr_thread.start()

    def _read_stderr(self) -> None:
        """The child's output (its log, llama.cpp's abort message) into this log, with the
        last lines kept for the error that reports its death."""
        child_log = logging.getLogger("hoshikage.llamacpp.child")
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                level = logging.WARNING if _ALARMING.search(line) else logging.DEBUG
                child_log.log(level, "[%s] %s", self.name, line)

    def close(self) -> None:
        """Ask the child to unload and wait until it has freed llama.cpp's buffers (local
        and remote) and closed its end of the socket; whatever still runs ends as
        cancelled. It then writes its prompt states to disk and exits on its own (reaped
        here in the background), so a switch to another model need not wait for the disk."""
        self._closing = True
        if self._counted:
            from . import spare

            self._counted = False
            spare.closed()
        proc = self._proc
        if proc is None:
            return
        try:
            self._send(("close",))
        except (OSError, ValueError):
            pass
        reader = self._reader
        unwatched = self._unwatched if self._loop is not None else None
        if unwatched is not None and self._loop.is_running() and not self._on_loop():
            if not unwatched.wait(60):  # set when the child has closed the socket
                log.warning("model %s: its process did not unload; killing it", self.name)
                self._kill()
        elif unwatched is None and reader is not None and reader is not threading.current_thread():
            reader.join(60)  # it ends when the child has closed the socket
            if reader.is_alive():
                log.warning("model %s: its process did not unload; killing it", self.name)
                self._kill()
        else:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._kill()
        self._fail_all(Cancelled("The model was unloaded."))
        with self._kill_lock:
            self._conn.close()
        threading.Thread(target=_reap, args=(proc,), name="hoshikage-reap", daemon=True).start()

    def _kill(self) -> None:
        with self._kill_lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            if self._conn is not None:
                self._conn.close()

    def on_failure(self, callback) -> None:
        """Call ``callback(error)`` once, from a thread of this model's (never the event
        loop's), if the child dies on its own (the pool unloads the model then)."""
        self._callbacks.append(callback)
        if self._failure is not None:
            callback(self._failure)

    @property
    def pid(self) -> int | None:
        """The model process's id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def failure(self) -> ModelFailed | None:
        """Why the child died, once it has."""
        return self._failure

    # ----------------------------------------------------------------- the contract

    def generate(
        self, request: GenerationRequest, cancel: CancelToken, sink: ChunkSink, n: int = 1
    ) -> None:
        self._submit(sink, cancel, "generate", request, n)

    def score(self, request, cancel: CancelToken, sink: ChunkSink) -> None:
        """The child's engine scores it (the core's ``Scorer``); its one ``Scores`` comes
        back like a chunk."""
        self._submit(sink, cancel, "score", request)

    def _submit(self, sink: ChunkSink, cancel: CancelToken, kind: str, *args) -> None:
        """A job for the child's engine (``kind`` "generate" or "score"), its output to
        ``sink``; kept until it closes, to be sent again to a child that replaces this one."""
        job_id = next(self._ids)
        with self._lock:
            self._check_alive()
            self._jobs[job_id] = (sink, cancel)
        self._submitted[job_id] = (kind, None, job_id, *args)
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._start_tick)
            except RuntimeError:  # the loop is closed: the call below fails with the model
                pass
        try:
            self._call_raw(self._submitted[job_id])
        except BaseException:
            with self._lock:
                self._jobs.pop(job_id, None)
                self._submitted.pop(job_id, None)
            raise

    def encode(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        return self._call("encode", text, add_special, parse_special)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        return self._call("token_bytes", token, special)

    def apply_template(self, messages, tools=None) -> str:
        return self._call("apply_template", messages, tools)

    def rerank(self, query: str, documents: list[str]):
        return self._call("rerank", query, list(documents))

    def stats(self) -> EngineStats:
        running, prompt, cached, drafted, accepted = self._stats
        return EngineStats(
            slots=self.capacity,
            running=running,
            prompt_tokens=prompt,
            cached_tokens=cached,
            draft_tokens=drafted,
            draft_accepted=accepted,
        )

    def embed(self, inputs: list[str]) -> Embeddings:
        return self._call("embed", list(inputs))

    def tokenize(self, text: str) -> list[int]:
        return self._call("tokenize", text)

    def count_tokens(self, text: str) -> int:
        return self._call("count_tokens", text)

    def memory_bytes(self) -> int:
        return self._memory

    def device_memory_bytes(self) -> int:
        """As :meth:`LlamaCppModel.device_memory_bytes`, from the child's placement."""
        from .memory import device_bytes

        return device_bytes(self.placement)

    # ----------------------------------------------------------------- messages

    def _check_alive(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise Cancelled("The model is being unloaded.")

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _call(self, method: str, *args):
        return self._call_raw(("call", None, method, args))

    def _call_raw(self, message: tuple):
        if self._loop is not None and self._on_loop():
            raise RuntimeError(
                f"model {self.name}: a call to its process waits for the answer, which the "
                "event loop reads: call it from another thread"
            )
        call_id = next(self._ids)
        waiter = _Waiter()
        with self._lock:
            self._check_alive()
            self._waiters[call_id] = waiter
        message = (message[0], call_id, *message[2:])
        with self._send_lock:
            self._sent[call_id] = message
            if not self._replacing:  # else the new child gets it once it has loaded
                try:
                    self._conn.send(message)
                except (OSError, ValueError):
                    pass  # the child is gone: the reader fails (or resends) the waiter
        if not waiter.event.wait(self.options.call_timeout):
            self._hung(f"a call ({message[0]})")
            waiter.event.wait(30)  # the reader fails it once the child is gone
            if not waiter.event.is_set():
                raise ModelFailed(self.name, self._hung_reason or "its process stopped answering")
        if waiter.ok:
            return waiter.value
        raise waiter.value

    def _hung(self, what: str) -> None:
        """The child answered nothing for ``call_timeout``: kill it, so it is reported
        (by the reader, which then sees the socket close) like a child that died."""
        if self._hung_reason is None:
            self._hung_reason = (
                f"its process stopped answering {what} for {self.options.call_timeout:g}s "
                "(call_timeout) and was killed"
            )
            log.error("%s: %s", self.name, self._hung_reason)
        self._kill()

    def _read(self, conn, proc) -> None:
        quiet_since = time.monotonic()
        inbox = Inbox(conn)
        while True:
            try:
                # With nothing running, nothing to watch: sleep until the child speaks (a
                # job's submission is always answered, so the watch starts with its reply).
                message = inbox.read(CANCEL_POLL if self._jobs else None)
            except (EOFError, OSError):
                break
            now = time.monotonic()
            if message is not None or not self._jobs:
                quiet_since = now
            elif now - quiet_since > self.options.call_timeout:
                self._hung("its running streams")  # the socket closes: the loop ends
            try:
                if message is not None:
                    self._dispatch(message)
                self._send_cancels()
            except Exception:  # a broken sink must not stop delivery for everyone
                log.exception("delivering output of %s failed", self.name)
        self._died(conn, proc)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _watch_on_loop(self, inbox: Inbox, conn, proc, done: threading.Event) -> None:
        self._loop.add_reader(inbox.fileno(), self._on_readable, inbox, conn, proc, done)

    def _on_readable(self, inbox: Inbox, conn, proc, done: threading.Event) -> None:
        """The child's messages, read on the event loop and delivered as the reader thread
        delivers them; once its socket closes, a thread of its own finds out why
        (:meth:`_died` waits for the process)."""
        messages = inbox.read_ready()
        if messages is None:
            self._loop.remove_reader(inbox.fileno())
            inbox.close()
            done.set()
            threading.Thread(
                target=self._died,
                args=(conn, proc),
                name=f"hoshikage-proxy:{self.name}",
                daemon=True,
            ).start()
            return
        self._heard = time.monotonic()
        for message in messages:
            try:
                self._dispatch(message)
            except Exception:  # a broken sink must not stop delivery for everyone
                log.exception("delivering output of %s failed", self.name)
        try:
            self._send_cancels()
        except Exception:
            log.exception("cancelling a stream of %s failed", self.name)

    def _start_tick(self) -> None:
        """(On the loop, at each submission.) Start the timer of :meth:`_on_tick` unless it
        runs; the child's silence is counted from now, as no job ran before."""
        if self._tick is None:
            self._heard = time.monotonic()
            self._tick = self._loop.call_later(CANCEL_POLL, self._on_tick)

    def _on_tick(self) -> None:
        """Every :data:`CANCEL_POLL` while jobs run on a child the loop reads: send the
        cancellations, and kill the child once it has said nothing for ``call_timeout``
        (a thread does: the loop then sees its socket close, and the death is a hang)."""
        self._tick = None
        if not self._jobs or self._unwatched is None or self._unwatched.is_set():
            return
        try:
            self._send_cancels()
        except Exception:
            log.exception("cancelling a stream of %s failed", self.name)
        if time.monotonic() - self._heard > self.options.call_timeout:
            threading.Thread(
                target=self._hung,
                args=("its running streams",),
                name=f"hoshikage-hang:{self.name}",
                daemon=True,
            ).start()
            return
        self._tick = self._loop.call_later(CANCEL_POLL, self._on_tick)

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "out":
            _, items, closes, self._stats = message
            touched = {}
            jobs = self._jobs
            if items and not self._delivered:
                self._delivered = True
                self._stage = "while serving"
            started = self._started
            for job_id, index, chunk in items:
                entry = jobs.get(job_id)
                if entry is not None:
                    entry[0].put(index, load_chunk(chunk))
                    touched[job_id] = entry[0]
                    started.add(job_id)
            for job_id, error in closes:
                with self._lock:
                    entry = jobs.pop(job_id, None)
                self._cancel_sent.discard(job_id)
                self._started.discard(job_id)
                self._submitted.pop(job_id, None)
                if entry is not None:
                    entry[0].close(None if error is None else load_error(error))
                    touched[job_id] = entry[0]
            for sink in touched.values():
                try:
                    sink.flush()
                except Exception:
                    log.exception("delivering output of %s failed", self.name)
        elif kind == "reply":
            _, call_id, ok, value = message
            with self._lock:
                waiter = self._waiters.pop(call_id, None)
                self._sent.pop(call_id, None)
            if waiter is not None:
                waiter.ok = ok
                waiter.value = value if ok else load_error(value)
                waiter.event.set()

    def _send_cancels(self) -> None:
        for job_id, (_sink, cancel) in list(self._jobs.items()):
            if cancel.cancelled and job_id not in self._cancel_sent:
                self._cancel_sent.add(job_id)
                try:
                    self._send(("cancel", job_id))
                except (OSError, ValueError):
                    return

    def _died(self, conn, proc) -> None:
        """The socket closed: after a close that is the end; otherwise the child died. A
        child killed by a signal in its first decode while trying the extra buffer types is
        replaced by one in safe mode, and the requests it had not answered yet go there."""
        if self._closing or conn is not self._conn:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reason = self._death_reason()
        if self._may_fall_back and not self._delivered and self._native_crash(proc):
            self._fall_back(reason)
            # A thread of its own starts the new child and stays its reader: the child dies
            # with the thread that started it (PR_SET_PDEATHSIG), and this one ends now.
            threading.Thread(
                target=self._replace_and_read,
                args=(reason,),
                name=f"hoshikage-proxy:{self.name}",
                daemon=True,
            ).start()
            return
        self._give_up(reason)

    def _native_crash(self, proc) -> bool:
        """Whether ``proc`` died of a native fault that safe mode may avoid: a signal, but not
        SIGKILL (the OOM killer, a person, or our own kill of a hung process), and not with
        RPC servers (a lost host aborts the process, whatever the buffer types)."""
        code = proc.returncode
        return (
            code is not None
            and code < 0
            and code != -signal.SIGKILL
            and self._hung_reason is None
            and not self.servers
        )

    def _replace_and_read(self, reason: str) -> None:
        self._reader = threading.current_thread()  # the new child's reader, from here on
        try:
            self._replace(reason)
        except (_Died, HoshikageError) as again:
            self._give_up(f"{reason}; in safe mode: {again}")
            return
        if self._loop is None:
            self._read(self._conn, self._proc)
            return
        proc = self._proc
        self._watch(self._conn, proc)
        # The loop reads; this thread started the child, which dies with it
        # (PR_SET_PDEATHSIG): it waits as long as the child lives.
        proc.wait()

    def _give_up(self, reason: str) -> None:
        """The child died for good: every request ends with the failure, and the pool hears."""
        failure = ModelFailed(self.name, reason)
        with self._lock:
            self._failure = failure
        log.error("%s", failure)
        self._fail_all(failure)
        for callback in list(self._callbacks):
            try:
                callback(failure)
            except Exception:
                log.exception("a failure callback of %s failed", self.name)

    def _replace(self, reason: str) -> None:
        """Load the model again in a new child (safe mode) and send it every call the dead
        one left unanswered; a job that had output already ends with the failure."""
        with self._send_lock:
            self._replacing = True
        failure = ModelFailed(self.name, reason)
        with self._lock:
            lost = {job: self._jobs.pop(job) for job in list(self._started) if job in self._jobs}
            self._started.clear()
            for job in lost:
                self._submitted.pop(job, None)
        for sink, _cancel in lost.values():
            sink.close(failure)
            sink.flush()
        try:
            self._spawn(False, reader=False)
        except BaseException:
            with self._send_lock:
                self._replacing = False
            raise
        with self._send_lock:
            for job_id, message in sorted(self._submitted.items()):
                if job_id not in lost:
                    self._conn.send(message)
            for _call_id, message in sorted(self._sent.items()):
                if message[0] not in ("generate", "score"):  # those went with their jobs
                    self._conn.send(message)
            self._replacing = False
        log.warning(
            "model %s: its process died in its first decode (%s); it was loaded again in safe "
            "mode and its requests sent there",
            self.name,
            reason,
        )

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, {}
            waiters, self._waiters = self._waiters, {}
            self._sent.clear()
            self._started.clear()
            self._submitted.clear()
        for sink, _cancel in jobs.values():
            try:
                sink.close(error)
                sink.flush()
            except Exception:
                log.exception("closing a stream of %s failed", self.name)
        for waiter in waiters.values():
            waiter.ok, waiter.value = False, error
            waiter.event.set()

    def _death_reason(self) -> str:
        """What happened, for the error each request gets: how the process ended and at
        which stage, what llama.cpp said last, the buffers in use and the CPU."""
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if (
            self._stderr_thread is not None
            and self._stderr_thread is not threading.current_thread()
        ):
            self._stderr_thread.join(2)  # its last words
        if code == sources.STALE_EXIT:
            return sources.STALE
        if self._hung_reason is not None:
            how = self._hung_reason
        elif code is None:
            how = "its process stopped answering"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"its llama.cpp process was killed by {name} {self._stage}"
        else:
            how = f"its llama.cpp process exited with status {code} {self._stage}"
        if self.safe_mode and self._hung_reason is None:
            how += " in safe mode (extra buffer types off)"
        tail = list(self._stderr_tail)
        said = [
            line
            for line in tail
            if not line.startswith("llama.cpp:")
            and ("abort" in line.lower() or "error" in line.lower() or "rpc" in line.lower())
        ]
        # "…/ggml-rpc.cpp:566: Remote RPC server crashed…" without the build path
        detail = f" ({_SOURCE_PREFIX.sub('', said[-1].strip())})" if said else ""
        buffers = sorted(self.placement) or _buffers(tail)
        where = f"; buffers: {', '.join(buffers)}" if buffers else ""
        if self.extra_buffers:
            where += " (extra buffer types on)"
        from .safe_mode import cpu_facts

        cpu = cpu_facts()
        where += f"; CPU: {cpu.model} ({' '.join(cpu.flags) or 'no vector extensions'})"
        return f"{how}{detail}{self._hosts_note()}{where}"

    def _hosts_note(self) -> str:
        if not self.servers:
            return ""
        return f"; the RPC server(s) {', '.join(self.servers)} may have gone away"
