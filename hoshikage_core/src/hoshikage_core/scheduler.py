"""The built-in scheduler (:class:`FairScheduler`, a :class:`~hoshikage_core.protocol.Scheduler`):
sequence limits, a bounded queue, and model affinity.

- A request needs one sequence per choice it decodes at once (``n``), capped by what its
  model can decode together. At most ``server.concurrency`` sequences run at once over all
  models, and at most a model's :attr:`~hoshikage_core.protocol.LoadedModel.capacity` for
  that model (one request at a time while it is not loaded yet: its capacity is unknown
  until the backend has it, and if that load fails the requests queued for the model share
  its error rather than each loading again). So every request the scheduler lets through is really being
  decoded, never waiting on a lock inside the backend.
- Requests for one model start in arrival order: a later one never overtakes an earlier one
  that does not fit yet.
- At most ``server.max_queue`` wait; one more raises :class:`QueueFull` at once.
- A waiter whose task is cancelled (its client went away) leaves the queue.
- Affinity: when sequences free up, a waiter for a model already loaded (or loading) goes ahead
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
from .protocol import SchedulerSnapshot


@attrs.define(eq=False)
class Admission:
    """The built-in scheduler's :class:`~hoshikage_core.protocol.Lease`."""

    model: str
    released: bool = False
    #: Sequences held: the choices it may decode at once.
    sequences: int = 1


@attrs.define(eq=False)
class _Waiter:
    model: str
    enqueued_at: float
    future: asyncio.Future
    sequences: int = 1


class FairScheduler:
    def __init__(self, config, pool):
        self.pool = pool
        self.reconfigure(config, dispatch=False)
        self._running = 0
        self._sequences = 0
        self._by_model: Counter[str] = Counter()
        self._waiters: list[_Waiter] = []
        pool.subscribe(self.wake)
        pool.subscribe_load_failures(self.load_failed)

    async def acquire(self, model: str, sequences: int = 1) -> Admission:
        """Wait until ``model`` can run ``sequences`` more sequences (capped by its capacity
        and ``concurrency``). Raises QueueFull when the queue is full."""
        if not self._waiters and self._fits(model, sequences):
            return self._start(model, sequences)
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(self.max_queue)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, time.monotonic(), loop.create_future(), sequences)
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

    def release(self, lease: Admission) -> None:
        if lease.released:
            return
        lease.released = True
        self._running -= 1
        self._sequences -= lease.sequences
        self._by_model[lease.model] -= lease.sequences
        self._dispatch()

    def load_failed(self, model: str, error: BaseException) -> None:
        """A load of ``model`` failed: the requests queued for it were waiting on that very
        load (one at a time is admitted until it is loaded), so they share its failure
        instead of each trying again."""
        for waiter in [w for w in self._waiters if w.model == model and not w.future.done()]:
            self._waiters.remove(waiter)
            waiter.future.set_exception(error)

    def reconfigure(self, config, dispatch: bool = True) -> None:
        """Take ``[server]``'s concurrency, max_queue and affinity_wait (at start, and on a
        config reload). Requests already running keep their sequences; a lower concurrency only
        holds back new ones."""
        self.concurrency = config.server.concurrency
        self.max_queue = config.server.max_queue
        self.affinity_wait = config.server.affinity_wait
        if dispatch:
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
            sequences=self._sequences,
            sequences_by_model={m: k for m, k in self._by_model.items() if k},
        )

    def _width(self, model: str, sequences: int) -> int:
        """Sequences a request asking for ``sequences`` holds: no more than its model can
        decode together, nor than ``concurrency``."""
        capacity = self.pool.capacity(model)
        return max(1, min(sequences, capacity or sequences, self.concurrency))

    def _fits(self, model: str, sequences: int) -> bool:
        held = self._by_model[model]
        if held and self.pool.capacity(model) is None:
            return False  # not loaded yet: one request until its capacity is known
        width = self._width(model, sequences)
        if held + width > (self.pool.capacity(model) or width):
            return False
        if self._sequences + width > self.concurrency:
            return False
        return self.pool.can_admit(model)

    def _start(self, model: str, sequences: int) -> Admission:
        width = self._width(model, sequences)
        self._running += 1
        self._sequences += width
        self._by_model[model] += width
        self.pool.reserve(model)
        return Admission(model, sequences=width)

    def _dispatch(self) -> None:
        # A waiter cancelled a moment ago may not have left the queue yet.
        self._waiters = [w for w in self._waiters if not w.future.done()]
        while self._waiters:
            waiter = self._pick()
            if waiter is None:
                return
            self._waiters.remove(waiter)
            lease = self._start(waiter.model, waiter.sequences)
            waiter.future.set_result(lease)

    def _pick(self) -> _Waiter | None:
        head = self._waiters[0]
        if time.monotonic() - head.enqueued_at >= self.affinity_wait:
            return head if self._fits(head.model, head.sequences) else None
        for resident_only in (True, False):
            passed_over: set[str] = set()  # FIFO per model: no overtaking within a model
            for waiter in self._waiters:
                if waiter.model in passed_over:
                    continue
                if resident_only and not self.pool.is_resident(waiter.model):
                    continue
                if self._fits(waiter.model, waiter.sequences):
                    return waiter
                passed_over.add(waiter.model)
        return None
