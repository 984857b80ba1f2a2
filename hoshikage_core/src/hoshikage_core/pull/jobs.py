"""Pulls in a running server: one job per reference, shared by every request that asks for
it, run in a worker thread, at most ``[pull].concurrency`` at once.

- **Single-flight**: a second pull of the same reference joins the running job and sees its
  progress from where it is (the latest step of each file, then every step after). Two
  references to one file share the download too (:mod:`.landing` locks each file).
- **Never on the event loop**: :func:`~.fetch.pull` runs in a thread; its steps reach the
  followers' queues through ``call_soon_threadsafe``.
- **Cancel**: when the last follower leaves (a client that disconnected) or on
  :meth:`Pulls.cancel` (``DELETE /api/models/pull``), the job stops at its next chunk. The
  partial file stays for the next pull to resume.
- **Served at once**: ``success`` is sent only after ``on_done`` (the registry refresh) has
  run, so a client that sees it can use the model by its name at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from . import fetch, refs
from .fetch import Step
from .landing import Cancelled

log = logging.getLogger("hoshikage.pull")


class Job:
    def __init__(self, key: str, text: str):
        self.key = key
        self.text = text
        self.cancel = threading.Event()
        self.followers: set[asyncio.Queue] = set()
        #: The latest step of each kind (one per file), to replay to a late follower.
        self.latest: dict[str, Step] = {}
        self.order: list[str] = []
        self.record: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.done = asyncio.Event()
        self.task: asyncio.Task | None = None

    def push(self, step: Step) -> None:
        key = step.digest or step.status
        if key not in self.latest:
            self.order.append(key)
        self.latest[key] = step
        for queue in self.followers:
            queue.put_nowait(step)

    def replay(self) -> list[Step]:
        return [self.latest[k] for k in self.order]


class Pulls:
    """The server's pulls (see the module docstring)."""

    def __init__(
        self,
        settings: Callable[[], fetch.Settings],
        on_done: Callable[[dict[str, Any]], Awaitable[None]],
        concurrency: int = 2,
    ):
        self._settings = settings
        self._on_done = on_done
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self.jobs: dict[str, Job] = {}

    @staticmethod
    def key(text: str) -> str:
        """The job key of a reference (BadReference when it names nothing)."""
        return refs.parse(text).canonical

    def running(self) -> list[dict[str, Any]]:
        return [
            {"reference": job.text, "steps": [s.to_dict() for s in job.replay()]}
            for job in self.jobs.values()
        ]

    def _start(self, text: str) -> Job:
        key = self.key(text)
        job = self.jobs.get(key)
        if job is not None and not job.done.is_set():
            return job
        job = Job(key, text)
        self.jobs[key] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job))
        return job

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()

        def on_step(step: Step) -> None:
            if step.status != "success":  # sent once the model is served
                loop.call_soon_threadsafe(job.push, step)

        try:
            async with self._slots:
                if job.cancel.is_set():
                    raise Cancelled("The pull was cancelled.")
                settings = self._settings()
                job.record = await asyncio.to_thread(
                    fetch.pull, job.text, settings, on_step, job.cancel
                )
            await self._on_done(job.record)
            job.push(Step(status="success"))
            log.info("pulled %s as %s", job.text, job.record["name"])
        except BaseException as exc:  # delivered to the followers
            job.error = exc
            if not isinstance(exc, Cancelled):
                log.warning("pull of %s failed: %s", job.text, exc)
        finally:
            job.done.set()
            for queue in job.followers:
                queue.put_nowait(None)
            if self.jobs.get(job.key) is job:
                del self.jobs[job.key]

    async def follow(self, text: str) -> AsyncIterator[Step]:
        """The steps of the pull of ``text`` (started now, or joined), ending with
        ``success``; its error is raised after the steps sent so far. A follower that stops
        listening leaves the job; the last one to leave cancels it."""
        job = self._start(text)
        queue: asyncio.Queue = asyncio.Queue()
        for step in job.replay():
            queue.put_nowait(step)
        if job.done.is_set():
            queue.put_nowait(None)
        job.followers.add(queue)
        try:
            while True:
                step = await queue.get()
                if step is None:
                    break
                yield step
            if job.error is not None:
                raise job.error
        finally:
            job.followers.discard(queue)
            if not job.followers and not job.done.is_set():
                job.cancel.set()

    def cancel(self, text: str) -> bool:
        """Stop the pull of ``text``; whether one was running."""
        job = self.jobs.get(self.key(text))
        if job is None or job.done.is_set():
            return False
        job.cancel.set()
        return True

    def stop(self) -> None:
        """Cancel every pull (the server is shutting down); their partial files stay."""
        for job in self.jobs.values():
            job.cancel.set()
