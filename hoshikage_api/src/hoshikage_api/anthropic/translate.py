"""From an Anthropic Messages request to the core's :class:`GenerationRequest`, and from the
core's chunks back to Anthropic's content blocks.

The prompt side owns the normalisation of Anthropic content: text blocks are joined into
one string per message by the core's one rule (:func:`~hoshikage_core.protocol.join_text`),
so the backend receives plain string content.

* ``system`` (a string or text blocks) becomes a leading ``system`` message, and a
  ``system`` turn inside ``messages`` a ``system`` message where it stands;
* ``context_management`` edits are applied first (:mod:`.context`);
* a ``user`` message's ``tool_result`` blocks become ``tool`` messages (with
  ``tool_call_id``), its text and ``search_result`` blocks one ``user`` message, in their
  order; a ``tool_reference`` in a result loads the deferred tool it names;
* an ``assistant`` message's ``tool_use`` blocks become OpenAI-shaped ``tool_calls``;
* ``thinking`` blocks of an assistant turn are its ``reasoning_content`` (their text, or
  what this server's signature carries: :mod:`.signature`); ``image`` blocks (base64, in a
  message or a ``tool_result``) stand as the media marker where they were, their images
  decoded by :mod:`..kernel.media`; ``document`` blocks (a PDF's or a text file's text, read
  by :mod:`..kernel.documents`) likewise.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from hoshikage_core.protocol import GenerationRequest, ResponseFormat, join_text

from ..kernel.errors import invalid
from ..kernel.job import Job, arguments_object, keep_alive, speculative
from ..kernel.media import Collector, base64_bytes
from . import context
from . import schemas as s
from .signature import restore

#: ``finish_reason`` of the core -> Anthropic's ``stop_reason`` (``stop`` is decided apart).
STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


def _document(block: s.DocumentBlock, where: str, images: Collector | None) -> str:
    """A document block's marker (the document kept in ``images``, its text read there)."""
    if images is None:
        raise invalid(f"Invalid '{where}': documents are not taken here.", where)
    source = block.source
    kind = source.get("type")
    field = f"{where}.source"
    if kind == "base64":
        data = source.get("data")
        if not isinstance(data, str):
            raise invalid(f"Invalid '{field}.data': expected base64 text.", f"{field}.data")
        raw = base64_bytes(data, f"{field}.data", "document")
        media_type = source.get("media_type")
        return images.add_document(
            raw, media_type, f"{field}.data", title=block.title, context=block.context
        )
    if kind in ("text", "content"):
        content = source.get("data" if kind == "text" else "content")
        if isinstance(content, list):
            texts = [b.get("text") for b in content if isinstance(b, dict)]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise invalid(
                    f"Invalid '{field}.content': expected text blocks.", f"{field}.content"
                )
            content = join_text(texts)
        if not isinstance(content, str):
            name = "data" if kind == "text" else "content"
            raise invalid(f"Invalid '{field}.{name}': expected text.", f"{field}.{name}")
        return images.add_document(
            content.encode(), "text/plain", field, title=block.title, context=block.context
        )
    if kind == "url":
        raise invalid(
            f"Invalid '{field}': documents are not fetched from URLs here; send the file"
            ' itself ({"type": "base64", "media_type": "application/pdf", "data": ...}).',
            field,
        )
    raise invalid(
        f'Invalid \'{field}.type\': expected "base64", "text" or "content"'
        " (no files are stored here).",
        f"{field}.type",
    )


def _media(block, where: str, images: Collector | None) -> str | None:
    """An image or document block's marker (what it holds kept in ``images``); None for
    other blocks. Images and documents where none are taken (``system``) are refused."""
    if isinstance(block, s.DocumentBlock):
        return _document(block, where, images)
    if not isinstance(block, s.ImageBlock):
        return None
    if images is None:
        raise invalid(f"Invalid '{where}': images are not taken here.", where)
    source = block.source
    kind = source.get("type")
    if kind == "base64":
        data = source.get("data")
        if not isinstance(data, str):
            raise invalid(
                f"Invalid '{where}.source.data': expected base64 text.", f"{where}.source.data"
            )
        return images.add_base64(data, f"{where}.source.data")
    if kind == "url":
        return images.add_url(source.get("url"), f"{where}.source.url")
    raise invalid(
        f'Invalid \'{where}.source.type\': expected "base64" or "url".', f"{where}.source.type"
    )


def _text(block) -> str:
    """A text-like block's text: a search result as its title, source and text."""
    if isinstance(block, s.SearchResultBlock):
        head = [t for t in (block.title, block.source) if t]
        return join_text([*head, *(b.text for b in block.content)])
    if isinstance(block, s.ToolReferenceBlock):
        return f"Tool loaded: {block.tool_name}"
    return block.text


def _texts(blocks: Sequence, where: str, images: Collector | None = None) -> str:
    """Text blocks (and image markers) joined with newlines; anything else is refused."""
    texts = []
    for j, block in enumerate(blocks):
        marker = _media(block, f"{where}[{j}]", images)
        texts.append(_text(block) if marker is None else marker)
    return join_text(texts)


def _tool_result(block: s.ToolResultBlock, where: str, images: Collector | None) -> dict[str, Any]:
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif images is None:
        text = _texts(content, f"{where}.content", images)
    else:
        with images.from_tool():  # what a tool read: a note where the model cannot take it
            text = _texts(content, f"{where}.content", images)
    if block.is_error:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _tool_call(block: s.ToolUseBlock) -> dict[str, Any]:
    return {
        "id": block.id,
        "type": "function",
        "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)},
    }


def _user(message: s.MessageParam, i: int, images: Collector | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            out.append({"role": "user", "content": join_text(texts)})
            texts.clear()

    for j, block in enumerate(message.content):
        where = f"messages[{i}].content[{j}]"
        marker = _media(block, where, images)
        if marker is not None:
            texts.append(marker)
        elif isinstance(block, (s.TextBlock, s.SearchResultBlock)):
            texts.append(_text(block))
        elif isinstance(block, s.ToolResultBlock):
            flush()
            out.append(_tool_result(block, where, images))
        elif isinstance(block, s.ToolUseBlock):
            raise invalid(
                f"Invalid '{where}': tool_use blocks belong in assistant messages.", where
            )
        # thinking blocks: not part of the prompt
    flush()
    return out or [{"role": "user", "content": ""}]


def _assistant(message: s.MessageParam, i: int, images: Collector | None) -> dict[str, Any]:
    texts, calls, thoughts = [], [], []
    for j, block in enumerate(message.content):
        where = f"messages[{i}].content[{j}]"
        marker = _media(block, where, images)
        if marker is not None:
            texts.append(marker)
        elif isinstance(block, s.TextBlock):
            texts.append(block.text)
        elif isinstance(block, s.ThinkingBlock):
            thoughts.append(block.thinking or restore(block.signature) or "")
        elif isinstance(block, s.ToolUseBlock):
            calls.append(_tool_call(block))
        elif isinstance(block, s.ToolResultBlock):
            raise invalid(f"Invalid '{where}': tool_result blocks belong in user messages.", where)
        elif isinstance(block, s.SearchResultBlock):
            texts.append(_text(block))
    out: dict[str, Any] = {"role": "assistant", "content": join_text(texts)}
    if calls:
        out["tool_calls"] = calls
    if any(thoughts):
        out["reasoning_content"] = join_text(thoughts)
    return out


def messages(data: s.Conversation, images: Collector | None = None) -> tuple[dict[str, Any], ...]:
    """The conversation as the core's chat messages (string content, OpenAI roles); image
    blocks go to ``images``."""
    out: list[dict[str, Any]] = []
    if data.system is not None:
        system = data.system if isinstance(data.system, str) else _texts(data.system, "system")
        if system:
            out.append({"role": "system", "content": system})
    for i, message in enumerate(context.apply(data.messages, data.context_management)):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "system":
            out.append({"role": "system", "content": _texts(message.content, f"messages[{i}]")})
        elif message.role == "user":
            out.extend(_user(message, i, images))
        else:
            out.append(_assistant(message, i, images))
    return tuple(out)


def _referenced(data: s.Conversation) -> set[str]:
    """The tools named by ``tool_reference`` blocks in the conversation's tool results."""
    names = set()
    for message in data.messages:
        for block in () if isinstance(message.content, str) else message.content:
            if isinstance(block, s.ToolResultBlock) and isinstance(block.content, list):
                names |= {b.tool_name for b in block.content if isinstance(b, s.ToolReferenceBlock)}
    return names


def _tools(data: s.Conversation) -> tuple[dict[str, Any], ...] | None:
    """The tools offered in the prompt: those with ``defer_loading`` only once a
    ``tool_reference`` has loaded them (or ``tool_choice`` names them)."""
    if not data.tools:
        return None
    loaded = _referenced(data)
    if isinstance(data.tool_choice, s.ToolChoiceTool):
        loaded.add(data.tool_choice.name)
    tools = []
    for i, tool in enumerate(data.tools):
        if tool.defer_loading and tool.name not in loaded:
            continue
        if tool.type not in (None, "custom"):
            raise invalid(
                f"Invalid 'tools[{i}]': the server tool type {tool.type!r} is not supported; "
                "only client tools (name, description, input_schema) are.",
                f"tools[{i}].type",
            )
        if tool.input_schema is None:
            raise invalid(
                f"Invalid 'tools[{i}]': 'input_schema' is required.", f"tools[{i}].input_schema"
            )
        function = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        if tool.strict:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    return tuple(tools) or None


def _tool_choice(data: s.Conversation) -> str | dict[str, Any] | None:
    choice = data.tool_choice
    if choice is None:
        return None
    if isinstance(choice, s.ToolChoiceNone):
        return "none"
    if not data.tools:
        raise invalid("'tool_choice' is only allowed when 'tools' are given.", "tool_choice")
    if isinstance(choice, s.ToolChoiceAuto):
        return "auto"
    if isinstance(choice, s.ToolChoiceAny):
        return "required"
    if choice.name not in {tool.name for tool in data.tools}:
        raise invalid(
            f"Invalid 'tool_choice.name': no tool is named {choice.name!r}.", "tool_choice.name"
        )
    return {"type": "function", "function": {"name": choice.name}}


def _request(data: s.Conversation, images: Collector | None, **sampling) -> GenerationRequest:
    return GenerationRequest(
        messages=messages(data, images),
        tools=_tools(data),
        tool_choice=_tool_choice(data),
        **_thinking(data.thinking, data.output_config),
        **sampling,
    )


#: ``output_config.effort`` as the core's effort levels (the templates' ``reasoning_effort``).
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def _thinking(thinking: dict[str, Any] | None, config: s.OutputConfig | None) -> dict[str, Any]:
    """``thinking`` and ``output_config.effort`` as the core's ``reasoning`` (off, on, or an
    effort level) and ``reasoning_budget``."""
    effort = EFFORTS.get(config.effort) if config is not None and config.effort else None
    if thinking is None:
        return {"reasoning": effort} if effort else {}
    kind = thinking.get("type")
    if kind == "disabled":
        return {"reasoning": False}
    if kind not in ("enabled", "adaptive"):
        raise invalid(
            'Invalid \'thinking.type\': expected "enabled", "adaptive" or "disabled".',
            "thinking.type",
        )
    budget = thinking.get("budget_tokens")
    if kind == "enabled" and (
        not isinstance(budget, int) or isinstance(budget, bool) or budget < 1
    ):
        raise invalid(
            "Invalid 'thinking.budget_tokens': a positive integer is required.",
            "thinking.budget_tokens",
        )
    display = thinking.get("display")
    if display not in (None, "summarized", "omitted"):
        raise invalid(
            'Invalid \'thinking.display\': expected "summarized" or "omitted".', "thinking.display"
        )
    return {
        "reasoning": effort or True,
        "reasoning_budget": budget if kind == "enabled" else None,
    }


def omits_thinking(data: s.Conversation) -> bool:
    """``thinking.display: "omitted"``: thinking blocks go out without their text."""
    return isinstance(data.thinking, dict) and data.thinking.get("display") == "omitted"


def _response_format(config: s.OutputConfig | None) -> ResponseFormat | None:
    if config is None or config.format is None:
        return None
    return ResponseFormat(type="json_schema", schema=config.format.schema, strict=True)


def messages_job(data: s.MessagesRequest, images: Collector | None = None) -> Job:
    """The job of a Messages request; its image blocks go to ``images``."""
    if data.mcp_servers:
        raise invalid(
            "Invalid 'mcp_servers': this server connects to no MCP server; run them in the "
            "client and give their tools as client tools.",
            "mcp_servers",
        )
    request = _request(
        data,
        images,
        # 0: one token read and dropped (MessageFormat.silent), as count_tokens reads a prompt.
        max_tokens=data.max_tokens or 1,
        temperature=data.temperature,
        top_p=data.top_p,
        top_k=data.top_k,
        stop=tuple(data.stop_sequences or ()),
        response_format=_response_format(data.output_config),
        grammar=data.grammar or None,
        speculative=speculative(data.speculative),
    )
    return Job(
        endpoint="messages",
        model=data.model,
        keep_alive=keep_alive(data.keep_alive),
        requests=(request,),
        stream=data.stream,
    )


def count_tokens_job(data: s.CountTokensRequest, images: Collector | None = None) -> Job:
    """The same prompt as :func:`messages_job` would build, run for one token: the backend
    reports the prompt's exact token count (chat template, tools and BOS included), which
    only rendering the prompt the same way can give. The prompt then sits in the KV cache,
    so the real request that usually follows does not read it again."""
    return Job(
        endpoint="count_tokens",
        model=data.model,
        keep_alive=None,
        requests=(_request(data, images, max_tokens=1, temperature=0.0),),
    )


# ---- output -------------------------------------------------------------------------------


def message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def _tool_use_id(call: Mapping[str, Any]) -> str:
    raw = str(call.get("id") or "")
    if raw.startswith("call_"):
        raw = raw[len("call_") :]
    return "toolu_" + (raw or uuid.uuid4().hex[:24])


def tool_uses(calls: Sequence[Mapping[str, Any]] | None) -> list[s.ToolUseContent]:
    """The backend's OpenAI-shaped tool calls as ``tool_use`` blocks."""
    out = []
    for call in calls or ():
        function = call.get("function") or {}
        out.append(
            s.ToolUseContent(
                id=_tool_use_id(call),
                name=str(function.get("name", "")),
                input=arguments_object(function.get("arguments")),
            )
        )
    return out


def stop_reason(finish: str | None, stop_sequence: str | None) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` for a generation's ``finish_reason`` and the stop
    string that ended it (:attr:`Chunk.stop_sequence`): ``stop_sequence`` naming it when one
    did, ``end_turn`` when the model ended its turn itself."""
    if finish in STOP_REASONS:
        return STOP_REASONS[finish], None
    if stop_sequence is not None:
        return "stop_sequence", stop_sequence
    return "end_turn", None
