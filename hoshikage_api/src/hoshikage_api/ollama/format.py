"""Ollama's answer shapes: one object, or NDJSON lines, and the durations they report.

A stream is one JSON object per line::

    {"model": ..., "created_at": ..., "message": {"role": "assistant", "content": "The"}, "done": false}
    ...
    {"model": ..., "created_at": ..., "message": {"role": "assistant", "content": ""},
     "done": true, "done_reason": "stop", "total_duration": ..., "load_duration": ...,
     "prompt_eval_count": ..., "prompt_eval_duration": ..., "eval_count": ..., "eval_duration": ...}

(``/api/generate`` has ``"response": "..."`` in place of ``message``.) Tool calls arrive in a
line of their own before the last. An error after the stream started is a last line
``{"error": "..."}``.

**Durations** (nanoseconds) are measured here, at the API: ``load_duration`` from the
request's arrival until the session holds its slot with the model loaded (a queue wait
counts, as in Ollama), ``prompt_eval_duration`` from then to the first output,
``eval_duration`` from the first output to the last, ``total_duration`` the whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from hoshikage_core.protocol import Chunk, TokenLogprob

from ..kernel.answer import Format
from ..kernel.generation import ChoiceResult
from ..kernel.wire import line
from . import schemas as s
from .errors import to_ollama
from .models import now
from .translate import done_reason, tool_calls


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


class Timing:
    """The checkpoints of one request, on the monotonic clock."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.ready: float | None = None
        self.first: float | None = None

    def on_ready(self) -> None:
        self.ready = time.monotonic()

    def output(self, at: float | None = None) -> None:
        """The first output came (now, or ``at``)."""
        if self.first is None:
            self.first = time.monotonic() if at is None else at

    def fields(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        end = time.monotonic()
        ready = self.ready if self.ready is not None else self.start
        first = self.first if self.first is not None else end
        return {
            "total_duration": _ns(end - self.start),
            "load_duration": _ns(ready - self.start),
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": _ns(first - ready),
            "eval_count": completion_tokens,
            "eval_duration": _ns(end - first),
        }


def logprobs(items: list[TokenLogprob] | tuple[TokenLogprob, ...] | None) -> list[s.Logprob] | None:
    if items is None:
        return None
    return [
        s.Logprob(
            token=lp.token,
            logprob=lp.logprob,
            bytes=list(lp.bytes),
            top_logprobs=[
                s.TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes))
                for t in lp.top_logprobs
            ]
            or None,
        )
        for lp in items
    ]


class _Format(Format):
    """One answer's model name (as the client wrote it) and timing."""

    media_type = "application/x-ndjson"

    def __init__(self, model: str):
        self.model = model
        self.timing = Timing()

    def ready(self, session) -> None:
        self.timing.on_ready()

    def items(self, index: int, chunk: Chunk) -> bytes:
        return b"".join(self.lines(chunk))

    def error_item(self, exc: Exception) -> bytes:
        return line(to_ollama(exc)[1])

    def whole(self, results: list[ChoiceResult]):
        (result,) = results
        if result.first_at is not None:
            self.timing.output(result.first_at)
        return self._whole(result)

    def _part(
        self,
        text: str = "",
        tool_calls=None,
        logprobs=None,
        done: bool = False,
        thinking: str | None = None,
        **fields,
    ):
        """One object of the answer (a line of the stream, or the whole answer)."""
        raise NotImplementedError

    def lines(self, chunk: Chunk) -> Iterator[bytes]:
        """The NDJSON lines for one chunk of the generation."""
        self.timing.output()
        if chunk.reasoning:
            yield line(self._part("", thinking=chunk.reasoning))
        if chunk.text or chunk.logprobs:
            yield line(self._part(chunk.text, logprobs=logprobs(chunk.logprobs)))
        calls = tool_calls(chunk.tool_calls)
        if calls:
            yield line(self._part("", tool_calls=calls))
        if chunk.finish_reason is not None:
            done = self._done(
                chunk.finish_reason, chunk.prompt_tokens or 0, chunk.completion_tokens or 0
            )
            if chunk.token_ids is not None:
                done.context = list(chunk.token_ids)
            yield line(done)

    def _done(self, finish: str | None, prompt_tokens: int, completion_tokens: int, **content):
        fields = self.timing.fields(prompt_tokens, completion_tokens)
        return self._part(done=True, done_reason=done_reason(finish), **content, **fields)


class ChatFormat(_Format):
    def _part(
        self,
        text: str = "",
        tool_calls=None,
        logprobs=None,
        done: bool = False,
        thinking: str | None = None,
        **fields,
    ) -> s.ChatResponse:
        message = s.Message(
            role="assistant", content=text, thinking=thinking or None, tool_calls=tool_calls
        )
        return s.ChatResponse(
            model=self.model,
            created_at=now(),
            message=message,
            done=done,
            logprobs=logprobs,
            **fields,
        )

    def _whole(self, result: ChoiceResult) -> s.ChatResponse:
        return self._done(
            result.finish_reason,
            result.prompt_tokens,
            result.completion_tokens,
            text=result.text,
            thinking=result.reasoning,
            tool_calls=tool_calls(result.tool_calls),
            logprobs=logprobs(result.logprobs),
        )


class GenerateFormat(_Format):
    def _part(
        self,
        text: str = "",
        tool_calls=None,
        logprobs=None,
        done: bool = False,
        thinking: str | None = None,
        **fields,
    ) -> s.GenerateResponse:
        return s.GenerateResponse(
            model=self.model,
            created_at=now(),
            response=text,
            thinking=thinking or None,
            done=done,
            logprobs=logprobs,
            **fields,
        )

    def _whole(self, result: ChoiceResult) -> s.GenerateResponse:
        return self._done(
            result.finish_reason,
            result.prompt_tokens,
            result.completion_tokens,
            text=result.text,
            thinking=result.reasoning,
            logprobs=logprobs(result.logprobs),
            context=list(result.token_ids) if result.token_ids is not None else None,
        )


def load_answer(fmt: ChatFormat | GenerateFormat, reason: str):
    """The answer to a request without prompt or messages: ``done_reason`` ``load`` or ``unload``."""
    return fmt._part(done=True, done_reason=reason)
