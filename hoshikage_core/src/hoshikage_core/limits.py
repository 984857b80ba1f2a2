"""The caps on what one request may make the server do, from ``[server]``: the size of a JSON
schema and of its ``enum`` lists, the grammar it becomes, and prompts × ``n``.

Each cap is checked on the path every request takes (:class:`~hoshikage_core.runtime.Session`)
before anything reaches a model, off the event loop, and a request over one is
:class:`~hoshikage_core.errors.InvalidRequest` naming the request field and the config key,
which every API surface answers as a 400 in its own error shape. The grammar's own size is
known only to the backend: the session hands the cap on in
:attr:`GenerationRequest.max_grammar_bytes <hoshikage_core.protocol.GenerationRequest>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import InvalidRequest
from .protocol import GenerationRequest

#: JSON schema keywords whose value repeats a piece of the grammar that many times. Only
#: the lower bounds are checked here: an upper bound too large to matter is dropped from the
#: grammar by the backend (above the model's context length), not refused, and one it keeps
#: is held to ``max_grammar_bytes`` with the grammar it makes.
REPEAT_KEYWORDS = ("minLength", "minItems")


@attrs.frozen(kw_only=True)
class Limits:
    schema_bytes: int
    schema_enum: int
    grammar_bytes: int
    choices: int

    @classmethod
    def of(cls, server) -> Limits:
        return cls(
            schema_bytes=server.max_schema_bytes,
            schema_enum=server.max_schema_enum,
            grammar_bytes=server.max_grammar_bytes,
            choices=server.max_choices,
        )


def check_choices(limits: Limits, choices: int) -> None:
    """Prompts × ``n`` of one request against ``max_choices``."""
    if choices > limits.choices:
        raise InvalidRequest(
            f"This request asks for {choices} choices (prompts × n); this server accepts at most "
            f"{limits.choices} per request (server.max_choices).",
            "n",
        )


def check_request(limits: Limits, request: GenerationRequest) -> GenerationRequest:
    """``request`` checked against the schema caps, with the grammar cap handed on. Only the
    tools whose calls a grammar will hold are checked (:func:`constrained_tools`): the
    schemas of the others are prompt text, and never fail a request."""
    schema = request.response_format.schema if request.response_format is not None else None
    if schema is not None:
        _check_schema(limits, schema, "response_format")
    if constrained := constrained_tools(request):
        param = "tools" if request.tool_choice in (None, "auto") else "tool_choice"
        _check_schema(limits, constrained, param)
    if request.max_grammar_bytes == limits.grammar_bytes:
        return request
    return attrs.evolve(request, max_grammar_bytes=limits.grammar_bytes)


def constrained_tools(request: GenerationRequest) -> list[Any]:
    """The tools a grammar will hold a call of: all of them under ``tool_choice:
    "required"``, the named one under a named ``tool_choice``, else those marked ``strict``
    (a lazy grammar from the call marker). None under ``"none"`` or a request ``grammar``."""
    tools = list(request.tools or ())
    choice = request.tool_choice
    if not tools or choice == "none" or request.grammar:
        return []
    if choice == "required":
        return tools
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        return [t for t in tools if (t.get("function") or {}).get("name") == name]
    return [t for t in tools if (t.get("function") or {}).get("strict") is True]


def _check_schema(limits: Limits, schema: Any, param: str) -> None:
    try:
        size = len(json.dumps(schema, separators=(",", ":")).encode("utf-8"))
    except (TypeError, ValueError, RecursionError):
        raise InvalidRequest(f"{param}: the JSON schema is not plain JSON", param) from None
    if size > limits.schema_bytes:
        raise InvalidRequest(
            f"{param}: the JSON schema is {size} bytes; this server accepts at most "
            f"{limits.schema_bytes} (server.max_schema_bytes).",
            param,
        )
    enums, repeat = _walk(schema)
    if enums > limits.schema_enum:
        raise InvalidRequest(
            f"{param}: the JSON schema has {enums} enum values; this server accepts at most "
            f"{limits.schema_enum} in one schema (server.max_schema_enum).",
            param,
        )
    if repeat > limits.grammar_bytes:  # each repetition is at least a byte of grammar
        raise InvalidRequest(
            f"{param}: a minimum length or item count of {repeat} in the JSON schema makes a grammar "
            f"over {limits.grammar_bytes} bytes (server.max_grammar_bytes).",
            param,
        )


def _walk(schema: Any) -> tuple[int, int]:
    """Enum values in all, and the largest lower repetition bound, anywhere in ``schema``."""
    enums = repeat = 0
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "enum" and isinstance(value, list):
                    enums += len(value)
                    continue
                if key in REPEAT_KEYWORDS and isinstance(value, int | float):
                    repeat = max(repeat, int(min(value, 1e18)))
                    continue
                if isinstance(value, Mapping | list):
                    todo.append(value)
        elif isinstance(node, list):
            todo.extend(v for v in node if isinstance(v, Mapping | list))
    return enums, repeat
