"""The one path every generation request takes: a session on the runtime, then each prompt
in turn with its ``n`` choices decoded together, as a stream of ``(choice index, Chunk)``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

import attrs
from hoshikage_core.errors import ContextLengthExceeded
from hoshikage_core.protocol import Chunk, TokenLogprob

from .job import Job

if TYPE_CHECKING:
    from hoshikage_core.runtime import Session


async def run(
    runtime, job: Job, on_ready: Callable[[Session], None] | None = None
) -> AsyncIterator[tuple[int, Chunk]]:
    """Yield every choice's chunks inside one session: prompt after prompt, the ``n``
    choices of a prompt decoded together from one reading of it (choice ``j`` samples
    with ``seed + j``).

    ``on_ready(session)`` is called once the session holds its slot and the model is
    loaded (the Ollama surface times its ``load_duration`` by it; the OpenAI surface keeps
    the session to report its ``usage``, the core's one count, at the end).

    Closing or cancelling the iterator cancels the backend within a step; the session
    releases its slot once the engine has let go of it.
    """
    async with runtime.session(
        job.model,
        endpoint=job.endpoint,
        keep_alive=job.keep_alive,
        sequences=job.n,
        choices=job.choices,
    ) as session:
        if on_ready is not None:
            on_ready(session)
        for i, request in enumerate(job.requests):
            async with aclosing(session.stream(request, job.n)) as chunks:
                async for j, chunk in chunks:
                    yield i * job.n + j, chunk


@attrs.define
class ChoiceResult:
    """One choice, accumulated from its chunks."""

    texts: list[str] = attrs.Factory(list)
    #: The reasoning deltas (the model's think block), apart from the answer.
    reasonings: list[str] = attrs.Factory(list)
    reasoning_tokens: int | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list = attrs.Factory(list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    stop_sequence: str | None = None
    #: Speculative decoding of this choice (None: the model did not draft).
    draft_tokens: int | None = None
    draft_accepted: int | None = None
    #: When the first chunk came (the monotonic clock): Ollama reports ``eval_duration``.
    first_at: float | None = None
    #: The prompt's and the answer's token ids, when the request asked for them.
    token_ids: tuple[int, ...] | None = None

    def add(self, chunk: Chunk) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        if chunk.text:
            self.texts.append(chunk.text)
        if chunk.reasoning:
            self.reasonings.append(chunk.reasoning)
        if chunk.logprobs is not None:
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(chunk.logprobs)
        if chunk.tool_calls:
            self.tool_calls.extend(chunk.tool_calls)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.prompt_tokens = chunk.prompt_tokens or 0
            self.completion_tokens = chunk.completion_tokens or 0
            self.cached_tokens = chunk.cached_tokens or 0
            self.stop_sequence = chunk.stop_sequence
            self.draft_tokens = chunk.draft_tokens
            self.draft_accepted = chunk.draft_accepted
            self.reasoning_tokens = chunk.reasoning_tokens
            self.token_ids = chunk.token_ids

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasonings)


async def collect(
    runtime, job: Job, on_ready: Callable[[Session], None] | None = None
) -> list[ChoiceResult]:
    """Run ``job`` to the end and return its choices (``on_ready``: as for :func:`run`).
    Nothing reads a chunk before the end, so the requests say so (``stream = False``): a
    model in its own process then sends its output in a few messages, not one a step."""
    job = attrs.evolve(job, requests=tuple(attrs.evolve(r, stream=False) for r in job.requests))
    results = [ChoiceResult() for _ in range(job.choices)]
    async with aclosing(run(runtime, job, on_ready)) as chunks:
        async for index, chunk in chunks:
            results[index].add(chunk)
    return results


async def count_prompt(runtime, job: Job) -> int:
    """The prompt tokens of ``job``'s one request as the model reads them: the prompt is
    rendered and read (one token sampled and dropped, so it then sits in the prompt cache).
    A prompt longer than the context is counted too, not refused: clients measure with it
    what they are about to send (Anthropic's ``count_tokens``, OpenAI's ``input_tokens``)."""
    (request,) = job.requests
    job = attrs.evolve(
        job, stream=False, requests=(attrs.evolve(request, max_tokens=1, temperature=0.0),)
    )
    try:
        (result,) = await collect(runtime, job)
    except ContextLengthExceeded as exc:
        return exc.prompt_tokens
    return result.prompt_tokens
