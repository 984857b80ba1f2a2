"""The ``response`` object, whole or as OpenAI's server-sent event stream.

A stream is ``event: <type>`` / ``data: <json>`` pairs, each with a ``sequence_number``
counting from 0, in this order::

    response.created   response.in_progress
    response.output_item.added (reasoning)   response.reasoning_text.delta...
    response.reasoning_text.done   response.output_item.done
    response.output_item.added (message)   response.content_part.added (output_text)
    response.output_text.delta...
    response.output_text.done   response.content_part.done   response.output_item.done
    response.output_item.added (function_call)   response.function_call_arguments.delta...
    response.function_call_arguments.done   response.output_item.done
    ...
    response.completed | response.incomplete

``response.created`` waits for the first chunk of the generation, so an error found before
it (unknown model, prompt over the context, full queue) is an ordinary JSON error. An error
after it is a ``response.failed`` event, and the stream ends.

A function call's item is added as soon as its name is known; its argument deltas follow
as they are generated, and it is done when the next call starts or the response ends. A call
of a namespace's tool names the function and its ``namespace`` apart (see :mod:`.tools`). A
custom tool's call is a ``custom_tool_call`` item: its ``input`` is one
``response.custom_tool_call_input.delta`` when the call is complete (the model writes it as a
JSON string, which is decoded whole), then ``response.custom_tool_call_input.done``.

With ``include: ["reasoning.encrypted_content"]`` a reasoning item is sealed when it is done
(:mod:`.sealing`): its ``encrypted_content`` is in its ``response.output_item.done``. With
``reasoning.summary`` (``auto``, ``concise``, ``detailed``) its text is also its summary, as
Ollama gives it (a local model writes no summary of its own; the reasoning is shorter than
any it would summarise): when the reasoning is done, ``response.reasoning_summary_part.added``,
one ``response.reasoning_summary_text.delta`` (the whole text),
``response.reasoning_summary_text.done`` and ``response.reasoning_summary_part.done``.

A whole response is built by the same :class:`ResponseBuilder` from the collected result,
so streamed and whole responses have the same shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from hoshikage_core.protocol import Chunk, TokenLogprob

from ..kernel.answer import Format
from ..kernel.calls import CallDeltas
from ..kernel.errors import ApiError
from ..kernel.generation import ChoiceResult
from ..kernel.wire import named_event as sse
from . import schemas as s
from .errors import failure_code, to_openai
from .sealing import Sealer
from .tools import Tools, custom_input
from .translate import new_id

ENCRYPTED_INCLUDE = "reasoning.encrypted_content"
#: ``reasoning.summary`` values that ask for a summary.
SUMMARIES = ("auto", "concise", "detailed")


def _logprobs(
    logprobs: tuple[TokenLogprob, ...] | list[TokenLogprob] | None,
) -> list[dict[str, Any]]:
    """The Responses API's ``logprobs`` entries (with bytes, as ``output_text`` has them)."""
    return [
        {
            "token": lp.token,
            "bytes": list(lp.bytes),
            "logprob": lp.logprob,
            "top_logprobs": [
                {"token": t.token, "bytes": list(t.bytes), "logprob": t.logprob}
                for t in lp.top_logprobs
            ],
        }
        for lp in logprobs or ()
    ]


def _delta_logprobs(logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same entries as a delta event has them (without bytes)."""
    return [
        {
            "token": lp["token"],
            "logprob": lp["logprob"],
            "top_logprobs": [
                {"token": t["token"], "logprob": t["logprob"]} for t in lp["top_logprobs"]
            ],
        }
        for lp in logprobs
    ]


class ResponseBuilder(Format):
    """One response's id, echoed settings and output, and the state of its event stream.

    ``on_final`` is called with the finished response (not a failed one) before its body or
    its last event is sent: the store writes it there, so a client may continue from it at
    once."""

    media_type = "text/event-stream"

    def __init__(
        self,
        data: s.CreateResponse,
        *,
        logprobs: bool,
        on_final: Callable[[s.Response], None] | None = None,
        tools: Tools | None = None,
        sealer: Sealer | None = None,
    ):
        self.data = data
        self.logprobs = logprobs
        self.on_final = on_final
        self.tools = tools or Tools()
        #: Seals reasoning items when the request includes their ``encrypted_content``.
        self.sealer = sealer if ENCRYPTED_INCLUDE in (data.include or ()) else None
        #: Whether reasoning items carry their text as a summary too (``reasoning.summary``).
        self.summary = bool(data.reasoning and data.reasoning.summary in SUMMARIES)
        self.id = "resp_" + uuid.uuid4().hex
        self.created_at = int(time.time())
        self.output: list[s.OutputItem] = []
        self.started = False
        self._sequence = 0
        #: The message being streamed, and its index in ``output``.
        self._message: s.OutputMessage | None = None
        self._message_index = 0
        #: The reasoning item being streamed, and its index in ``output``.
        self._reasoning: s.OutputReasoning | None = None
        self._reasoning_index = 0
        #: The finished response, once the last chunk has been seen.
        self.final: s.Response | None = None
        #: The tool calls streamed so far: each one's item and its index in ``output``, and
        #: the one still open.
        self._calls = CallDeltas()
        self._call_items: dict[int, tuple[s.FunctionToolCall | s.CustomToolCall, int]] = {}
        #: Each call's arguments as the model wrote them (a custom call's hold its input).
        self._arguments: dict[int, str] = {}
        self._open_call: int | None = None

    # ---- the response object -------------------------------------------------------------

    def response(
        self,
        status: str,
        *,
        usage: s.ResponseUsage | None = None,
        error: s.ResponseError | None = None,
        incomplete: bool = False,
    ) -> s.Response:
        data = self.data
        tools = [msgspec.to_builtins(tool) for tool in data.tools or ()]
        text_format = data.text.format if data.text and data.text.format else s.FormatText()
        return s.Response(
            id=self.id,
            created_at=self.created_at,
            status=status,
            completed_at=int(time.time()) if status == "completed" else None,
            error=error,
            incomplete_details=s.IncompleteDetails(reason="max_output_tokens")
            if incomplete
            else None,
            instructions=data.instructions,
            max_output_tokens=data.max_output_tokens,
            max_tool_calls=data.max_tool_calls,
            model=data.model,
            output=list(self.output),
            parallel_tool_calls=data.parallel_tool_calls is not False,
            previous_response_id=data.previous_response_id,
            conversation=conversation_ref(data.conversation),
            background=bool(data.background),
            reasoning=s.ReasoningEcho(
                effort=data.reasoning.effort if data.reasoning else None,
                summary=data.reasoning.summary if data.reasoning else None,
            ),
            store=data.store is not False,
            temperature=data.temperature,
            text=s.TextEcho(
                format=text_format,
                verbosity=(data.text.verbosity if data.text else None) or "medium",
            ),
            tool_choice=msgspec.to_builtins(data.tool_choice)
            if data.tool_choice is not None
            else "auto",
            tools=tools,
            ignored_tools=list(self.tools.ignored),
            top_logprobs=data.top_logprobs,
            top_p=data.top_p,
            truncation=data.truncation or "disabled",
            usage=usage,
            user=data.user,
            metadata=dict(data.metadata or {}),
        )

    def whole(self, results: list[ChoiceResult]) -> s.Response:
        """The response for a collected (not streamed) generation."""
        (result,) = results
        chunk = Chunk(
            text=result.text,
            reasoning=result.reasoning,
            reasoning_tokens=result.reasoning_tokens,
            finish_reason=result.finish_reason,
            logprobs=tuple(result.logprobs or ()),
            tool_calls=tuple(result.tool_calls),
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_tokens=result.cached_tokens,
        )
        self.items(0, chunk)
        return self.final

    def items(self, index: int, chunk: Chunk) -> bytes:
        data = b"".join(self.events(chunk))
        if self.final is not None and self.on_final is not None:
            self.on_final(self.final)
        return data

    def error_item(self, exc: Exception) -> bytes:
        error = to_openai(exc)
        return self.failed(failure_code(error), error.message)

    # ---- the stream ----------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse(kind, data)

    def _reason(self, text: str) -> Iterator[bytes]:
        if self._reasoning is None:
            self._reasoning = s.OutputReasoning(
                id=new_id("rs"), status="in_progress", content=[s.ReasoningTextContent(text="")]
            )
            self._reasoning_index = len(self.output)
            self.output.append(self._reasoning)
            yield self._event(
                "response.output_item.added",
                output_index=self._reasoning_index,
                item=self._reasoning,
            )
        self._reasoning.content[0].text += text
        yield self._event(
            "response.reasoning_text.delta",
            item_id=self._reasoning.id,
            output_index=self._reasoning_index,
            content_index=0,
            delta=text,
        )

    def _close_reasoning(self) -> Iterator[bytes]:
        item, self._reasoning = self._reasoning, None
        if item is None:
            return
        yield self._event(
            "response.reasoning_text.done",
            item_id=item.id,
            output_index=self._reasoning_index,
            content_index=0,
            text=item.content[0].text,
        )
        text = item.content[0].text
        if self.summary and text:
            where = {"item_id": item.id, "output_index": self._reasoning_index, "summary_index": 0}
            part = {"type": "summary_text", "text": ""}
            yield self._event("response.reasoning_summary_part.added", **where, part=part)
            yield self._event("response.reasoning_summary_text.delta", **where, delta=text)
            yield self._event("response.reasoning_summary_text.done", **where, text=text)
            part = {"type": "summary_text", "text": text}
            yield self._event("response.reasoning_summary_part.done", **where, part=part)
            item.summary = [part]
        item.status = "completed"
        if self.sealer is not None:
            item.encrypted_content = self.sealer.seal(text)
        yield self._event(
            "response.output_item.done", output_index=self._reasoning_index, item=item
        )

    def _open_message(self) -> Iterator[bytes]:
        self._message = s.OutputMessage(id=new_id("msg"), status="in_progress", content=[])
        self._message_index = len(self.output)
        self.output.append(self._message)
        yield self._event(
            "response.output_item.added", output_index=self._message_index, item=self._message
        )
        part = s.OutputTextContent(text="")
        yield self._event(
            "response.content_part.added",
            item_id=self._message.id,
            output_index=self._message_index,
            content_index=0,
            part=part,
        )
        self._message.content.append(part)

    def _close_message(self, status: str) -> Iterator[bytes]:
        message, self._message = self._message, None
        if message is None:
            return
        part = message.content[0]
        where = {"item_id": message.id, "output_index": self._message_index, "content_index": 0}
        yield self._event(
            "response.output_text.done",
            **where,
            text=part.text,
            logprobs=_delta_logprobs(part.logprobs),
        )
        yield self._event("response.content_part.done", **where, part=part)
        message.status = status
        yield self._event(
            "response.output_item.done", output_index=self._message_index, item=message
        )

    def _call_delta(self, delta) -> Iterator[bytes]:
        """One tool-call delta: a new ``function_call`` item, or arguments of one."""
        if delta.name is not None:
            yield from self._close_call()
            target = self.tools.target(delta.name)
            call_id = delta.id or new_id("call")
            item: s.FunctionToolCall | s.CustomToolCall
            if target.kind == "custom":
                item = s.CustomToolCall(
                    id=new_id("ctc"),
                    call_id=call_id,
                    name=target.name,
                    input="",
                    namespace=target.namespace,
                    status="in_progress",
                )
            else:
                item = s.FunctionToolCall(
                    id=new_id("fc"),
                    call_id=call_id,
                    name=target.name,
                    arguments="",
                    namespace=target.namespace,
                    status="in_progress",
                )
            index = len(self.output)
            self.output.append(item)
            self._call_items[delta.index] = (item, index)
            self._arguments[delta.index] = ""
            self._open_call = delta.index
            yield self._event("response.output_item.added", output_index=index, item=item)
            return
        if delta.index not in self._call_items:
            return
        item, index = self._call_items[delta.index]
        self._arguments[delta.index] += delta.arguments
        if isinstance(item, s.CustomToolCall):
            return  # its input is decoded whole when the call is done
        item.arguments += delta.arguments
        yield self._event(
            "response.function_call_arguments.delta",
            item_id=item.id,
            output_index=index,
            delta=delta.arguments,
        )

    def _close_call(self) -> Iterator[bytes]:
        if self._open_call is None:
            return
        item, index = self._call_items[self._open_call]
        arguments = self._arguments[self._open_call]
        self._open_call = None
        if isinstance(item, s.CustomToolCall):
            item.input = custom_input(arguments)
            where = {"item_id": item.id, "output_index": index}
            yield self._event("response.custom_tool_call_input.delta", **where, delta=item.input)
            yield self._event("response.custom_tool_call_input.done", **where, input=item.input)
        else:
            yield self._event(
                "response.function_call_arguments.done",
                item_id=item.id,
                output_index=index,
                name=item.name,
                arguments=item.arguments,
            )
        item.status = "completed"
        yield self._event("response.output_item.done", output_index=index, item=item)

    def start(self) -> Iterator[bytes]:
        self.started = True
        snapshot = self.response("in_progress")
        yield self._event("response.created", response=snapshot)
        yield self._event("response.in_progress", response=snapshot)

    def events(self, chunk: Chunk) -> Iterator[bytes]:
        """The events for one chunk of the generation (``response.created`` first)."""
        if not self.started:
            yield from self.start()
        if chunk.reasoning:
            yield from self._reason(chunk.reasoning)
        calls = chunk.tool_deltas or chunk.tool_calls
        if chunk.text or calls or chunk.finish_reason is not None:
            yield from self._close_reasoning()
        if chunk.text or (chunk.logprobs and self.logprobs):
            if self._message is None:
                yield from self._open_message()
            part = self._message.content[0]
            logprobs = _logprobs(chunk.logprobs) if self.logprobs else []
            part.text += chunk.text
            part.logprobs.extend(logprobs)
            yield self._event(
                "response.output_text.delta",
                item_id=self._message.id,
                output_index=self._message_index,
                content_index=0,
                delta=chunk.text,
                logprobs=_delta_logprobs(logprobs),
            )
        for delta in self._calls.of(chunk) if calls else ():
            if delta.index and self.data.parallel_tool_calls is False:
                continue  # only the first call
            if delta.name is not None:
                yield from self._close_message("completed")
            yield from self._call_delta(delta)
        if chunk.finish_reason is None:
            return
        incomplete = chunk.finish_reason == "length"
        if self._message is None and not self._call_items:
            yield from self._open_message()  # nothing generated: one empty message, as OpenAI
        yield from self._close_message("incomplete" if incomplete else "completed")
        yield from self._close_call()
        prompt, completion = chunk.prompt_tokens or 0, chunk.completion_tokens or 0
        usage = s.ResponseUsage(
            input_tokens=prompt,
            input_tokens_details=s.InputTokensDetails(cached_tokens=chunk.cached_tokens or 0),
            output_tokens=completion,
            output_tokens_details=s.OutputTokensDetails(
                reasoning_tokens=chunk.reasoning_tokens or 0
            ),
            total_tokens=prompt + completion,
        )
        self.final = self.response(
            "incomplete" if incomplete else "completed", usage=usage, incomplete=incomplete
        )
        kind = "response.incomplete" if incomplete else "response.completed"
        yield self._event(kind, response=self.final)

    def failed(self, code: str, message: str) -> bytes:
        """The ``response.failed`` event that ends a stream broken after it started."""
        for item in self.output:
            if item.status == "in_progress":
                item.status = "incomplete"
        self._message = None
        response = self.response("failed", error=s.ResponseError(code=code, message=message))
        return self._event("response.failed", response=response)


def conversation_ref(conversation: str | s.ConversationRef | None):
    """The request's ``conversation`` as the response names it (``{"id"}``), else unset."""
    if conversation is None:
        return msgspec.UNSET
    if isinstance(conversation, str):
        return s.ConversationRef(id=conversation)
    return conversation


def listed(item) -> dict[str, Any]:
    """A context item as ``input_items`` lists it: with ``id`` and ``status``, message
    content as parts (``input_text``, or ``output_text`` for the assistant)."""
    if not isinstance(item, s.MessageItem):
        return msgspec.to_builtins(item)
    if item.role == "assistant":
        texts = (
            [item.content]
            if isinstance(item.content, str)
            else [
                part.text if isinstance(part, (s.InputText, s.OutputText)) else part.refusal
                for part in item.content
            ]
        )
        content = [msgspec.to_builtins(s.OutputTextContent(text=text)) for text in texts]
    elif isinstance(item.content, str):
        content = [{"type": "input_text", "text": item.content}]
    else:
        content = msgspec.to_builtins(item.content)
    return {
        "id": item.id,
        "type": "message",
        "role": item.role,
        "status": item.status,
        "content": content,
    }


def page_of(
    items: list[dict], limit: int, order: str, after: str | None, owner: str
) -> s.InputItemList:
    """One page of listed ``items`` (oldest first) of ``owner`` (a response or a
    conversation), in ``order``, after the item ``after``."""
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise ApiError(
                400, f"Invalid 'after': no item of '{owner}' has id '{after}'.", param="after"
            )
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return s.InputItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(items) > limit,
    )
