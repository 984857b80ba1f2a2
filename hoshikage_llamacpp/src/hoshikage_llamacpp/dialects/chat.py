"""Chat prompts and tool calls.

Which template renders a chat, first match wins:

1. the model's ``chat_template`` option (a Jinja string);
2. its ``chat_format`` option (a built-in format, see :mod:`.chat_formats`);
3. the GGUF metadata ``tokenizer.chat_template``;
4. the ``plain`` format (``User: ...`` / ``Assistant:``), for base models such as Gemma 3 270M.

Tools: a template that mentions ``tools`` gets them as the Hugging Face convention passes
them. Any other template gets a system message describing the tools and asking for
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. The model's answer is read back
by the family's parser (:mod:`.tools.calls`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from hoshikage_core.errors import InvalidRequest
from hoshikage_core.protocol import join_text

from .chat_formats import CHAT_FORMATS


@attrs.frozen
class TemplateChoice:
    template: str
    stops: tuple[str, ...]
    #: Where it came from, for logs and status: e.g. "GGUF tokenizer.chat_template".
    origin: str


def choose_template(options, metadata: Mapping[str, Any]) -> TemplateChoice:
    """Apply the resolution order in the module docstring."""
    if options.chat_template:
        return TemplateChoice(options.chat_template, (), "chat_template option")
    if options.chat_format:
        template, stops = CHAT_FORMATS[options.chat_format]
        return TemplateChoice(template, stops, f"chat_format {options.chat_format!r}")
    gguf_template = metadata.get("tokenizer.chat_template")
    if isinstance(gguf_template, str) and gguf_template.strip():
        return TemplateChoice(gguf_template, (), "GGUF tokenizer.chat_template")
    template, stops = CHAT_FORMATS["plain"]
    return TemplateChoice(template, stops, "plain fallback (no chat template)")


class ChatRenderer:
    """Renders OpenAI-style messages to a prompt string with one Jinja template
    (:mod:`.templating`: sandboxed, with llama.cpp's polyfills)."""

    def __init__(
        self,
        choice: TemplateChoice,
        bos_token: str,
        eos_token: str,
        kwargs: Mapping[str, Any] | None = None,
    ):
        from .templating import Template

        self.choice = choice
        self.stops = choice.stops
        #: Template variables every render gets (the model's ``chat_template_kwargs``).
        self.kwargs = dict(kwargs or {})
        # Compiles the template: a syntax error surfaces here, at load time.
        self.template = Template(choice.template, bos_token=bos_token, eos_token=eos_token)
        self.supports_tools = self.template.supports_tools or "tools" in choice.template

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text; a template error (e.g. roles that must alternate) is the
        client's :class:`InvalidRequest`. ``kwargs`` (a request's ``chat_template_kwargs``)
        go over the model's own."""
        msgs = normalize_messages(messages)
        if tools and not self.supports_tools:
            msgs = _with_tools_in_text(msgs, tools)
            tools = None
        variables = {**self.kwargs, **(kwargs or {})}
        for reserved in ("messages", "tools", "add_generation_prompt"):
            if reserved in variables:
                raise InvalidRequest(
                    f"chat_template_kwargs may not set {reserved!r}", "chat_template_kwargs"
                )
        try:
            return self.template.render(msgs, tools, add_generation_prompt=True, **variables)
        except Exception as exc:  # a template may raise anything (raise_exception included)
            raise InvalidRequest(
                f"The model's chat template cannot render these messages: {exc}", "messages"
            ) from None


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as templates expect them: string content (text parts joined by the core's
    one rule, :func:`~hoshikage_core.protocol.join_text`), the
    ``developer`` role as ``system``, and tool-call arguments as objects."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a 'role'", "messages")
        msg = dict(message)
        if msg["role"] == "developer":
            msg["role"] = "system"
        msg["content"] = _text_content(msg.get("content"), i)
        if msg.get("tool_calls"):
            msg["tool_calls"] = [_call_with_object_arguments(call) for call in msg["tool_calls"]]
        if msg.get("reasoning_content") and "thinking" not in msg:
            msg["thinking"] = msg["reasoning_content"]  # gpt-oss's template reads this name
        out.append(msg)
    return out


def _text_content(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind != "text":
                raise InvalidRequest(
                    f"messages[{index}].content: this model reads text only, not {kind!r} parts",
                    "messages",
                )
            texts.append(str(part.get("text", "")))
        return join_text(texts)
    raise InvalidRequest(
        f"messages[{index}].content must be a string or a list of parts", "messages"
    )


def _call_with_object_arguments(call: Any) -> Any:
    """Hugging Face templates expect ``function.arguments`` as an object, OpenAI sends a
    JSON string: decode it when it is one."""
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except ValueError:
            pass
    return {**call, "function": function}


def tools_instructions(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system text that teaches a template without tool support to call tools."""
    specs = "\n".join(json.dumps(tool.get("function", tool), ensure_ascii=False) for tool in tools)
    return (
        "You can call the following tools. To call one, reply with nothing but\n"
        '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>\n'
        "Tools:\n" + specs
    )


def _with_tools_in_text(
    msgs: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Put the tool instructions in the system message and earlier calls in plain text."""
    instructions = tools_instructions(tools)
    out = []
    for msg in msgs:
        if msg.get("tool_calls"):
            calls = "".join(
                "<tool_call>"
                + json.dumps(
                    {
                        "name": c["function"].get("name"),
                        "arguments": c["function"].get("arguments"),
                    },
                    ensure_ascii=False,
                )
                + "</tool_call>"
                for c in msg["tool_calls"]
                if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping)
            )
            msg = {"role": msg["role"], "content": msg["content"] + calls}
        out.append(msg)
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + instructions}
    else:
        out.insert(0, {"role": "system", "content": instructions})
    return out


def tool_names(tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    names = []
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidRequest(
                "each tool must be {'type': 'function', 'function': {'name': ...}}", "tools"
            )
        names.append(function["name"])
    return names


def forced_tools(
    tools: Sequence[Mapping[str, Any]], tool_choice: str | Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The tools one of which ``tool_choice`` forces a call of: ``"required"`` (any of
    them) or ``{"type": "function", "function": {"name": ...}}`` (that one)."""
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [tool for tool in tools if tool["function"]["name"] == name]
        if not chosen:
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not in tools", "tool_choice"
            )
        return chosen[:1]
    return list(tools)
