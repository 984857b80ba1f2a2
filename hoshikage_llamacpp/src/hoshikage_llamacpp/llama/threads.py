"""Which thread llama.cpp computes on: one per process at a time, or its OpenMP threads sleep.

llama-cpp-python builds llama.cpp's CPU backend with OpenMP. Every thread that runs a graph
(a decode, the warm-up, a projector's warm-up, repacking weights for AMX) becomes the master
of an OpenMP team whose worker threads live as long as it does. The workers meet at a
barrier after every operation of the graph, a few hundred times a token. libgomp spins at a
barrier while it manages no more threads than the CPUs it may use; past that it waits only a
hundred spins, then sleeps in the kernel and is woken by a system call.

A model process used to load and warm up on its main thread, which then waits for messages
for the rest of its life, and decode on the engine's thread: two teams on two CPUs. Gemma 3
270M decoded 16 % slower, with 11,000 context switches a second against 15 (both measured
with ``perf stat``, one stream, 2 threads, this machine). llama-server loads, warms up and
decodes on one thread.

So:

- :func:`on_own_thread` runs a load on a thread that has ended, its team freed with it,
  before the load returns;
- :func:`compute` runs embeddings and ranks on one worker thread per process;
- the engine's own thread runs every decode of its model (:mod:`..engine.core`).

A server that runs two models in its own process (``isolation = "none"``) still has a team
per engine thread; each model in its own process (the default) does not.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor


def on_own_thread(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` on a new thread, ended before this returns: its value, or
    its exception raised here."""
    result: list = []
    failure: list = []

    def run() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"hoshikage-load:{threading.current_thread().name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


@functools.cache
def _worker() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="hoshikage-compute")


def compute(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` on this process's one compute thread (embeddings, ranks),
    waiting for it; calls from several threads run one after another."""
    return _worker().submit(fn, *args, **kwargs).result()
