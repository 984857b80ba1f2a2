"""The built-in scheduler: slots, a bounded queue, and model affinity.

- At most ``server.concurrency`` requests hold a slot at once.
- At most ``server.max_queue`` wait; one more raises :class:`QueueFull` at once.
- A waiter whose task is cancelled (its client went away) leaves the queue.
- Affinity: when a slot frees, a waiter for a model already loaded (or loading) goes ahead
  of one that would force a swap, so A B A C is served A A B C. Once the oldest waiter has
  waited ``server.affinity_wait``, the queue is served strictly in order, so nothing starves.
- A request is only started when the pool can make room for its model without evicting a
  busy one (:meth:`ModelPool.can_admit`).

Dispatch is synchronous on the event loop, so a decision and the pool reservation it
makes cannot interleave with another.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import attrs

from .errors import QueueFull


@attrs.define(eq=False)
class Lease:
    model: str
    queued_seconds: float = 0.0
    released: bool = False


@attrs.define(eq=False)
class _Waiter:
    model: str
    enqueued_at: float
    future: asyncio.Future


@attrs.frozen
class SchedulerSnapshot:
    running: int
    queued: int
    concurrency: int
    max_queue: int
    queued_by_model: dict[str, int]


class Scheduler:
    def __init__(self, config, pool):
        self.pool = pool
        self.concurrency = config.server.concurrency
        self.max_queue = config.server.max_queue
        self.affinity_wait = config.server.affinity_wait
        self._running = 0
        self._waiters: list[_Waiter] = []
        pool.subscribe(self.wake)

    async def acquire(self, model: str) -> Lease:
        """Wait for a slot for ``model``. Raises QueueFull when the queue is full."""
        if not self._waiters and self._running < self.concurrency and self.pool.can_admit(model):
            self._start(model)
            return Lease(model)
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(self.max_queue)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, time.monotonic(), loop.create_future())
        self._waiters.append(waiter)
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())  # granted as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._dispatch()
            raise

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        self._running -= 1
        self._dispatch()

    def wake(self) -> None:
        """The pool changed (a model loaded or unloaded, a request ended)."""
        self._dispatch()

    def snapshot(self) -> SchedulerSnapshot:
        return SchedulerSnapshot(
            running=self._running,
            queued=len(self._waiters),
            concurrency=self.concurrency,
            max_queue=self.max_queue,
            queued_by_model=dict(Counter(w.model for w in self._waiters)),
        )

    def _start(self, model: str) -> None:
        self._running += 1
        self.pool.reserve(model)

    def _dispatch(self) -> None:
        # A waiter cancelled a moment ago may not have left the queue yet.
        self._waiters = [w for w in self._waiters if not w.future.done()]
        while self._running < self.concurrency and self._waiters:
            waiter = self._pick()
            if waiter is None:
                return
            self._waiters.remove(waiter)
            self._start(waiter.model)
            waiter.future.set_result(Lease(waiter.model, time.monotonic() - waiter.enqueued_at))

    def _pick(self) -> _Waiter | None:
        head = self._waiters[0]
        if time.monotonic() - head.enqueued_at >= self.affinity_wait:
            return head if self.pool.can_admit(head.model) else None
        for waiter in self._waiters:
            if self.pool.is_resident(waiter.model) and self.pool.can_admit(waiter.model):
                return waiter
        for waiter in self._waiters:
            if self.pool.can_admit(waiter.model):
                return waiter
        return None
