"""The grammar of a constrained call: one call, in the family's own syntax, of one of the
offered functions, with that function's parameters held to their JSON Schema.

It is used when ``tool_choice`` forces a call (``"required"`` or a named function: the
grammar runs from the first token, after the reasoning the family may write first), and for
tools marked ``strict: true`` (lazy: it waits for the family's call marker, so free text
before a call costs nothing, as llama.cpp's ``grammar_lazy`` does). A lazy grammar starts at
the marker, so the marker is where its ``root`` begins.

Markers are written as text literals, never as token references: llama.cpp matches a
literal against a token's text (special tokens included, ``<tool_call>`` or
``<|channel|>``), and a lazy grammar replays the text that triggered it piece by piece,
which a token reference would refuse when the model spelled the marker out.

The syntax per family, each written by its family's ``call`` in :mod:`.families`
(``NAME`` the function's name, ``ARGS`` its arguments as JSON, ``P``/``V`` a parameter and its
value: raw text for a string, JSON otherwise)::

    hermes        <tool_call>\\n{"name": "NAME", "arguments": ARGS}\\n</tool_call>
    qwen3-coder   <tool_call>\\n<function=NAME>\\n<parameter=P>\\nV\\n</parameter>\\n…</function>\\n</tool_call>
    llama3        {"name": "NAME", "parameters": ARGS}
    mistral       [TOOL_CALLS]NAME[ARGS]ARGS, or (templates without [ARGS])
                  [TOOL_CALLS][{"name": "NAME", "arguments": ARGS, "id": "abcdefghi"}]
    harmony       <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>ARGS
    deepseek      <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>…, or
                  (R1's) …function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```…
    glm           <tool_call>NAME\\n<arg_key>P</arg_key>\\n<arg_value>V</arg_value>\\n…</tool_call>
    kimi          <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>ARGS…
    command-r+    Action:\\n```json\\n[\\n    {\\n        "tool_name": "NAME",\\n        "parameters": ARGS
                  \\n    }\\n]\\n```
    command-r     <|START_ACTION|>[\\n    {"tool_call_id": "0", "tool_name": "NAME", "parameters": ARGS}
                  \\n]<|END_ACTION|>
    functionary   <function=NAME>ARGS</function> (v3.1); v3.2's prompt ends in ``>>>``, so its
                  call has no marker of its own: the bare {"name", "arguments"} object
    granite       <|tool_call|>[{"name": "NAME", "arguments": ARGS}]
    firefunction  functools[{"name": "NAME", "arguments": ARGS}]
    minimax       <minimax:tool_call>\\n<invoke name="NAME">\\n<parameter name="P">V</parameter>\\n…
                  </invoke>\\n</minimax:tool_call>
    json          {"name": "NAME", "arguments": ARGS} (any family's parser reads it)

The JSON Schema conversion is llama-cpp-python's (``SchemaConverter``, one per grammar so
the functions' rules never collide).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ...grammar.build import Builder, literal
from .base import ToolFormat


@attrs.frozen
class Think:
    """A think block the family may write before its call: ``start`` … ``end``. ``open``:
    the prompt already opened it (the output starts inside the reasoning). ``after``: text
    the family writes between the block and the call (harmony's next message header)."""

    start: str
    end: str
    open: bool = False
    after: str = ""


def _functions(tools: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [tool["function"] for tool in tools]


#: The text the bare JSON call opens with (any family's reader reads it).
JSON_OPENER = '{"name": '


def arguments(b: Builder, function: Mapping[str, Any], i: int) -> str:
    """The rule for the arguments of ``function`` (the ``i``-th offered): its parameters'
    JSON Schema, any object when it gives none."""
    schema = function.get("parameters") or {"type": "object"}
    return b.schema_rule(b.resolve(schema, f"call{i}"), f"call{i}-args")


def json_call(b: Builder, function: Mapping[str, Any], i: int, key: str = "arguments") -> str:
    """``{"name": NAME, "<key>": ARGS}``, the JSON object most families write a call as."""
    quoted = literal(json.dumps(function["name"], ensure_ascii=False))
    return f'"{{\\"name\\": " {quoted} ", \\"{key}\\": " {arguments(b, function, i)} "}}"'


def call_grammar(
    fmt: ToolFormat,
    tools: Sequence[Mapping[str, Any]],
    *,
    template: str = "",
    lazy: bool = False,
    think: Think | None = None,
    bare: bool = False,
    param: str = "tool_choice",
    ceiling: int | None = None,
) -> tuple[str, str]:
    """``(grammar, opener)``: one call of one of ``tools`` in ``fmt``'s syntax (as
    ``template`` writes it: Mistral's and DeepSeek's forms differ between versions), and
    the text it opens with, a lazy grammar's trigger. ``think``: the think block allowed
    first (never in a lazy grammar, which starts at the call). ``bare``: the bare JSON
    object instead of the family's syntax. A schema that cannot be enforced is
    :class:`InvalidRequest` for ``param``; upper bounds above ``ceiling`` (the context
    length) are dropped from the schemas, not enforced."""
    syntax = "json" if bare else fmt.syntax(template)
    b = Builder(param, ceiling)
    functions = enumerate(_functions(tools))
    if syntax == "json":
        calls, opener = [json_call(b, function, i) for i, function in functions], JSON_OPENER
    else:
        calls = [fmt.call(b, function, i, syntax) for i, function in functions]
        opener = fmt.syntaxes[syntax]
    root = calls[0] if len(calls) == 1 else "( " + " | ".join(calls) + " )"
    if think is not None and not lazy:
        block = f"{b.text(think.end)} {literal(think.end + think.after)}"
        if think.open:
            root = f'{block} "\\n"{{0,2}} {root}'
        else:
            root = f'( {literal(think.start)} {block} "\\n"{{0,2}} )? {root}'
    return b.grammar(root), opener


_RULE = re.compile(r"^([a-zA-Z0-9-]+) ::=", re.M)


def rule_names(grammar: str) -> list[str]:
    """The rules a grammar defines (for tests)."""
    return _RULE.findall(grammar)
