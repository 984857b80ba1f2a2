"""Anthropic's exact shapes for a message, whole or as server-sent events.

A stream is ``event: <type>`` / ``data: <json>`` pairs in this order::

    message_start
    content_block_start (thinking)   ping   content_block_delta (thinking_delta)...
        content_block_delta (signature_delta)   content_block_stop
    content_block_start (text)   content_block_delta (text_delta)...   content_block_stop
    content_block_start (tool_use)   content_block_delta (input_json_delta)...   content_block_stop
    ...
    message_delta (stop_reason, stop_sequence, usage)   message_stop

The ``ping`` follows the first ``content_block_start``. ``message_start`` reports the
prompt's ``input_tokens`` and ``cache_read_input_tokens`` (the first chunk of a choice
carries them) and ``message_delta`` reports every count again at the end. A thinking block's
``signature_delta`` carries its text (:mod:`.signature`); with ``thinking.display:
"omitted"`` its ``thinking_delta`` events are left out. A tool call's block opens as soon as its name is
known (``input: {}``); its ``input_json_delta`` events carry the argument text as it is
generated, every prefix of it valid partial JSON (the SDK parses each one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hoshikage_core.protocol import Chunk

from ..kernel.answer import Format
from ..kernel.calls import CallDeltas
from ..kernel.generation import ChoiceResult
from ..kernel.job import Job, arguments_object
from ..kernel.wire import encode as _encode
from ..kernel.wire import named_event as sse
from . import schemas as s
from .errors import to_anthropic
from .signature import sign
from .translate import _tool_use_id, message_id, stop_reason, tool_uses


def usage(prompt: int, cached: int, output: int) -> s.MessageUsage:
    """Anthropic's usage: the prompt's tokens split into those read now and those found in
    the prompt cache."""
    cached = min(cached, prompt)
    return s.MessageUsage(
        input_tokens=prompt - cached, output_tokens=output, cache_read_input_tokens=cached
    )


class MessageFormat(Format):
    """One message's id and model, and the state of its event stream."""

    media_type = "text/event-stream"

    def __init__(self, job: Job, omit_thinking: bool = False, silent: bool = False):
        self.job = job
        #: ``max_tokens: 0``: the prompt is read into the prompt cache and nothing is answered
        #: (the one token generated to read it is dropped): no content, ``max_tokens``.
        self.silent = silent
        self.id = message_id()
        #: ``thinking.display: "omitted"``: thinking blocks carry their text only in the signature.
        self.omit_thinking = omit_thinking
        self._reasoning: list[str] = []
        #: The prompt's tokens and those of them cached, as the first chunk reported them.
        self._prompt = (0, 0)
        #: Stream state: blocks opened so far, and whether a text block is open.
        self._blocks = 0
        self._text_open = False
        self._thinking_open = False
        self._started = False
        #: The tool calls streamed so far, the block of each, and whether one is open.
        self._calls = CallDeltas(lambda arguments: _encode(arguments_object(arguments)).decode())
        self._tool_blocks: dict[int, int] = {}
        self._tool_open = False

    # ---- whole message -------------------------------------------------------------------

    def whole(self, results: list[ChoiceResult]) -> s.Message:
        (result,) = results
        if self.silent:
            return s.Message(
                id=self.id,
                model=self.job.model,
                content=[],
                stop_reason="max_tokens",
                stop_sequence=None,
                usage=usage(result.prompt_tokens, result.cached_tokens, 0),
            )
        calls = tool_uses(result.tool_calls)
        content: list[s.ThinkingContent | s.TextContent | s.ToolUseContent] = []
        if result.reasoning:
            content.append(
                s.ThinkingContent(
                    thinking="" if self.omit_thinking else result.reasoning,
                    signature=sign(result.reasoning),
                )
            )
        if result.text or not calls:
            content.append(s.TextContent(text=result.text))
        content += calls
        reason, sequence = stop_reason(result.finish_reason, result.stop_sequence)
        return s.Message(
            id=self.id,
            model=self.job.model,
            content=content,
            stop_reason=reason,
            stop_sequence=sequence,
            usage=usage(result.prompt_tokens, result.cached_tokens, result.completion_tokens),
        )

    # ---- stream --------------------------------------------------------------------------

    def _open(self, block: dict[str, Any]) -> Iterator[bytes]:
        yield sse(
            "content_block_start",
            {"type": "content_block_start", "index": self._blocks, "content_block": block},
        )
        if self._blocks == 0:
            yield sse("ping", {"type": "ping"})
        self._blocks += 1

    def _close(self) -> Iterator[bytes]:
        yield sse("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})

    def _close_text(self) -> Iterator[bytes]:
        if self._text_open:
            self._text_open = False
            yield from self._close()

    def _close_tool(self) -> Iterator[bytes]:
        if self._tool_open:
            self._tool_open = False
            yield from self._close()

    def _close_thinking(self) -> Iterator[bytes]:
        if self._thinking_open:
            self._thinking_open = False
            signature = sign("".join(self._reasoning))
            self._reasoning.clear()
            yield from self._delta({"type": "signature_delta", "signature": signature})
            yield from self._close()

    def _delta(self, delta: dict[str, Any]) -> Iterator[bytes]:
        yield sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta},
        )

    def items(self, index: int, chunk: Chunk) -> bytes:
        return b"".join(self.events(chunk))

    def error_item(self, exc: Exception) -> bytes:
        return sse("error", to_anthropic(exc)[1])

    def events(self, chunk: Chunk) -> Iterator[bytes]:
        """The events for one chunk of the generation."""
        if not self._started:
            self._started = True
            start = s.Message(
                id=self.id,
                model=self.job.model,
                content=[],
                stop_reason=None,
                stop_sequence=None,
                usage=usage(chunk.prompt_tokens or 0, chunk.cached_tokens or 0, 0),
            )
            self._prompt = (chunk.prompt_tokens or 0, chunk.cached_tokens or 0)
            yield sse("message_start", {"type": "message_start", "message": start})
        if self.silent:
            if chunk.finish_reason is not None:
                yield from self._end("max_tokens", None, chunk, 0)
            return
        if chunk.reasoning:
            if not self._thinking_open:
                yield from self._close_text()
                yield from self._open({"type": "thinking", "thinking": "", "signature": ""})
                self._thinking_open = True
            self._reasoning.append(chunk.reasoning)
            if not self.omit_thinking:
                yield from self._delta({"type": "thinking_delta", "thinking": chunk.reasoning})
        calls = chunk.tool_deltas or chunk.tool_calls
        if chunk.text or calls or chunk.finish_reason is not None:
            yield from self._close_thinking()
        if chunk.text:
            yield from self._close_tool()
            if not self._text_open:
                yield from self._open({"type": "text", "text": ""})
                self._text_open = True
            delta = {"type": "text_delta", "text": chunk.text}
            yield sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta},
            )
        for d in self._calls.of(chunk) if calls else ():
            if d.name is not None:
                yield from self._close_text()
                yield from self._close_tool()
                block = {
                    "type": "tool_use",
                    "id": _tool_use_id({"id": d.id}),
                    "name": d.name,
                    "input": {},
                }
                yield from self._open(block)
                self._tool_blocks[d.index] = self._blocks - 1
                self._tool_open = True
            elif d.index in self._tool_blocks:
                delta = {"type": "input_json_delta", "partial_json": d.arguments}
                yield sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._tool_blocks[d.index],
                        "delta": delta,
                    },
                )
        if chunk.finish_reason is None:
            return
        if self._blocks == 0:  # nothing was generated: one empty text block, as in a whole message
            yield from self._open({"type": "text", "text": ""})
            yield from self._close()
        yield from self._close_text()
        yield from self._close_tool()
        reason, sequence = stop_reason(chunk.finish_reason, chunk.stop_sequence)
        yield from self._end(reason, sequence, chunk, chunk.completion_tokens or 0)

    def _end(self, reason: str, sequence: str | None, chunk: Chunk, output: int) -> Iterator[bytes]:
        yield sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": usage(
                    chunk.prompt_tokens or self._prompt[0],
                    chunk.cached_tokens or self._prompt[1],
                    output,
                ),
            },
        )
        yield sse("message_stop", {"type": "message_stop"})
