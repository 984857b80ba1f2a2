"""The Responses API's ``tools`` as the functions the model is offered, and its calls back.

* A ``function`` tool is offered as it is.
* A ``namespace`` tool (Codex's ``multi_agent_v1``...) groups function and custom tools; each
  is offered as ``<namespace>.<name>`` (a dot, which no plain function name may hold, as
  gpt-oss's own ``functions.<name>``), and a call of it comes back as a ``function_call`` (or
  ``custom_tool_call``) with ``name`` and ``namespace`` apart, as the client declared them.
* A ``custom`` (free-form) tool is offered as a function of one string argument, ``input``;
  its call comes back as a ``custom_tool_call`` whose ``input`` is that string. Its
  ``format``: ``text`` (any text), a ``regex`` grammar (the string's ``pattern``, enforced
  from the call marker on as a strict tool's schema is), or a ``lark`` grammar (accepted, not
  enforced: no Lark grammar engine here).
* Any other type is a tool that runs where the API provider runs it (``web_search``,
  ``file_search``, ``computer_use_preview``, ``code_interpreter``, ``image_generation``,
  ``mcp``...) or one whose call items this server does not produce (``local_shell``,
  ``shell``, ``apply_patch``, ``tool_search``). None of them can run here: none is offered to
  the model, and each is listed in the response's ``ignored_tools`` (an extension), so the
  client can tell. A ``tool_choice`` that names one is a 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from ..kernel.errors import invalid
from . import schemas as s

#: A custom tool's one argument, in the function the model is offered.
CUSTOM_ARGUMENT = "input"


def offered(name: str, namespace: str | None = None) -> str:
    """The name the model knows a tool by: ``namespace.name`` for a namespace's tool."""
    return f"{namespace}.{name}" if namespace else name


@attrs.frozen
class Target:
    """What a name offered to the model stands for."""

    kind: str  # "function" or "custom"
    name: str
    namespace: str | None = None


@attrs.frozen
class Tools:
    """The request's tools, as offered to the model (chat's function shape), what each
    offered name stands for, and the tools that are not offered."""

    functions: tuple[dict[str, Any], ...] = ()
    targets: Mapping[str, Target] = attrs.Factory(dict)
    ignored: tuple[dict[str, Any], ...] = ()

    def target(self, offered: str) -> Target:
        """What a called name stands for (a name the model made up: a plain function)."""
        return self.targets.get(offered) or Target("function", offered)

    def find(self, name: str, namespace: str | None, kind: str | None = None) -> str | None:
        """The offered name of tool ``name`` (in ``namespace``), if the request has it."""
        name_ = offered(name, namespace)
        target = self.targets.get(name_)
        if target is None and namespace is None and "." in name:
            target = self.targets.get(name)  # the flattened form, "ns.name"
            name_ = name
        if target is None or (kind is not None and target.kind != kind):
            return None
        return name_


def _function(tool: dict[str, Any] | s.ResponsesToolParam, where: str, namespace: str | None):
    """``(offered name, chat function, target)`` for a function or custom tool."""
    get = tool.get if isinstance(tool, dict) else lambda key, default=None: getattr(tool, key)
    kind = get("type")
    name = get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"Invalid '{where}': a {kind} tool needs a 'name'.", f"{where}.name")
    if "." in name:
        raise invalid(
            f"Invalid '{where}.name': a tool name may not hold a '.' ({name!r}).", f"{where}.name"
        )
    function: dict[str, Any] = {"name": offered(name, namespace)}
    description = get("description")
    if isinstance(description, str) and description:
        function["description"] = description
    if kind == "function":
        parameters = get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid(
                f"Invalid '{where}.parameters': expected an object.", f"{where}.parameters"
            )
        function["parameters"] = parameters or {"type": "object", "properties": {}}
        if get("strict") is True:
            function["strict"] = True
    else:
        function.update(_custom_parameters(get("format"), f"{where}.format"))
    return function["name"], function, Target(kind, name, namespace)


def _custom_parameters(fmt: Any, where: str) -> dict[str, Any]:
    """A custom tool's function parameters: one string, ``input``, constrained by a regex."""
    string: dict[str, Any] = {"type": "string"}
    strict = False
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "grammar"):
            raise invalid(
                f"Invalid '{where}': expected {{'type': 'text'}} or {{'type': 'grammar', "
                "'syntax', 'definition'}.",
                f"{where}.type",
            )
        if fmt["type"] == "grammar":
            syntax, definition = fmt.get("syntax"), fmt.get("definition")
            if syntax not in ("regex", "lark"):
                raise invalid(
                    f"Invalid '{where}.syntax': expected 'regex' or 'lark', got {syntax!r}.",
                    f"{where}.syntax",
                )
            if not isinstance(definition, str) or not definition:
                raise invalid(
                    f"Invalid '{where}.definition': expected the grammar's text.",
                    f"{where}.definition",
                )
            if syntax == "regex":
                string["pattern"] = "^(" + definition + ")$"
                strict = True
    parameters = {
        "type": "object",
        "properties": {CUSTOM_ARGUMENT: string},
        "required": [CUSTOM_ARGUMENT],
        "additionalProperties": False,
    }
    return {"parameters": parameters, **({"strict": True} if strict else {})}


def _ignored(tool: s.ResponsesToolParam, index: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index, "type": tool.type}
    label = tool.server_label or tool.name
    if label:
        entry["name"] = label
    return entry


def tools_of(data: s.CreateResponse) -> Tools:
    """The request's tools (see the module doc); a malformed one is a 400 naming it."""
    functions: list[dict[str, Any]] = []
    targets: dict[str, Target] = {}
    ignored: list[dict[str, Any]] = []

    def add(offered: str, function: dict[str, Any], target: Target, where: str) -> None:
        if offered in targets:
            raise invalid(f"Invalid '{where}': two tools are named {offered!r}.", f"{where}.name")
        targets[offered] = target
        functions.append({"type": "function", "function": function})

    for i, tool in enumerate(data.tools or ()):
        where = f"tools[{i}]"
        if tool.type in ("function", "custom"):
            add(*_function(tool, where, None), where)
        elif tool.type == "namespace":
            if not tool.name or "." in tool.name:
                raise invalid(
                    f"Invalid '{where}.name': a namespace needs a name without a '.'.",
                    f"{where}.name",
                )
            if not tool.tools:
                raise invalid(
                    f"Invalid '{where}.tools': a namespace needs its function or custom tools.",
                    f"{where}.tools",
                )
            for j, member in enumerate(tool.tools):
                inner = f"{where}.tools[{j}]"
                if not isinstance(member, dict) or member.get("type") not in ("function", "custom"):
                    kind = member.get("type") if isinstance(member, dict) else None
                    raise invalid(
                        f"Invalid '{inner}.type': a namespace holds function and custom tools, "
                        f"got {kind!r}.",
                        f"{inner}.type",
                    )
                add(*_function(member, inner, tool.name), inner)
        else:
            ignored.append(_ignored(tool, i))
    return Tools(tuple(functions), targets, tuple(ignored))


def custom_input(arguments: str) -> str:
    """A custom tool call's ``input`` from the arguments of the function the model called:
    the ``input`` string (the raw arguments when the model wrote something else)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_ARGUMENT), str):
        return value[CUSTOM_ARGUMENT]
    return arguments


def custom_arguments(text: str) -> str:
    """The arguments of the offered function for a custom tool call's ``input``."""
    return json.dumps({CUSTOM_ARGUMENT: text}, ensure_ascii=False)


# ---- tool_choice --------------------------------------------------------------------------

#: ``tool_choice`` types that name a tool which cannot run here (see the module doc).
HOSTED_CHOICES = {
    "file_search",
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "computer",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "code_interpreter",
    "mcp",
    "shell",
    "local_shell",
    "apply_patch",
    "programmatic_tool_calling",
    "tool_search",
}


def _named(tools: Tools, entry: Mapping[str, Any], param: str) -> str:
    """The offered name of a function or custom tool a choice names."""
    kind, name, namespace = entry.get("type"), entry.get("name"), entry.get("namespace")
    if kind in HOSTED_CHOICES:
        raise _hosted_choice(kind, param)
    if kind not in ("function", "custom"):
        raise invalid(
            f"Invalid '{param}.type': only function and custom tools can be chosen, got {kind!r}.",
            f"{param}.type",
        )
    found = tools.find(name, namespace, kind) if isinstance(name, str) else None
    if found is None:
        raise invalid(f"Invalid '{param}.name': no {kind} tool is named {name!r}.", f"{param}.name")
    return found


def _hosted_choice(kind: str, param: str):
    return invalid(
        f"Invalid '{param}': the tool {kind!r} runs on OpenAI's side and cannot run here; "
        "choose a function or custom tool, or 'auto'.",
        f"{param}.type",
    )


def choose(data: s.CreateResponse, tools: Tools):
    """``(functions, tool_choice)`` for the core: the functions the choice allows, and it."""
    choice = data.tool_choice
    functions = list(tools.functions)
    if choice is None or choice == "auto":
        return functions, None
    if choice == "none":
        return functions, "none"
    if isinstance(choice, s.ToolChoiceParam) and choice.type in HOSTED_CHOICES:
        raise _hosted_choice(choice.type, "tool_choice")
    if not functions:
        raise invalid("'tool_choice' requires function or custom 'tools'.", "tool_choice")
    if choice == "required":
        return functions, "required"
    if choice.type in ("function", "custom"):
        entry = {"type": choice.type, "name": choice.name, "namespace": choice.namespace}
        return functions, {
            "type": "function",
            "function": {"name": _named(tools, entry, "tool_choice")},
        }
    if choice.type == "allowed_tools":
        if choice.mode is None or not choice.tools:
            raise invalid(
                "Invalid 'tool_choice': allowed_tools needs 'mode' and 'tools'.", "tool_choice"
            )
        allowed = {
            _named(tools, entry, f"tool_choice.tools[{j}]") for j, entry in enumerate(choice.tools)
        }
        return [f for f in functions if f["function"]["name"] in allowed], choice.mode
    raise invalid(
        f"Invalid 'tool_choice.type': the tool choice type {choice.type!r} is not supported; "
        "use none, auto, required, a function or custom tool, or allowed_tools.",
        "tool_choice.type",
    )
