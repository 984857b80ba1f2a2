"""The one path every generation request takes: a session on the runtime, then each prompt
in turn with its ``n`` choices decoded together, as a stream of ``(choice index, Chunk)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import attrs
from hoshikage_core.protocol import Chunk, TokenLogprob

from .schemas import PromptTokensDetails, Usage
from .translate import Job


async def run(
    runtime, job: Job, on_ready: Callable[[], None] | None = None
) -> AsyncIterator[tuple[int, Chunk]]:
    """Yield every choice's chunks inside one session: prompt after prompt, the ``n``
    choices of a prompt decoded together from one reading of it (choice ``j`` samples
    with ``seed + j``).

    ``on_ready`` is called once the session holds its slot and the model is loaded (the
    Ollama surface times its ``load_duration`` by it).

    Closing or cancelling the iterator cancels the backend within a step; the session
    releases its slot once the engine has let go of it.
    """
    async with runtime.session(
        job.model, endpoint=job.endpoint, keep_alive=job.keep_alive, sequences=job.n
    ) as session:
        if on_ready is not None:
            on_ready()
        for i, request in enumerate(job.requests):
            async with aclosing(session.stream(request, job.n)) as chunks:
                async for j, chunk in chunks:
                    yield i * job.n + j, chunk


@attrs.define
class ChoiceResult:
    """One choice, accumulated from its chunks."""

    texts: list[str] = attrs.Factory(list)
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list = attrs.Factory(list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    stop_sequence: str | None = None

    def add(self, chunk: Chunk) -> None:
        if chunk.text:
            self.texts.append(chunk.text)
        if chunk.logprobs is not None:
            self.logprobs = (self.logprobs or []) + list(chunk.logprobs)
        if chunk.tool_calls:
            self.tool_calls.extend(chunk.tool_calls)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.prompt_tokens = chunk.prompt_tokens or 0
            self.completion_tokens = chunk.completion_tokens or 0
            self.cached_tokens = chunk.cached_tokens or 0
            self.stop_sequence = chunk.stop_sequence

    @property
    def text(self) -> str:
        return "".join(self.texts)


async def collect(
    runtime, job: Job, on_ready: Callable[[], None] | None = None
) -> list[ChoiceResult]:
    """Run ``job`` to the end and return its choices (``on_ready``: as for :func:`run`)."""
    results = [ChoiceResult() for _ in range(job.choices)]
    async with aclosing(run(runtime, job, on_ready)) as chunks:
        async for index, chunk in chunks:
            results[index].add(chunk)
    return results


class UsageCounter:
    """Token usage over a job: the prompt is counted once per prompt, not once per choice."""

    def __init__(self, job: Job):
        self.n = job.n
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0

    def add(
        self, index: int, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> None:
        if index % self.n == 0:
            self.prompt_tokens += prompt_tokens
            self.cached_tokens += cached_tokens
        self.completion_tokens += completion_tokens

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached_tokens),
        )


def usage_of(job: Job, results: list[ChoiceResult]) -> Usage:
    counter = UsageCounter(job)
    for index, result in enumerate(results):
        counter.add(index, result.prompt_tokens, result.completion_tokens, result.cached_tokens)
    return counter.usage()
