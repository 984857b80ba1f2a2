"""OpenAI's exact shapes for chat and text completions, streamed and not: the two
:class:`~hoshikage_api.kernel.answer.Format` classes of this surface.

A stream is server-sent events ``data: {json}``, ending with ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk before it carries the usage (and every other
chunk ``usage: null``). An error after the stream started is a ``data: {"error": ...}``
event. Every event of a stream shares the format's ``id`` and ``created``.

A chunk with text only (nearly every chunk) is written from bytes made once per choice
around the text: the encoder's own output for the same object, split at the text.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from hoshikage_core.protocol import Chunk, TokenCounts, TokenLogprob
from msgspec import UNSET, UnsetType

from ..kernel.answer import Format
from ..kernel.calls import CallDeltas
from ..kernel.errors import to_api_error
from ..kernel.generation import ChoiceResult
from ..kernel.job import Job
from ..kernel.wire import data_event, encode
from . import schemas as s

DONE = b"data: [DONE]\n\n"

#: A text that stands for the text of a chunk while its bytes around it are made.
_MARK = "\x00hoshikage\x00"
_MARK_JSON = encode(_MARK)


def usage(tokens: TokenCounts) -> s.Usage:
    """OpenAI's ``usage`` from the core's count (each prompt once, however many choices)."""
    return s.Usage(
        prompt_tokens=tokens.prompt_tokens,
        completion_tokens=tokens.completion_tokens,
        total_tokens=tokens.total_tokens,
        prompt_tokens_details=s.PromptTokensDetails(cached_tokens=tokens.cached_tokens),
    )


class _Format(Format):
    prefix = ""
    media_type = "text/event-stream"

    def __init__(self, job: Job, *, include_usage: bool = False):
        self.job = job
        self.id = f"{self.prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.include_usage = include_usage
        #: ``usage: null`` on every chunk but the last, only when the client asked for usage.
        self.chunk_usage = None if include_usage else UNSET
        #: Reasoning tokens per choice, from each choice's last chunk (None: no reasoning).
        self.reasoning_tokens: dict[int, int] = {}
        #: The job's session, from :meth:`ready`: its ``usage`` is the answer's.
        self._session = None
        #: Per choice: whether its first event was sent.
        self._started = [False] * job.choices
        #: Per choice: the bytes of a text-only event before and after its text.
        self._around: dict[int, tuple[bytes, bytes]] = {}
        #: Per choice: its tool calls streamed so far.
        self._calls = [CallDeltas() for _ in range(job.choices)]

    def _text_event(self, index: int, text: str) -> bytes:
        around = self._around.get(index)
        if around is None:
            whole = data_event(self._text_chunk(index, _MARK))
            before, _, after = whole.rpartition(_MARK_JSON)
            around = self._around[index] = (before, after)
        return around[0] + encode(text) + around[1]

    def _text_chunk(self, index: int, text: str):
        raise NotImplementedError

    def ready(self, session) -> None:
        self._session = session

    def _usage(self) -> s.Usage:
        """The session's usage, with ``completion_tokens_details.reasoning_tokens`` when
        any choice came from a model that reasons."""
        out = usage(self._session.usage if self._session is not None else TokenCounts())
        if not self.reasoning_tokens:
            return out
        details = s.CompletionTokensDetails(reasoning_tokens=sum(self.reasoning_tokens.values()))
        return msgspec.structs.replace(out, completion_tokens_details=details)

    def error_item(self, exc: Exception) -> bytes:
        return data_event(to_api_error(exc).body())

    def end(self) -> bytes:
        if not self.include_usage:
            return DONE
        last = self._usage_chunk(self._usage())
        return data_event(last) + DONE


# ---- chat ---------------------------------------------------------------------------------


def chat_logprobs(
    logprobs: list[TokenLogprob] | tuple[TokenLogprob, ...] | None,
) -> s.ChoiceLogprobs | None:
    if logprobs is None:
        return None
    return s.ChoiceLogprobs(
        content=[
            s.TokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.bytes),
                top_logprobs=[
                    s.TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes))
                    for t in lp.top_logprobs
                ],
            )
            for lp in logprobs
        ]
    )


def _function(call: Mapping[str, Any]) -> s.FunctionCall:
    function = call.get("function") or {}
    arguments = function.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return s.FunctionCall(name=str(function.get("name", "")), arguments=arguments)


def _call_id(call: Mapping[str, Any]) -> str:
    return str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}")


def timings(results) -> s.Timings | UnsetType:
    """The ``timings`` extension over choices (results or last chunks) that drafted."""
    drafted = [r for r in results if r.draft_tokens is not None]
    if not drafted:
        return UNSET
    return s.Timings(
        draft_n=sum(r.draft_tokens for r in drafted),
        draft_n_accepted=sum(r.draft_accepted or 0 for r in drafted),
    )


class ChatFormat(_Format):
    prefix = "chatcmpl"

    def whole(self, results: list[ChoiceResult]) -> s.ChatCompletion:
        choices = []
        for index, r in enumerate(results):
            if r.reasoning_tokens is not None:
                self.reasoning_tokens[index] = r.reasoning_tokens
            calls = [
                s.ToolCall(id=_call_id(c), function=_function(c)) for c in r.tool_calls
            ] or UNSET
            choices.append(
                s.ChatChoice(
                    index=index,
                    message=s.ChatMessage(
                        content=r.text if r.text or not calls else None,
                        reasoning_content=r.reasoning or UNSET,
                        tool_calls=calls,
                    ),
                    logprobs=chat_logprobs(r.logprobs),
                    finish_reason=r.finish_reason,
                )
            )
        return s.ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=choices,
            usage=self._usage(),
            timings=timings(results),
        )

    def _chunk(self, choice: s.ChatChunkChoice) -> s.ChatCompletionChunk:
        return s.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=[choice],
            usage=self.chunk_usage,
        )

    def _text_chunk(self, index: int, text: str) -> s.ChatCompletionChunk:
        return self._chunk(s.ChatChunkChoice(index=index, delta=s.Delta(content=text)))

    def items(self, index: int, chunk: Chunk) -> bytes:
        if (
            self._started[index]
            and chunk.text
            and not chunk.reasoning
            and chunk.logprobs is None
            and not chunk.tool_deltas
            and not chunk.tool_calls
            and chunk.finish_reason is None
        ):
            return self._text_event(index, chunk.text)
        return b"".join(map(data_event, self._pieces(index, chunk)))

    def _pieces(self, index: int, chunk: Chunk) -> Iterator[s.ChatCompletionChunk]:
        if not self._started[index]:
            self._started[index] = True
            yield self._chunk(
                s.ChatChunkChoice(index=index, delta=s.Delta(role="assistant", content=""))
            )
        if chunk.reasoning:
            yield self._chunk(
                s.ChatChunkChoice(index=index, delta=s.Delta(reasoning_content=chunk.reasoning))
            )
        if chunk.reasoning_tokens is not None:
            self.reasoning_tokens[index] = chunk.reasoning_tokens
        if chunk.text or chunk.logprobs:
            yield self._chunk(
                s.ChatChunkChoice(
                    index=index,
                    delta=s.Delta(content=chunk.text),
                    logprobs=chat_logprobs(chunk.logprobs),
                )
            )
        if chunk.tool_deltas or chunk.tool_calls:
            for d in self._calls[index].of(chunk):
                if d.name is not None:
                    call = s.ToolCallDelta(
                        index=d.index,
                        id=d.id,
                        type="function",
                        function=s.FunctionDelta(name=d.name, arguments=""),
                    )
                else:
                    call = s.ToolCallDelta(
                        index=d.index, function=s.FunctionDelta(arguments=d.arguments)
                    )
                yield self._chunk(s.ChatChunkChoice(index=index, delta=s.Delta(tool_calls=[call])))
        if chunk.finish_reason is not None:
            last = self._chunk(
                s.ChatChunkChoice(index=index, delta=s.Delta(), finish_reason=chunk.finish_reason)
            )
            last.timings = timings([chunk])
            yield last

    def _usage_chunk(self, usage: s.Usage) -> s.ChatCompletionChunk:
        return s.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=[],
            usage=usage,
        )


# ---- completions --------------------------------------------------------------------------


class CompletionFormat(_Format):
    prefix = "cmpl"

    def __init__(
        self, job: Job, *, include_usage: bool = False, echo: tuple[str, ...] | None = None
    ):
        super().__init__(job, include_usage=include_usage)
        #: With ``echo``: each prompt, repeated before its choices' text.
        self.echo = echo
        #: Per choice: characters of text already sent, for ``logprobs.text_offset``.
        self._offsets = [len(self._echo(i)) for i in range(job.choices)]

    def _echo(self, index: int) -> str:
        return self.echo[index // self.job.n] if self.echo else ""

    def _logprobs(self, index: int, logprobs) -> s.CompletionLogprobs | None:
        if logprobs is None:
            return None
        offsets = []
        for lp in logprobs:
            offsets.append(self._offsets[index])
            self._offsets[index] += len(lp.token)
        return s.CompletionLogprobs(
            tokens=[lp.token for lp in logprobs],
            token_logprobs=[lp.logprob for lp in logprobs],
            top_logprobs=[{t.token: t.logprob for t in lp.top_logprobs} for lp in logprobs],
            text_offset=offsets,
        )

    def whole(self, results: list[ChoiceResult]) -> s.Completion:
        choices = [
            s.CompletionChoice(
                index=index,
                text=self._echo(index) + r.text,
                logprobs=self._logprobs(index, r.logprobs),
                finish_reason=r.finish_reason,
            )
            for index, r in enumerate(results)
        ]
        return s.Completion(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=choices,
            usage=self._usage(),
            timings=timings(results),
        )

    def _text_chunk(self, index: int, text: str) -> s.CompletionChunk:
        return s.CompletionChunk(
            id=self.id,
            created=self.created,
            model=self.job.model,
            usage=self.chunk_usage,
            choices=[s.CompletionChunkChoice(index=index, text=text)],
        )

    def items(self, index: int, chunk: Chunk) -> bytes:
        first = not self._started[index]
        if not first and chunk.text and chunk.logprobs is None and chunk.finish_reason is None:
            return self._text_event(index, chunk.text)
        text = (self._echo(index) if first else "") + chunk.text
        if not (text or chunk.logprobs or chunk.finish_reason is not None):
            return b""
        self._started[index] = True
        return data_event(
            s.CompletionChunk(
                id=self.id,
                created=self.created,
                model=self.job.model,
                usage=self.chunk_usage,
                choices=[
                    s.CompletionChunkChoice(
                        index=index,
                        text=text,
                        logprobs=self._logprobs(index, chunk.logprobs),
                        finish_reason=chunk.finish_reason,
                    )
                ],
                timings=timings([chunk]) if chunk.finish_reason is not None else UNSET,
            )
        )

    def _usage_chunk(self, usage: s.Usage) -> s.CompletionChunk:
        return s.CompletionChunk(
            id=self.id, created=self.created, model=self.job.model, choices=[], usage=usage
        )
