"""JSON Schema to GBNF, and the checks that refuse what a grammar cannot hold: a request's
``response_format`` schema, a forced tool call's, or its own ``grammar``, each a
:class:`~hoshikage_core.errors.InvalidRequest` naming the field when it will not do.

The conversion is llama-cpp-python's (``json_schema_to_gbnf``); compiling a grammar into a
sampler is the engine's (:func:`.engine.sampling.compile_grammar`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hoshikage_core.errors import InvalidRequest
from hoshikage_core.protocol import ResponseFormat


def grammar_for(
    fmt: ResponseFormat | None,
    forced_tool_schema: Mapping[str, Any] | None,
    grammar: str | None = None,
    max_bytes: int | None = None,
    ceiling: int | None = None,
) -> str | None:
    """The GBNF that constrains the output, or None. The request's own ``grammar`` cannot be
    combined with a ``response_format`` schema; a forced tool call wins over
    ``response_format``. A schema the converter rejects, or a grammar over ``max_bytes``
    (``[server] max_grammar_bytes``), is :class:`InvalidRequest`. Upper bounds above
    ``ceiling`` are dropped from the schema first (:func:`without_vast_bounds`)."""
    result = _grammar_for(fmt, forced_tool_schema, grammar, ceiling)
    if result is not None:
        if grammar:
            param = "grammar"
        else:
            param = "tool_choice" if forced_tool_schema is not None else "response_format"
        check_grammar_size(result, param, max_bytes)
    return result


def check_grammar_size(grammar: str, param: str, max_bytes: int | None) -> None:
    """:class:`InvalidRequest` for a grammar over ``max_bytes`` (``[server]
    max_grammar_bytes``); ``param`` names where it came from (``grammar``: the request's
    own)."""
    if max_bytes is None or len(grammar) <= max_bytes:
        return
    what = (
        "The grammar is" if param == "grammar" else f"{param}: the JSON schema makes a grammar of"
    )
    raise InvalidRequest(
        f"{what} {len(grammar)} bytes; this server accepts at most {max_bytes} "
        "(server.max_grammar_bytes).",
        param,
    )


def _grammar_for(
    fmt: ResponseFormat | None,
    forced_tool_schema: Mapping[str, Any] | None,
    grammar: str | None = None,
    ceiling: int | None = None,
) -> str | None:
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if grammar:
        if fmt is not None and fmt.type != "text":
            raise InvalidRequest(
                "grammar cannot be combined with a JSON response_format: give one of them",
                "grammar",
            )
        return grammar
    if forced_tool_schema is not None:
        return _schema_grammar(json_schema_to_gbnf, forced_tool_schema, "tool_choice", ceiling)
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JSON_GBNF
    if not isinstance(fmt.schema, Mapping):
        raise InvalidRequest(
            "response_format.json_schema.schema must be a JSON object", "response_format"
        )
    if fmt.strict and (unenforced := sorted(unenforced_keywords(fmt.schema))):
        raise InvalidRequest(
            "response_format: strict mode cannot enforce these JSON schema keywords: "
            + ", ".join(unenforced),
            "response_format",
        )
    return _schema_grammar(json_schema_to_gbnf, fmt.schema, "response_format", ceiling)


#: JSON schema keywords llama-cpp-python's grammar converter ignores.
UNENFORCED_KEYWORDS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "uniqueItems",
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "dependentRequired",
        "dependentSchemas",
        "contains",
        "minProperties",
        "maxProperties",
        "propertyNames",
    }
)
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


def unenforced_keywords(schema: Any) -> set[str]:
    """Keywords anywhere in ``schema`` that the grammar cannot enforce (property names
    that happen to be called ``minimum`` do not count)."""
    found: set[str] = set()
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key in ("enum", "const", "default", "examples"):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                for sub in value.values():
                    found |= unenforced_keywords(sub)
                continue
            if key in UNENFORCED_KEYWORDS:
                found.add(key)
            found |= unenforced_keywords(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= unenforced_keywords(item)
    return found


#: ``re`` errors that mean the pattern itself is malformed in any regex dialect (not merely
#: written in a dialect ``re`` does not read, such as ``\p{L}``).
_MALFORMED = (
    "missing ),",
    "unbalanced parenthesis",
    "unterminated character set",
    "nothing to repeat",
    "multiple repeat",
    "bad character range",
    "min repeat greater than max repeat",
)


def check_patterns(schema: Any, param: str) -> None:
    """Every ``pattern`` in ``schema`` is a well-formed regular expression, else
    :class:`InvalidRequest`: the grammar converter would otherwise close an unbalanced
    group by itself and enforce something else than asked."""
    import re

    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    try:
                        re.compile(value)
                    except re.error as exc:
                        if any(text in str(exc) for text in _MALFORMED):
                            raise InvalidRequest(
                                f"{param}: the JSON schema's pattern {value[:100]!r} is not a valid "
                                f"regular expression: {exc}",
                                param,
                            ) from None
                elif isinstance(value, Mapping | list) and key not in ("enum", "const"):
                    todo.append(value)
        elif isinstance(node, list):
            todo.extend(v for v in node if isinstance(v, Mapping | list))


#: The keywords that bound a length or an item count from above: the grammar repeats a
#: piece that many times.
UPPER_BOUNDS = ("maxLength", "maxItems")


def without_vast_bounds(schema: Any, ceiling: int | None) -> Any:
    """``schema`` without the upper bounds (:data:`UPPER_BOUNDS`) above ``ceiling``, the
    model's context length in tokens. A bound that large does not matter to an answer that
    must fit in that context, and written into a grammar it would repeat a piece of it that
    many times: Claude Code's Write tool bounds its content by ``maxLength: 524288``, which
    llama.cpp's own converter makes a grammar of megabytes. Lower bounds stay (they are
    checked against ``max_grammar_bytes``); so does everything under ``enum``, ``const``,
    ``default`` and ``examples``, which are values, not schemas."""
    if ceiling is None:
        return schema
    if isinstance(schema, Mapping):
        return {
            key: value
            if key in ("enum", "const", "default", "examples")
            else without_vast_bounds(value, ceiling)
            for key, value in schema.items()
            if not (
                key in UPPER_BOUNDS
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and value > ceiling
            )
        }
    if isinstance(schema, list):
        return [without_vast_bounds(item, ceiling) for item in schema]
    return schema


def _schema_grammar(
    convert, schema: Mapping[str, Any], param: str, ceiling: int | None = None
) -> str:
    check_patterns(schema, param)
    schema = without_vast_bounds(schema, ceiling)
    try:
        return convert(json.dumps(schema))
    except RecursionError:
        raise InvalidRequest(f"{param}: the JSON schema is too deeply nested", param) from None
    except Exception as exc:  # the converter raises bare KeyError/ValueError/TypeError...
        raise InvalidRequest(
            f"{param}: this JSON schema cannot be turned into a grammar: {type(exc).__name__}: {exc}",
            param,
        ) from None
