"""A spare model process: one started ahead of need, its Python and imports done, that the
next model to load takes instead of starting its own (:class:`~.isolation.ProcessModel`).

Why. A model process spends about 0.45 s before its load can begin: the interpreter, then
Hoshikage's engine, llama-cpp-python, numpy and Jinja2. On a switch (``max_loaded``
reached: a model is evicted for another) that time is all the user's. A spare has spent it
already; the model that takes it starts loading at once.

When. Only where switches happen, and only while a model is in use:

* a spare is wanted from the first eviction on (:func:`unloaded` with ``evicted``): a
  server that never switches never starts one;
* it is started when a model's load begins (:func:`started`), after that model has its
  own process, so its start never delays a load: it imports while the load runs, on a
  thread of the lowest priority, so it takes no CPU from a model that decodes;
* it goes, and is no longer wanted, when the last model process goes for any reason but
  an eviction or a reload (idle, a request, a failure, shutdown): an idle server holds
  nothing for a model it does not run.

A spare is taken only by a model whose process would have been started with the same
interpreter, environment and working directory, and before it has said it is ready only
while no other model process runs; otherwise the model starts its own process, as without
a spare. The spare dies with the server
(``PR_SET_PDEATHSIG``, which follows the thread that started it: the thread that starts a
spare waits for it for as long as it lives).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading

log = logging.getLogger("hoshikage.llamacpp.spare")

#: Unload reasons after which a load follows: the spare is kept for it.
_LOAD_FOLLOWS = ("evicted", "reload")
#: How long a load waits for a spare whose process is being started (seconds): starting a
#: process takes milliseconds, and a second process beside it would do the same work.
SPAWN_WAIT = 2.0


def child_env() -> dict[str, str]:
    """The environment of a model process: the server's, with the fingerprint of its
    sources (:mod:`.sources`)."""
    from . import sources

    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}  # else llama.cpp's abort runs gdb first
    taken = sources.take()
    if taken is not None:
        env[sources.ENV] = taken
    return env


def spawn(env: dict[str, str], name: str | None = None):
    """A new model process and the server's end of its socket, ``(process, connection)``:
    ``python -m hoshikage_llamacpp.lifecycle.child FD PID [NAME]`` (``name`` None: a spare,
    whose model is not known yet; the name is unread, for ``ps``)."""
    from multiprocessing.connection import Connection

    ours, theirs = socket.socketpair()
    try:
        fd = theirs.fileno()
        argv = [
            sys.executable,
            "-m",
            "hoshikage_llamacpp.lifecycle.child",
            str(fd),
            str(os.getpid()),
        ]
        proc = subprocess.Popen(
            argv if name is None else [*argv, name],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, Connection(ours.detach())


class _Spare:
    __slots__ = ("conn", "key", "proc", "ready", "spawned", "taken")

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.proc: subprocess.Popen | None = None
        self.conn = None
        #: Its process was started (``proc`` is set), or could not be.
        self.spawned = threading.Event()
        #: It has said it is ready; a model process took it (its connection is theirs).
        self.ready = False
        self.taken = False


_lock = threading.Lock()
_spare: _Spare | None = None
_wanted = False
#: Model processes loaded and not yet closed.
_models = 0


def _key(env: dict[str, str]) -> tuple:
    try:
        cwd = os.getcwd()
    except OSError:  # removed: no spare is taken, nor started there
        cwd = None
    return sys.executable, cwd, tuple(sorted(env.items()))


def _alive(pid: int) -> bool:
    """Whether the child ``pid`` has not exited, without reaping it (its thread does)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False
    except AttributeError:  # no waitid: not Linux
        return True


def take(env: dict[str, str]):
    """The spare's ``(process, connection)`` for a model process that would run with
    ``env``, or None: no spare, or one started otherwise. A spare still importing is taken
    only while no model process runs (its thread of lowest priority then has the CPU to
    itself), and its load skips the ``("ready",)`` that comes first."""
    global _spare
    with _lock:
        spare = _spare
        if spare is None or spare.key != _key(env):
            return None
    # Started a moment ago, its process may still be starting: wait for it.
    spare.spawned.wait(SPAWN_WAIT)
    with _lock:
        if _spare is not spare or spare.proc is None:
            return None
        if not _alive(spare.proc.pid):
            _spare = None
            return None
        if not spare.ready and spare.conn.poll(0):
            try:
                spare.ready = spare.conn.recv() == ("ready",)
            except (EOFError, OSError):
                _spare = None
                return None
            if not spare.ready:
                return None
        if not spare.ready and _models:
            return None
        _spare = None
        spare.taken = True
    log.debug("a model process takes the spare (pid %d)", spare.proc.pid)
    return spare.proc, spare.conn


def started() -> None:
    """A model process has started (a load begins): start the next spare beside it, if
    spares are wanted and there is none. Its imports run while the load does, on the CPU
    the load leaves (most of a load runs on one thread)."""
    global _spare
    with _lock:
        if not _wanted or _spare is not None:
            return
        key = _key(child_env())
        if key[1] is None:
            return
        spare = _spare = _Spare(key)
    threading.Thread(target=_run, args=(spare,), name="hoshikage-spare", daemon=True).start()


def loaded() -> None:
    """A model process has loaded."""
    global _models
    with _lock:
        _models += 1


def closed() -> None:
    """A model process that had loaded is gone."""
    global _models
    with _lock:
        _models = max(0, _models - 1)


def unloaded(reason: str) -> None:
    """A model was unloaded (the pool's ``model_unloaded``): an eviction means switches
    happen here, so spares are wanted from now on; any other end of the last model process
    ends the spare too, and so does the server's shutdown."""
    global _wanted
    with _lock:
        if reason == "evicted":
            _wanted = True
        if reason != "shutdown" and (_models or reason in _LOAD_FOLLOWS):
            return
        _wanted = False
    drop()


def drop() -> None:
    """Stop the spare, if there is one."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is not None and spare.proc is not None:
        spare.proc.kill()  # its thread reaps it


def _run(spare: _Spare) -> None:
    """Start the spare, then wait for it as long as it lives: a model may have taken it,
    and it dies with this thread (``PR_SET_PDEATHSIG``)."""
    global _spare
    try:
        try:
            proc, conn = spawn(dict(spare.key[2]))
        except OSError as exc:
            log.warning("could not start a spare model process: %s", exc)
            with _lock:
                if _spare is spare:
                    _spare = None
            return
        with _lock:
            spare.proc, spare.conn = proc, conn
            if _spare is not spare:  # dropped while it started
                proc.kill()
    finally:
        spare.spawned.set()  # a load waiting for it goes on, with it or without
    proc.wait()
    with _lock:
        if _spare is spare:
            _spare = None
        taken = spare.taken
    if not taken:
        spare.conn.close()
        proc.stdout.close()
