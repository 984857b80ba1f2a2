"""Chunks from a backend's engine thread to the event loop.

An engine decodes all of a model's sequences in one step, puts each sequence's chunk into
its :class:`LoopSink`, then flushes. The sinks of one event loop share a
:class:`LoopWaker`: ``put`` only queues, and the first ``flush`` of a step wakes the loop
once for everything queued, so a step costs the loop one wake, not one per token per
request, and no thread per request is needed to carry the chunks.

Waking once per step matters beyond the loop's own work: every wake hands the GIL from the
engine thread to the loop thread and back, and an engine thread that waits for the GIL in
the middle of a step holds up the whole batch (measured: one wake per chunk cost a third of
the aggregate throughput of four streams).

A backend that reads its engine's output with the event loop itself (a model process's
socket, registered with the loop) flushes on the loop's thread: the sinks' readers are
then scheduled there and then, with no write to the loop's self-pipe and no thread woken.
Such a backend learns which loop at load time from :func:`delivery_loop`: the pool sets
:data:`DELIVERY_LOOP` in its load task, and ``asyncio.to_thread`` carries the task's
context to the thread the backend loads on.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque

from .protocol import Chunk

#: The event loop whose sinks a model loading in this context delivers to (None: no pool
#: said, e.g. a model driven from plain threads).
DELIVERY_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "hoshikage_delivery_loop", default=None
)


def delivery_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop the model loading here delivers to (its sinks are read there), or
    None when no pool said."""
    return DELIVERY_LOOP.get()


class LoopWaker:
    """Coalesces wake-ups of one event loop across every sink that uses it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: set[LoopSink] = set()
        self._scheduled = False
        #: The loop's thread, once known (from the first wake that ran there).
        self._owner: int | None = None
        #: How many times the loop was woken (for tests and the benchmark).
        self.wakes = 0

    def ready(self, sink: LoopSink) -> None:
        """``sink`` has new items; the loop learns of it at the next :meth:`wake`."""
        with self._lock:
            self._ready.add(sink)

    def wake(self) -> None:
        """Wake the loop for every sink made ready since its last wake (any thread); a
        no-op when a wake is already on its way or nothing is ready. On the loop's own
        thread the loop is awake already: the sinks' readers are scheduled at once."""
        with self._lock:
            if self._scheduled or not self._ready:
                return
            self._scheduled = True
        if threading.get_ident() == self._owner:
            self._drain()
            return
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _drain(self) -> None:
        self._owner = threading.get_ident()
        with self._lock:
            ready, self._ready = self._ready, set()
            self._scheduled = False
        self.wakes += 1
        for sink in ready:
            sink._wake()


class _Closed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None):
        self.error = error


class LoopSink:
    """One generation's :class:`~hoshikage_core.protocol.ChunkSink`, read on the loop with
    ``async for index, chunk in sink``. :attr:`done` resolves once the backend has closed
    it, whether or not anyone still reads."""

    def __init__(self, waker: LoopWaker):
        self._waker = waker
        self._items: deque = deque()
        self._event = asyncio.Event()
        self._closed = False
        self.done: asyncio.Future = waker._loop.create_future()

    # ---- the engine's side (any thread) -------------------------------------------------

    def put(self, index: int, chunk: Chunk) -> None:
        self._items.append((index, chunk))
        self._waker.ready(self)

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._items.append(_Closed(error))
        self._waker.ready(self)

    def flush(self) -> None:
        self._waker.wake()

    # ---- the loop's side ----------------------------------------------------------------

    def _wake(self) -> None:
        self._event.set()
        if self._closed and not self.done.done():
            self.done.set_result(None)

    def __aiter__(self) -> LoopSink:
        return self

    async def __anext__(self) -> tuple[int, Chunk]:
        # Not an async generator on purpose: one can be iterated from several tasks in turn
        # (the API reads the first chunk in one and the rest in another) without closing
        # it from the wrong task.
        while not self._items:
            self._event.clear()
            if not self._items:
                await self._event.wait()
        item = self._items.popleft()
        if isinstance(item, _Closed):
            self._items.appendleft(item)  # stays the end for any later call
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item
