"""Building a GBNF grammar beside llama-cpp-python's JSON Schema converter: literals, text
without a given word, a JSON value of a schema, and the parameters of an XML-ish call, as
the tool families write them (:mod:`..dialects.tools`).

The converter's rules and resolved ``$ref`` s are its internals (``_rules``, ``_refs``):
this module is where the package reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hoshikage_core.errors import InvalidRequest


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

    def __init__(self, param: str, ceiling: int | None = None):
        from llama_cpp.llama_grammar import SchemaConverter

        self.param = param
        #: Upper bounds above it are dropped (:func:`~.schema.without_vast_bounds`).
        self.ceiling = ceiling
        self.converter = SchemaConverter(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self.rules: dict[str, str] = {}
        self._texts: dict[str, str] = {}

    def schema_rule(self, schema: Any, name: str) -> str:
        """The converter's rule for a JSON value of ``schema``."""
        from .schema import check_patterns, without_vast_bounds

        if not isinstance(schema, Mapping):
            raise InvalidRequest(
                f"{self.param}: a function's parameters must be a JSON schema", self.param
            )
        check_patterns(schema, self.param)
        schema = without_vast_bounds(schema, self.ceiling)
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
