"""OpenAI's exact shapes for chat and text completions, streamed and not.

A format turns the core's chunks into response objects: ``response()`` for a whole answer,
``pieces()`` for the server-sent events of one chunk, ``usage_chunk()`` for the final
``include_usage`` event. Every event of a stream shares the format's ``id`` and ``created``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from hoshikage_core.protocol import Chunk, TokenLogprob
from msgspec import UNSET

from . import schemas as s
from .generation import ChoiceResult
from .translate import Job


class _Format:
    prefix = ""

    def __init__(self, job: Job):
        self.job = job
        self.id = f"{self.prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        #: ``usage: null`` on every chunk but the last, only when the client asked for usage.
        self.chunk_usage = None if job.include_usage else UNSET
        #: Reasoning tokens per choice, from each choice's last chunk (None: no reasoning).
        self.reasoning_tokens: dict[int, int] = {}

    def _usage(self, usage: s.Usage) -> s.Usage:
        """``usage`` with ``completion_tokens_details.reasoning_tokens`` when any choice
        came from a model that reasons."""
        if not self.reasoning_tokens:
            return usage
        details = s.CompletionTokensDetails(reasoning_tokens=sum(self.reasoning_tokens.values()))
        return msgspec.structs.replace(usage, completion_tokens_details=details)


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


class ChatFormat(_Format):
    prefix = "chatcmpl"

    def response(self, results: list[ChoiceResult], usage: s.Usage) -> s.ChatCompletion:
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
            usage=self._usage(usage),
        )

    def _chunk(self, choice: s.ChatChunkChoice) -> s.ChatCompletionChunk:
        return s.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=[choice],
            usage=self.chunk_usage,
        )

    def pieces(self, index: int, chunk: Chunk, first: bool) -> Iterator[s.ChatCompletionChunk]:
        if first:
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
        if chunk.tool_calls:
            calls = [
                s.ToolCallDelta(index=k, id=_call_id(c), function=_function(c))
                for k, c in enumerate(chunk.tool_calls)
            ]
            yield self._chunk(s.ChatChunkChoice(index=index, delta=s.Delta(tool_calls=calls)))
        if chunk.finish_reason is not None:
            yield self._chunk(
                s.ChatChunkChoice(index=index, delta=s.Delta(), finish_reason=chunk.finish_reason)
            )

    def usage_chunk(self, usage: s.Usage) -> s.ChatCompletionChunk:
        return s.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=[],
            usage=self._usage(usage),
        )


# ---- completions --------------------------------------------------------------------------


class CompletionFormat(_Format):
    prefix = "cmpl"

    def __init__(self, job: Job):
        super().__init__(job)
        #: Per choice: characters of text already sent, for ``logprobs.text_offset``.
        self._offsets = [len(self._echo(i)) for i in range(job.choices)]

    def _echo(self, index: int) -> str:
        return self.job.echo[index // self.job.n] if self.job.echo else ""

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

    def response(self, results: list[ChoiceResult], usage: s.Usage) -> s.Completion:
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
            id=self.id, created=self.created, model=self.job.model, choices=choices, usage=usage
        )

    def pieces(self, index: int, chunk: Chunk, first: bool) -> Iterator[s.CompletionChunk]:
        text = (self._echo(index) if first else "") + chunk.text
        if text or chunk.logprobs or chunk.finish_reason is not None:
            yield s.CompletionChunk(
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
            )

    def usage_chunk(self, usage: s.Usage) -> s.CompletionChunk:
        return s.CompletionChunk(
            id=self.id, created=self.created, model=self.job.model, choices=[], usage=usage
        )
