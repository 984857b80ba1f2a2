"""Chat templates rendered as llama.cpp renders them: a sandboxed Jinja with the
extensions real templates use, and polyfills for what a template lacks.

The environment is Hugging Face's (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``,
``{% generation %}`` ignored, ``tojson`` without ASCII escapes, ``raise_exception``,
``strftime_now``), on Jinja's :class:`~jinja2.sandbox.SandboxedEnvironment`: templates
may change their own lists and dicts (Kimi-K2's ``list.append``), but attributes that
reach Python internals (``__class__``, ``__globals__``, ...) are refused and there is no
loader, so no file can be read.

What a template can do is probed once, at load time, by rendering small conversations
with marker strings and looking for them in the output (as llama.cpp's ``minja`` caps):
a system role, tools, tool calls, tool results, and whether arguments must be objects or
strings. A conversation is then rewritten for what is missing, as llama.cpp does:

* no system role: the system text is folded into the first user turn;
* no tool calls: an assistant's calls are written into its content as JSON;
* no tool results: a tool result becomes a user turn ``{"tool_response": {...}}``;
* roles that must alternate: consecutive turns of one role are merged.

When a template still raises for a conversation, :meth:`Template.render` walks the same
rewrites from the least to the most, so the first one that renders wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

#: Marker strings for the capability probes.
_SYS, _USER, _TOOL, _CALL, _ARG, _RESULT = (
    "<<probe-system>>",
    "<<probe-user>>",
    "probe_tool_name",
    "probe_call_name",
    "probe-argument-value",
    "<<probe-result>>",
)


class TemplateRaised(Exception):
    """``raise_exception`` inside a template: the template refuses the conversation."""


def environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import SandboxedEnvironment

    class IgnoreGeneration(jinja2.ext.Extension):
        """Hugging Face's ``{% generation %}`` block: its body, rendered as is."""

        tags = {"generation"}

        def parse(self, parser):
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = SandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[IgnoreGeneration, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _raise(message: str):
    raise TemplateRaised(message)


def _plain(value: Any) -> Any:
    """Generators and other iterables (``map``, ``selectattr``) as lists, for JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return value


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    from markupsafe import Markup

    text = json.dumps(
        _plain(value),
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
    )
    return Markup(text)


class Template:
    """One compiled chat template with its probed capabilities."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = environment().from_string(source)
        self.supports_system = self._shows(
            [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}], _SYS
        )
        self.supports_tools = self._shows(
            [{"role": "user", "content": _USER}], _TOOL, tools=[_probe_tool()]
        )
        self.object_arguments = self._shows(_call_probe(as_object=True), _ARG)
        self.string_arguments = self._shows(_call_probe(as_object=False), _ARG)
        self.supports_tool_calls = self.object_arguments or self.string_arguments
        self.supports_tool_results = self._shows(_result_probe(), _RESULT)

    def _shows(self, messages, marker: str, tools=None) -> bool:
        try:
            return marker in self.raw(messages, tools=tools, add_generation_prompt=False)
        except Exception:
            return False

    def raw(self, messages, tools=None, add_generation_prompt=True, **kwargs) -> str:
        """The template applied to ``messages`` as they are."""
        if tools and "parameter_definitions" in self.source:
            tools = [_cohere_tool(tool) for tool in tools]
        variables = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": add_generation_prompt,
            # What llama.cpp passes Firefunction v2's template.
            "functions": json.dumps(tools, indent=2) if tools else "",
            "datetime": datetime.now().strftime("%b %d %Y %H:%M:%S GMT"),
            **kwargs,
            "messages": messages,
            "tools": tools,
        }
        return self._template.render(**variables)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs,
    ) -> str:
        """The prompt of ``messages``, rewritten for what this template lacks; when the
        template still raises, the further rewrites are tried in turn and the first error
        is raised if none renders."""
        first_error: Exception | None = None
        tools = [_complete_tool(tool) for tool in tools] if tools else None
        for level in range(len(_LEVELS)):
            msgs = self.adapt(messages, level)
            try:
                return self.raw(msgs, tools=list(tools) if tools else None, **kwargs)
            except Exception as exc:  # a template may raise anything; the first one tells
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    def adapt(self, messages: Sequence[Mapping[str, Any]], level: int = 0) -> list[dict]:
        """``messages`` rewritten for this template: level 0 for what the probes found
        missing, then each level adds the next rewrite of :data:`_LEVELS` regardless."""
        forced = set(_LEVELS[: level + 1])
        msgs = [dict(m) for m in messages]
        if "arguments" in forced:
            msgs = _arguments(msgs, as_object=self.object_arguments or not self.string_arguments)
        if not self.supports_tool_calls or "tool_calls" in forced:
            msgs = _calls_in_content(msgs)
        if not self.supports_tool_results or "tool_results" in forced:
            msgs = _results_as_user(msgs)
        if not self.supports_system or "system" in forced:
            msgs = _fold_system(msgs)
        if "alternate" in forced:
            msgs = _merge_runs(msgs)
        return msgs


#: The rewrites in order (level 0 applies only what the probes found missing).
_LEVELS = ("arguments", "system", "tool_calls", "tool_results", "alternate")


def _complete_tool(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """A function tool with the keys templates read without checking (gpt-oss writes
    ``tool.description``): an empty description and an empty object schema if absent."""
    function = tool.get("function")
    if not isinstance(function, Mapping):
        return tool
    function = {"description": "", "parameters": {"type": "object", "properties": {}}, **function}
    return {**tool, "function": function}


def _cohere_tool(tool: Mapping[str, Any]) -> dict:
    """A tool in Command R+'s own form (``name``, ``description``,
    ``parameter_definitions``), which its tool-use template reads."""
    function = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
    parameters = function.get("parameters") or {}
    required = set(parameters.get("required") or ())
    return {
        **tool,
        "name": function.get("name", ""),
        "description": function.get("description", ""),
        "parameter_definitions": {
            name: {
                "description": spec.get("description", ""),
                "type": spec.get("type", "string")
                if isinstance(spec.get("type"), str)
                else "string",
                "required": name in required,
            }
            for name, spec in (parameters.get("properties") or {}).items()
            if isinstance(spec, Mapping)
        },
    }


def _probe_tool() -> dict:
    return {
        "type": "function",
        "function": {
            "name": _TOOL,
            "description": "probe",
            "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }


def _call_probe(as_object: bool) -> list[dict]:
    arguments: Any = {"a": _ARG}
    if not as_object:
        arguments = json.dumps(arguments)
    call = {"id": "call_1", "type": "function", "function": {"name": _CALL, "arguments": arguments}}
    return [
        {"role": "user", "content": _USER},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]


def _result_probe() -> list[dict]:
    return [
        *_call_probe(as_object=True),
        {"role": "tool", "tool_call_id": "call_1", "name": _CALL, "content": _RESULT},
    ]


def _arguments(msgs: list[dict], as_object: bool) -> list[dict]:
    out = []
    for msg in msgs:
        calls = msg.get("tool_calls")
        if calls:
            fixed = []
            for call in calls:
                function = dict(call.get("function") or {})
                arguments = function.get("arguments")
                if as_object and isinstance(arguments, str):
                    try:
                        function["arguments"] = json.loads(arguments)
                    except ValueError:
                        pass
                elif not as_object and not isinstance(arguments, str):
                    function["arguments"] = json.dumps(arguments, ensure_ascii=False)
                fixed.append({**call, "function": function})
            msg = {**msg, "tool_calls": fixed}
        out.append(msg)
    return out


def _calls_in_content(msgs: list[dict]) -> list[dict]:
    """llama.cpp's polyfill: the calls as ``{"tool_calls": [...], "content": ...}`` JSON."""
    out = []
    for msg in msgs:
        calls = msg.get("tool_calls")
        if msg.get("role") == "assistant" and calls:
            body: dict[str, Any] = {
                "tool_calls": [
                    {
                        "name": (c.get("function") or {}).get("name"),
                        "arguments": _as_object((c.get("function") or {}).get("arguments")),
                        **({"id": c["id"]} if c.get("id") else {}),
                    }
                    for c in calls
                ]
            }
            if msg.get("content"):
                body["content"] = msg["content"]
            msg = {k: v for k, v in msg.items() if k != "tool_calls"}
            msg["content"] = json.dumps(body, ensure_ascii=False, indent=2)
        out.append(msg)
    return out


def _as_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _results_as_user(msgs: list[dict]) -> list[dict]:
    """llama.cpp's polyfill: a tool result as a user turn ``{"tool_response": {...}}``."""
    out = []
    for msg in msgs:
        if msg.get("role") == "tool":
            response: dict[str, Any] = {}
            if msg.get("name"):
                response["tool"] = msg["name"]
            response["content"] = msg.get("content", "")
            if msg.get("tool_call_id"):
                response["tool_call_id"] = msg["tool_call_id"]
            msg = {
                "role": "user",
                "content": json.dumps({"tool_response": response}, ensure_ascii=False, indent=2),
            }
        out.append(msg)
    return out


def _fold_system(msgs: list[dict]) -> list[dict]:
    """System turns folded into the next user turn (or made one when none follows)."""
    out: list[dict] = []
    pending: list[str] = []
    for msg in msgs:
        if msg.get("role") == "system":
            pending.append(str(msg.get("content") or ""))
            continue
        if pending and msg.get("role") == "user":
            msg = {**msg, "content": "\n\n".join([*pending, str(msg.get("content") or "")])}
            pending = []
        out.append(msg)
    if pending:
        out.insert(0, {"role": "user", "content": "\n\n".join(pending)})
    return out


def _merge_runs(msgs: list[dict]) -> list[dict]:
    """Consecutive turns of one role (without tool calls) merged into one."""
    out: list[dict] = []
    for msg in msgs:
        last = out[-1] if out else None
        if (
            last is not None
            and last.get("role") == msg.get("role")
            and not last.get("tool_calls")
            and not msg.get("tool_calls")
            and msg.get("role") in ("user", "system")
        ):
            out[-1] = {
                **last,
                "content": f"{last.get('content') or ''}\n\n{msg.get('content') or ''}",
            }
        else:
            out.append(msg)
    return out
