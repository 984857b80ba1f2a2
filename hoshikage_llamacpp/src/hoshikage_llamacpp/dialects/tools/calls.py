"""Tool calls in each model family's own form, read whole: one reader per family (its
class in :mod:`.families` names it), and :func:`parse`, which turns a capture into
calls in OpenAI's shape. A capture that does not parse, or that calls a tool the request did not
offer, is given back as text: a botched call reaches the client as text, never as an error.

=================  ==========================================================  ==============
format             a call                                                       families
=================  ==========================================================  ==============
``hermes``         ``<tool_call>{"name", "arguments"}</tool_call>``              Qwen2.5/3, Hermes,
                                                                                SmolLM3, ...
``qwen3-coder``    ``<tool_call><function=f><parameter=p>v</parameter>…``       Qwen3-Coder, Qwen3.5,
                                                                                Nemotron 3
``llama3``         ``{"name", "parameters"}``, ``<|python_tag|>`` + JSON           Llama 3.1-3.3
``mistral``        ``[TOOL_CALLS][{…}]`` and ``[TOOL_CALLS]f[ARGS]{…}``            Mistral Nemo/Small,
                                                                                Devstral, Ministral
``harmony``        ``<|channel|>commentary to=functions.f … <|message|>{…}``     gpt-oss
``deepseek``       ``<｜tool▁call▁begin｜>[function<｜tool▁sep｜>]f…{…}``            DeepSeek R1/V3.x
``glm``            ``<tool_call>f<arg_key>k</arg_key><arg_value>v</arg_value>``  GLM-4.5/4.6/4.7
``kimi``           ``<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>``  Kimi-K2
``command-r``      ``<|START_ACTION|>[{"tool_name", "parameters"}]``              Command R7B, A
``functionary``    ``>>>f\\n{…}`` (v3.2), ``<function=f>{…}</function>`` (v3.1)     Functionary
``granite``        ``<|tool_call|>[{"name", "arguments"}]``                      Granite 3.x/4
``firefunction``   ``functools[{"name", "arguments"}]``                          Firefunction v2
``minimax``        ``<minimax:tool_call><invoke name="f"><parameter name=…>``     MiniMax-M2
``seed``           ``<seed:tool_call><function=f><parameter=p>v</parameter>…``  Seed-OSS
``gemma4``         ``<|tool_call>call:f{k:<|"|>v<|"|>,n:1}<tool_call|>``           Gemma 4
``dsml``           ``<｜DSML｜invoke name="f"><｜DSML｜parameter name=p string=…>``  DeepSeek V3.2/V4
``pythonic``       ``<|tool_call_start|>[f(a=1, b="x")]<|tool_call_end|>``        LFM2, LFM2.5
``tool-calls``     ``<tool_calls>[{"name", "arguments"}]</tool_calls>``          Apriel, MiniMax-M1
``apertus``        ``<|tools_prefix|>[{"f": {…}}]<|tools_suffix|>``               Apertus
``command-r-plus`` ``Action:`` then a fenced JSON list of ``{"tool_name", "parameters"}``  Command R+
=================  ==========================================================  ==============

A call read as it streams is :mod:`.stream`'s; a constrained call's grammar, in each
family's syntax, is :mod:`.grammar`'s.

Pure Python.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

from .base import Call, ToolFormat


def _json(text: str) -> Any:
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


def _objects(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _named(
    objects: list[Any], name_key="name", args_keys=("arguments", "parameters")
) -> list[Call] | None:
    calls = []
    for obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get(name_key), str):
            return None
        arguments = next((obj[k] for k in args_keys if k in obj), {})
        calls.append((obj[name_key], arguments))
    return calls or None


def _between(text: str, start: str, end: str) -> list[str]:
    """The texts between each ``start`` and the next ``end`` (or the end of the text)."""
    out = []
    for part in text.split(start)[1:]:
        out.append(part.split(end)[0] if end else part)
    return out


def param_value(text: str) -> Any:
    """A parameter value as XML-ish formats write it: JSON when it is JSON, else the text."""
    text = text.strip("\n")
    parsed = _json(text)
    return parsed if parsed is not None or text.strip() == "null" else text


# ---- the readers ----------------------------------------------------------------------------


def read_hermes(text: str) -> list[Call] | None:
    if "<tool_call>" in text:
        blocks = _between(text, "<tool_call>", "</tool_call>")
        objects = [_json(block) for block in blocks]
        return _named(objects)
    return read_bare_json(text)


def read_bare_json(text: str) -> list[Call] | None:
    parsed = _json(text)
    if parsed is None:
        return None
    return _named(_objects(parsed))


_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|$)", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)(?:</parameter>|(?=<parameter=)|$)", re.S)


def read_qwen3_coder(text: str) -> list[Call] | None:
    calls = []
    for name, body in _FUNCTION.findall(text):
        calls.append((name, {key: param_value(value) for key, value in _PARAMETER.findall(body)}))
    return calls or None


def read_llama3(text: str) -> list[Call] | None:
    text = text.strip()
    if text.startswith("<|python_tag|>"):
        text = text[len("<|python_tag|>") :]
        parsed = _json(text)
        if parsed is None:  # several JSON objects separated by ";", as Llama 3.1 writes them
            parsed = [_json(part) for part in text.split(";") if part.strip()]
        return _named(_objects(parsed))
    return read_bare_json(text)


def read_mistral(text: str) -> list[Call] | None:
    text = text.strip()
    if not text.startswith("[TOOL_CALLS]"):
        return None
    calls: list[Call] = []
    for part in text.split("[TOOL_CALLS]")[1:]:
        part = part.strip()
        if "[ARGS]" in part:  # the new form: name[ARGS]{...}
            name, _, arguments = part.partition("[ARGS]")
            args = _json(arguments)
            if not name.strip() or not isinstance(args, dict):
                return None
            calls.append((name.strip(), args))
        else:  # the old form: a JSON list of calls
            named = _named(_objects(_json(part)))
            if named is None:
                return None
            calls += named
    return calls or None


_HARMONY = re.compile(
    r"to=functions\.([\w.\-]+)[^<]*(?:<\|constrain\|>\s*\w+\s*)?<\|message\|>(.*?)(?:<\|call\|>|<\|end\|>|$)",
    re.S,
)


def _json_calls(found: list[tuple[str, str]]) -> list[Call] | None:
    """``(name, JSON arguments text)`` pairs as calls; None when any arguments are not a
    JSON object."""
    calls = []
    for name, body in found:
        args = _json(body)
        if not isinstance(args, dict):
            return None
        calls.append((name, args))
    return calls or None


def read_harmony(text: str) -> list[Call] | None:
    return _json_calls(_HARMONY.findall(text))


_DEEPSEEK = re.compile(
    r"<｜tool▁call▁begin｜>(?:function<｜tool▁sep｜>)?([^\n<｜]+?)\s*(?:<｜tool▁sep｜>|\n)"
    r"(?:```json\s*)?(.*?)(?:\s*```)?\s*(?:<｜tool▁call▁end｜>|$)",
    re.S,
)


def read_deepseek(text: str) -> list[Call] | None:
    return _json_calls([(name.strip(), body) for name, body in _DEEPSEEK.findall(text)])


GLM_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


def read_glm(text: str) -> list[Call] | None:
    calls = []
    for block in _between(text, "<tool_call>", "</tool_call>"):
        name = block.split("<arg_key>")[0].strip()
        if not name:
            return None
        calls.append((name, {k.strip(): param_value(v) for k, v in GLM_ARG.findall(block)}))
    return calls or None


_KIMI = re.compile(
    r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.\-]+?)(?::\d+)?\s*<\|tool_call_argument_begin\|>(.*?)"
    r"(?:<\|tool_call_end\|>|$)",
    re.S,
)


def read_kimi(text: str) -> list[Call] | None:
    return _json_calls(_KIMI.findall(text))


def read_command_r(text: str) -> list[Call] | None:
    blocks = _between(text, "<|START_ACTION|>", "<|END_ACTION|>")
    if not blocks:
        return None
    objects = []
    for block in blocks:
        parsed = _json(block)
        if parsed is None:
            return None
        objects += _objects(parsed)
    return _named(objects, name_key="tool_name", args_keys=("parameters",))


_FUNCTIONARY = re.compile(r">>>\s*([\w.\-]+)\s*\n(.*?)(?=>>>|$)", re.S)


def read_functionary(text: str) -> list[Call] | None:
    if "<function=" in text:  # v3.1
        return _json_calls(re.findall(r"<function=([\w.\-]+)>(.*?)(?:</function>|$)", text, re.S))
    text = text if text.lstrip().startswith(">>>") else ">>>" + text
    # ">>>all" is plain text to the user: not a call
    return _json_calls([(n, body) for n, body in _FUNCTIONARY.findall(text) if n != "all"])


def read_granite(text: str) -> list[Call] | None:
    text = text.strip()
    if text.startswith("<|tool_call|>"):
        text = text[len("<|tool_call|>") :]
    parsed = _json(text)
    return None if parsed is None else _named(_objects(parsed))


def read_firefunction(text: str) -> list[Call] | None:
    text = text.strip()
    if text.startswith("functools"):
        text = text[len("functools") :]
    parsed = _json(text)
    return None if parsed is None else _named(_objects(parsed))


_INVOKE = re.compile(r'<invoke name="([^"]+)">(.*?)(?:</invoke>|$)', re.S)
_MM_PARAM = re.compile(r'<parameter name="([^"]+)">(.*?)(?:</parameter>|$)', re.S)


def read_minimax(text: str) -> list[Call] | None:
    calls = []
    for name, body in _INVOKE.findall(text):
        calls.append((name, {k: param_value(v) for k, v in _MM_PARAM.findall(body)}))
    return calls or None


_GEMMA4 = re.compile(r"<\|tool_call>\s*call:([\w.\-]+)\s*(\{.*?\})\s*(?:<tool_call\|>|$)", re.S)
_GEMMA4_STRING = re.compile(r'<\|"\|>(.*?)<\|"\|>', re.S)
_BARE_KEY = re.compile(r"([{,]\s*)([A-Za-z_][\w.\-]*)\s*:")


def gemma4_value(text: str) -> Any:
    """Gemma 4's argument notation as JSON: strings between ``<|"|>`` marks, keys bare
    (``{city:<|"|>Paris<|"|>,count:3}``); None when it does not read."""
    strings: list[str] = []

    def keep(match: re.Match) -> str:
        strings.append(match.group(1))
        return f"\x00{len(strings) - 1}\x00"

    text = _BARE_KEY.sub(r'\1"\2":', _GEMMA4_STRING.sub(keep, text))
    text = re.sub("\x00(\\d+)\x00", lambda m: json.dumps(strings[int(m.group(1))]), text)
    return _json(text)


def read_gemma4(text: str) -> list[Call] | None:
    calls = []
    found = _GEMMA4.findall(text)
    if len(found) != text.count("<|tool_call>"):
        return None  # a call that does not read: botched, not dropped
    for name, body in found:
        args = gemma4_value(body)
        if not isinstance(args, dict):
            return None
        calls.append((name, args))
    return calls or None


_DSML_INVOKE = re.compile(r'<｜DSML｜invoke name="([^"]+)">(.*?)(?:</｜DSML｜invoke>|\Z)', re.S)
_DSML_PARAM = re.compile(
    r'<｜DSML｜parameter name="([^"]+)"(?:\s+string="(true|false)")?>(.*?)(?:</｜DSML｜parameter>|\Z)',
    re.S,
)


def read_dsml(text: str) -> list[Call] | None:
    """DeepSeek V3.2/V4's DSML: ``string="true"`` values are raw text, the others JSON."""
    calls = []
    for name, body in _DSML_INVOKE.findall(text):
        args = {}
        for key, is_string, value in _DSML_PARAM.findall(body):
            args[key] = value if is_string == "true" else param_value(value)
        calls.append((name, args))
    return calls or None


_PY_CONSTANTS = {"true": True, "false": False, "null": None, "none": None}


def py_value(node) -> Any:
    import ast

    if isinstance(node, ast.Name) and node.id.lower() in _PY_CONSTANTS:
        return _PY_CONSTANTS[node.id.lower()]
    if isinstance(node, ast.List | ast.Tuple):
        return [py_value(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {py_value(k): py_value(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -py_value(node.operand)
    if isinstance(node, ast.Constant):
        return node.value
    raise ValueError("not a literal")


def read_pythonic(text: str) -> list[Call] | None:
    """LFM2's ``<|tool_call_start|>[f(a=1, b="x"), g()]<|tool_call_end|>``: Python call
    syntax, read with :mod:`ast` (never evaluated), JSON's ``true``/``null`` allowed."""
    import ast

    calls = []
    for block in _between(text, "<|tool_call_start|>", "<|tool_call_end|>") or [text]:
        try:
            tree = ast.parse(block.strip(), mode="eval").body
        except SyntaxError:
            return None
        for node in tree.elts if isinstance(tree, ast.List) else [tree]:
            if not isinstance(node, ast.Call) or node.args:
                return None
            name = ast.unparse(node.func)
            try:
                calls.append((name, {kw.arg: py_value(kw.value) for kw in node.keywords}))
            except (ValueError, TypeError):
                return None
    return calls or None


def read_tool_calls_tag(text: str) -> list[Call] | None:
    """``<tool_calls>[{"name", "arguments"}, …]</tool_calls>`` (Apriel), or one JSON object
    a line between those tags (MiniMax-M1)."""
    objects: list[Any] = []
    for block in _between(text, "<tool_calls>", "</tool_calls>"):
        parsed = _json(block)
        if parsed is None:
            parsed = [_json(line) for line in block.splitlines() if line.strip()]
        objects += _objects(parsed)
    return _named(objects) if objects else None


def read_apertus(text: str) -> list[Call] | None:
    """Apertus's ``<|tools_prefix|>[{"name": {arguments}}, …]<|tools_suffix|>``."""
    calls = []
    for block in _between(text, "<|tools_prefix|>", "<|tools_suffix|>"):
        for obj in _objects(_json(block)):
            if not isinstance(obj, dict) or len(obj) != 1:
                return None
            ((name, args),) = obj.items()
            if not isinstance(args, dict):
                return None
            calls.append((name, args))
    return calls or None


_ACTION = re.compile(r"Action:\s*```(?:json)?\s*(.*?)\s*(?:```|$)", re.S)


def read_command_r_plus(text: str) -> list[Call] | None:
    """Command R+'s ``Action:`` and a fenced JSON list of ``{"tool_name", "parameters"}``
    (its ``directly-answer`` tool means "no call")."""
    objects = []
    for block in _ACTION.findall(text):
        parsed = _json(block)
        if parsed is None:
            return None
        objects += _objects(parsed)
    calls = _named(objects, name_key="tool_name", args_keys=("parameters",))
    return [c for c in calls if c[0] != "directly-answer"] or None if calls else None


def parse(fmt: ToolFormat, text: str, known: Sequence[str]) -> list[dict[str, Any]] | None:
    """Tool calls in OpenAI's shape, or None when ``text`` is not (only) calls of tools in
    ``known``."""
    try:
        calls = fmt.read(text)
    except Exception:  # a reader must never turn a botched call into an error
        calls = None
    if fmt.name != "hermes" and calls is None:
        # The instructions' own form and a forced call's bare JSON, for any template.
        calls = read_hermes(text)
    if not calls:
        return None
    out = []
    for name, arguments in calls:
        if name not in known:
            return None
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        out.append(
            {
                "id": "call_" + secrets.token_hex(12),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
    return out
