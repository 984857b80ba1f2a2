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

The syntax per family, each written by its family's ``call`` in :mod:`.tool_families`
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from hoshikage_core.errors import InvalidRequest

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


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def _class_char(c: str) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or ("\\" + c if c in '\\]["-^' else c)


def text_without(word: str, name: str, rules: dict[str, str]) -> str:
    """A rule (added to ``rules``) for any text that does not contain ``word``: one rule per
    state of the word's KMP automaton, each a tail call, so the grammar's stacks stay flat."""
    n = len(word)
    fail = [0] * n
    k = 0
    for i in range(1, n):
        while k and word[i] != word[k]:
            k = fail[k - 1]
        if word[i] == word[k]:
            k += 1
        fail[i] = k

    def step(state: int, c: str) -> int:
        while True:
            if word[state] == c:
                return state + 1
            if state == 0:
                return 0
            state = fail[state - 1]

    chars = sorted(set(word))
    for state in range(n):
        moves = {c: nxt for c in chars if (nxt := step(state, c)) != 0}
        alternatives = [f"{literal(c)} {name}-{nxt}" for c, nxt in moves.items() if nxt < n]
        alternatives.append("[^" + "".join(_class_char(c) for c in moves) + f"] {name}-0")
        rules[f"{name}-{state}"] = "( " + " | ".join(alternatives) + " )?"
    return f"{name}-0"


class Builder:
    """One grammar's rules: the converter's, and ours beside them."""

    def __init__(self, param: str):
        from llama_cpp.llama_grammar import SchemaConverter

        self.param = param
        self.converter = SchemaConverter(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self.rules: dict[str, str] = {}
        self._texts: dict[str, str] = {}

    def schema_rule(self, schema: Any, name: str) -> str:
        """The converter's rule for a JSON value of ``schema``."""
        from ...engine.sampling import check_patterns

        if not isinstance(schema, Mapping):
            raise InvalidRequest(
                f"{self.param}: a function's parameters must be a JSON schema", self.param
            )
        check_patterns(schema, self.param)
        try:
            return self.converter.visit(dict(schema), name)
        except RecursionError:
            raise InvalidRequest(
                f"{self.param}: the JSON schema is too deeply nested", self.param
            ) from None
        except Exception as exc:  # the converter raises bare KeyError/ValueError/TypeError...
            raise InvalidRequest(
                f"{self.param}: this JSON schema cannot be turned into a grammar: {type(exc).__name__}: {exc}",
                self.param,
            ) from None

    def resolve(self, schema: Any, url: str) -> Any:
        if not isinstance(schema, Mapping):
            return schema
        try:
            return self.converter.resolve_refs(json.loads(json.dumps(schema)), url)
        except Exception as exc:
            raise InvalidRequest(
                f"{self.param}: the JSON schema's $ref cannot be resolved: {exc}", self.param
            ) from None

    def text(self, end: str) -> str:
        """Raw text up to (not containing) ``end``."""
        if end not in self._texts:
            self._texts[end] = text_without(end, f"text{len(self._texts)}", self.rules)
        return self._texts[end]

    def grammar(self, root: str) -> str:
        rules = {**self.converter._rules, **self.rules}
        body = "\n".join(f"{name} ::= {rule}" for name, rule in rules.items() if name != "root")
        return f"root ::= {root}\n{body}\n"


def _is_text(schema: Any) -> bool:
    """Whether a parameter's value is written raw (a string) in the XML-ish forms."""
    if not isinstance(schema, Mapping):
        return False
    kind = schema.get("type")
    if kind == "string" or (isinstance(kind, list) and "string" in kind):
        return True
    if kind is None and "enum" in schema:
        return all(isinstance(v, str) for v in schema["enum"])
    return kind is None and isinstance(schema.get("const"), str)


def _xml_value(b: Builder, schema: Any, name: str, end: str) -> str:
    """A parameter's value in the XML-ish forms: a string raw (its ``enum``/``const`` held),
    anything else as JSON of its schema."""
    if isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
        schema = b.converter._refs.get(schema["$ref"], schema)  # resolved by b.resolve
    if _is_text(schema):
        values = (
            schema.get("enum")
            if "enum" in schema
            else ([schema["const"]] if "const" in schema else None)
        )
        if values is not None and all(isinstance(v, str) for v in values):
            return "( " + " | ".join(literal(v) for v in values) + " )"
        return b.text(end)
    return b.schema_rule(schema if isinstance(schema, Mapping) else {}, name)


def xml_params(
    b: Builder,
    function: Mapping[str, Any],
    prefix: str,
    end: str,
    param: Callable[[str, str], str],
) -> str:
    """The parameters of a call in an XML-ish form, in the schema's order: every required
    one, each other one optional; names outside the schema only when it allows them.
    ``param(name_expr, value_expr, raw)`` writes one parameter; a raw value never contains
    ``end``."""
    schema = b.resolve(function.get("parameters") or {}, f"{prefix}-xml")
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    properties = properties if isinstance(properties, Mapping) else {}
    required = set(schema.get("required") or ()) if isinstance(schema, Mapping) else set()
    parts = []
    for i, (key, sub) in enumerate(properties.items()):
        if isinstance(sub, Mapping) and isinstance(sub.get("$ref"), str):
            sub = b.converter._refs.get(sub["$ref"], sub)
        one = param(literal(key), _xml_value(b, sub, f"{prefix}-p{i}", end), _is_text(sub))
        parts.append(one if key in required else f"( {one} )?")
    extra = (
        schema.get("additionalProperties", not properties) if isinstance(schema, Mapping) else True
    )
    if extra is not False:
        name_rule = f"{prefix}-key"
        b.rules[name_rule] = "[a-zA-Z0-9_.\\-]+"
        parts.append(f"( {param(name_rule, b.text(end), True)} )*")
    return " ".join(parts) if parts else '""'


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
) -> tuple[str, str]:
    """``(grammar, opener)``: one call of one of ``tools`` in ``fmt``'s syntax (as
    ``template`` writes it: Mistral's and DeepSeek's forms differ between versions), and
    the text it opens with, a lazy grammar's trigger. ``think``: the think block allowed
    first (never in a lazy grammar, which starts at the call). ``bare``: the bare JSON
    object instead of the family's syntax. A schema that cannot be enforced is
    :class:`InvalidRequest` for ``param``."""
    syntax = "json" if bare else fmt.syntax(template)
    b = Builder(param)
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
