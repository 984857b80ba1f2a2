"""The tool-call families, one class each, and their registry.

A family's class (a :class:`~.tool_format.ToolFormat`) holds all that is the family's: the
template text that means it, the text that opens its calls, its whole reader
(:mod:`.calls`), its stream reader (:mod:`.stream`) and its constrained call's
syntax (:mod:`.grammar`). Adding a family is adding its class to :data:`FAMILIES`;
tests/llamacpp/test_tool_families.py fails for one without a stream reader or a grammar.

:func:`detect` reads a chat template's text; the ``tool_format`` option picks one by name.
The table of forms is in :mod:`.calls`. Pure Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...grammar.build import Builder, literal, xml_params
from . import calls as whole
from . import stream as streamed
from .base import ToolFormat
from .grammar import JSON_OPENER, arguments, json_call


class Hermes(ToolFormat):
    name = "hermes"
    openers = ("<tool_call>",)
    leading_json = True
    signs = ("<tool_call>",)
    syntaxes = {"hermes": "<tool_call>"}
    read = staticmethod(whole.read_hermes)
    stream = staticmethod(streamed.stream_hermes)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return f'"<tool_call>\\n" {json_call(b, function, i)} "\\n</tool_call>"'


class Qwen3Coder(ToolFormat):
    name = "qwen3-coder"
    openers = ("<tool_call>", "<function=")
    signs = ("<parameter=",)
    syntaxes = {"qwen3-coder": "<tool_call>"}
    read = staticmethod(whole.read_qwen3_coder)
    stream = staticmethod(streamed.stream_qwen3_coder)
    #: The tags around a call, and the blank around a parameter's value, in its grammar.
    tags = ("<tool_call>", "</tool_call>")
    pad = "\\n"

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        pad, (start, end) = self.pad, self.tags
        params = xml_params(
            b,
            function,
            f"call{i}",
            "</parameter>",
            lambda k, v, _: f'"<parameter=" {k} ">{pad}" {v} "{pad}</parameter>\\n"',
        )
        name = literal(function["name"])
        return f'"{start}\\n<function=" {name} ">\\n" {params} "</function>\\n{end}"'


class Llama3(ToolFormat):
    name = "llama3"
    openers = ("<|python_tag|>",)
    leading_json = True
    markers = ("<|python_tag|>",)
    signs = ("<|python_tag|>", '"parameters": dictionary of argument name')  # 3.2: JSON only
    syntaxes = {"llama3": '{"name": '}
    read = staticmethod(whole.read_llama3)
    stream = staticmethod(streamed.stream_llama3)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return json_call(b, function, i, key="parameters")


class Mistral(ToolFormat):
    name = "mistral"
    openers = ("[TOOL_CALLS]",)
    markers = ("[TOOL_CALLS]", "[ARGS]")
    signs = ("[TOOL_CALLS]",)
    syntaxes = {"mistral": "[TOOL_CALLS]", "mistral-old": "[TOOL_CALLS]"}
    read = staticmethod(whole.read_mistral)
    stream = staticmethod(streamed.stream_mistral)

    def syntax(self, template: str) -> str:
        return "mistral" if "[ARGS]" in template else "mistral-old"

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        if syntax == "mistral":
            return (
                f'"[TOOL_CALLS]" {literal(function["name"])} "[ARGS]" {arguments(b, function, i)}'
            )
        obj = json_call(b, function, i)
        obj = obj[: -len(' "}"')] + ' ", \\"id\\": \\"" [a-zA-Z0-9]{9} "\\"}"'
        return f'"[TOOL_CALLS][" {obj} "]"'


class Harmony(ToolFormat):
    name = "harmony"
    openers = ("<|channel|>commentary to=", "to=functions.")
    signs = ("<|channel|>",)
    syntaxes = {"harmony": "<|channel|>commentary to=functions."}
    read = staticmethod(whole.read_harmony)
    stream = staticmethod(streamed.stream_harmony)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        name, args = literal(function["name"]), arguments(b, function, i)
        return (
            f'"<|channel|>commentary to=functions." {name} " <|constrain|>json<|message|>" {args}'
        )


class DeepSeek(ToolFormat):
    name = "deepseek"
    openers = ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>")
    markers = (
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁calls▁end｜>",
    )
    signs = ("tool▁call▁begin",)
    syntaxes = {"deepseek": "<｜tool▁calls▁begin｜>", "deepseek-r1": "<｜tool▁calls▁begin｜>"}
    read = staticmethod(whole.read_deepseek)
    stream = staticmethod(streamed.stream_deepseek)

    def syntax(self, template: str) -> str:
        return "deepseek-r1" if "```json" in template else "deepseek"

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        name = literal(function["name"])
        if syntax == "deepseek":
            return (
                f'"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" {name} "<｜tool▁sep｜>" {arguments(b, function, i)} '
                '"<｜tool▁call▁end｜><｜tool▁calls▁end｜>"'
            )
        return (
            f'"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>" {name} "\\n```json\\n" '
            f'{arguments(b, function, i)} "\\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"'
        )


class Glm(ToolFormat):
    name = "glm"
    openers = ("<tool_call>",)
    signs = ("<arg_key>",)
    syntaxes = {"glm": "<tool_call>"}
    read = staticmethod(whole.read_glm)
    stream = staticmethod(streamed.stream_glm)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        params = xml_params(
            b,
            function,
            f"call{i}",
            "</arg_value>",
            lambda k, v, _: (
                f'"<arg_key>" {k} "</arg_key>" "\\n"? "<arg_value>" {v} "</arg_value>" "\\n"?'
            ),
        )
        return f'"<tool_call>" {literal(function["name"])} "\\n"? {params} "</tool_call>"'


class Kimi(ToolFormat):
    name = "kimi"
    openers = ("<|tool_calls_section_begin|>", "<|tool_call_begin|>")
    markers = (
        "<|tool_calls_section_begin|>",
        "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>",
        "<|tool_call_end|>",
        "<|tool_calls_section_end|>",
    )
    signs = ("<|tool_call_begin|>",)
    syntaxes = {"kimi": "<|tool_calls_section_begin|>"}
    read = staticmethod(whole.read_kimi)
    stream = staticmethod(streamed.stream_kimi)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        name, args = literal(function["name"]), arguments(b, function, i)
        return (
            f'"<|tool_calls_section_begin|><|tool_call_begin|>functions." {name} '
            f'":0<|tool_call_argument_begin|>" {args} "<|tool_call_end|><|tool_calls_section_end|>"'
        )


class CommandR(ToolFormat):
    name = "command-r"
    openers = ("<|START_ACTION|>",)
    markers = ("<|START_ACTION|>", "<|END_ACTION|>")
    signs = ("<|START_ACTION|>",)
    syntaxes = {"command-r": "<|START_ACTION|>"}
    read = staticmethod(whole.read_command_r)
    stream = staticmethod(streamed.stream_command_r)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return (
            f'"<|START_ACTION|>[\\n    {{\\"tool_call_id\\": \\"0\\", \\"tool_name\\": " {_quoted(function)} '
            f'", \\"parameters\\": " {arguments(b, function, i)} "}}\\n]<|END_ACTION|>"'
        )


class CommandRPlus(ToolFormat):
    name = "command-r-plus"
    openers = ("Action:",)
    signs = ("Write \\'Action:\\'",)
    syntaxes = {"command-r-plus": "Action:"}
    read = staticmethod(whole.read_command_r_plus)
    stream = staticmethod(streamed.stream_command_r_plus)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return (
            f'"Action:\\n```json\\n[\\n    {{\\n        \\"tool_name\\": " {_quoted(function)} '
            f'",\\n        \\"parameters\\": " {arguments(b, function, i)} "\\n    }}\\n]\\n```"'
        )


class Functionary(ToolFormat):
    name = "functionary"
    openers = (">>>", "<function=")
    signs = (">>>", "<function=")
    syntaxes = {"functionary": "<function="}
    read = staticmethod(whole.read_functionary)
    stream = staticmethod(streamed.stream_functionary)

    def syntax(self, template: str) -> str:
        # v3.2's prompt ends in ">>>", so its call has no marker of its own: the bare object.
        return "functionary" if "<function=" in template and ">>>" not in template else "json"

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return f'"<function=" {literal(function["name"])} ">" {arguments(b, function, i)} "</function>"'


class Granite(ToolFormat):
    name = "granite"
    openers = ("<|tool_call|>",)
    leading_json = True
    markers = ("<|tool_call|>",)
    signs = ("<|tool_call|>",)
    syntaxes = {"granite": "<|tool_call|>"}
    read = staticmethod(whole.read_granite)
    stream = staticmethod(streamed.stream_after("<|tool_call|>"))

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return f'"<|tool_call|>[" {json_call(b, function, i)} "]"'


class Firefunction(ToolFormat):
    name = "firefunction"
    openers = ("functools",)
    signs = ("functools",)
    syntaxes = {"firefunction": "functools"}
    read = staticmethod(whole.read_firefunction)
    stream = staticmethod(streamed.stream_after("functools"))

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return f'"functools[" {json_call(b, function, i)} "]"'


class MiniMax(ToolFormat):
    name = "minimax"
    openers = ("<minimax:tool_call>",)
    signs = ("<minimax:tool_call>",)
    syntaxes = {"minimax": "<minimax:tool_call>"}
    read = staticmethod(whole.read_minimax)
    stream = staticmethod(streamed.stream_minimax)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        params = xml_params(
            b,
            function,
            f"call{i}",
            "</parameter>",
            lambda k, v, _: f'"<parameter name=\\"" {k} "\\">" {v} "</parameter>\\n"',
        )
        return (
            f'"<minimax:tool_call>\\n<invoke name=\\"" {literal(function["name"])} "\\">\\n" {params} '
            '"</invoke>\\n</minimax:tool_call>"'
        )


class Seed(Qwen3Coder):
    """Qwen3-Coder's form in tags of its own, values without blank lines around them."""

    name = "seed"
    openers = ("<seed:tool_call>",)
    markers = ("<seed:tool_call>", "</seed:tool_call>")
    signs = ("<seed:tool_call>",)
    syntaxes = {"seed": "<seed:tool_call>"}
    tags = ("<seed:tool_call>", "</seed:tool_call>")
    pad = ""


class Gemma4(ToolFormat):
    """Arguments in a notation of their own: a constrained call is the bare JSON object,
    which its reader reads too."""

    name = "gemma4"
    openers = ("<|tool_call>",)
    markers = ("<|tool_call>", "<tool_call|>", '<|"|>')
    signs = ("<|tool_call>call:",)
    read = staticmethod(whole.read_gemma4)
    stream = staticmethod(streamed.stream_gemma4)

    def syntax(self, template: str) -> str:
        return "json"


class Dsml(ToolFormat):
    name = "dsml"
    openers = ("<｜DSML｜function_calls>", "<｜DSML｜invoke")
    signs = ("｜DSML｜",)
    syntaxes = {"dsml": "<｜DSML｜function_calls>"}
    read = staticmethod(whole.read_dsml)
    stream = staticmethod(streamed.stream_dsml)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        params = xml_params(
            b,
            function,
            f"call{i}",
            "</｜DSML｜parameter>",
            lambda k, v, raw: (
                f'"<｜DSML｜parameter name=\\"" {k} "\\" string=\\"{"true" if raw else "false"}\\">" {v} '
                '"</｜DSML｜parameter>\\n"'
            ),
        )
        return (
            f'"<｜DSML｜function_calls>\\n<｜DSML｜invoke name=\\"" {literal(function["name"])} "\\">\\n" {params} '
            '"</｜DSML｜invoke>\\n</｜DSML｜function_calls>"'
        )


class Pythonic(ToolFormat):
    """LFM2's Python call syntax: a constrained call is the bare JSON object, which its
    reader reads too."""

    name = "pythonic"
    openers = ("<|tool_call_start|>",)
    markers = ("<|tool_call_start|>", "<|tool_call_end|>")
    signs = ("<|tool_call_start|>", "<|tool_list_start|>", "List of tools: [")  # LFM2, 2.5
    read = staticmethod(whole.read_pythonic)
    stream = staticmethod(streamed.stream_pythonic)

    def syntax(self, template: str) -> str:
        return "json"


class ToolCallsTag(ToolFormat):
    name = "tool-calls"
    openers = ("<tool_calls>",)
    signs = ("<tool_calls>",)
    syntaxes = {"tool-calls": "<tool_calls>"}
    read = staticmethod(whole.read_tool_calls_tag)
    stream = staticmethod(streamed.stream_tool_calls_tag)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return f'"<tool_calls>[" {json_call(b, function, i)} "]</tool_calls>"'


class Apertus(ToolFormat):
    name = "apertus"
    openers = ("<|tools_prefix|>",)
    markers = ("<|tools_prefix|>", "<|tools_suffix|>")
    signs = ("<|tools_prefix|>",)
    syntaxes = {"apertus": "<|tools_prefix|>"}
    read = staticmethod(whole.read_apertus)
    stream = staticmethod(streamed.stream_apertus)

    def call(self, b: Builder, function: Mapping[str, Any], i: int, syntax: str) -> str:
        return f'"<|tools_prefix|>[{{" {_quoted(function)} ": " {arguments(b, function, i)} "}}]<|tools_suffix|>"'


def _quoted(function: Mapping[str, Any]) -> str:
    """The function's name as a JSON string, as a GBNF literal."""
    return literal(json.dumps(function["name"], ensure_ascii=False))


#: Every family, in the order :func:`detect` tries their signs: most specific first.
FAMILIES: tuple[ToolFormat, ...] = (
    Harmony(),
    Dsml(),
    Gemma4(),
    Seed(),
    Pythonic(),
    Apertus(),
    ToolCallsTag(),
    DeepSeek(),
    Kimi(),
    Glm(),
    MiniMax(),
    Qwen3Coder(),
    Mistral(),
    CommandR(),
    CommandRPlus(),
    Functionary(),
    Granite(),
    Firefunction(),
    Llama3(),
    Hermes(),
)

#: The families by name (the ``tool_format`` option's values).
FORMATS: dict[str, ToolFormat] = {family.name: family for family in FAMILIES}

#: The text each constrained call's syntax opens with, ``"json"`` (the bare object) too.
OPENERS: dict[str, str] = {
    **{syntax: opener for family in FAMILIES for syntax, opener in family.syntaxes.items()},
    "json": JSON_OPENER,
}


def detect(template: str) -> ToolFormat:
    """The tool-call format a chat template writes; ``hermes`` (what the tool instructions
    of a template without tools ask for) when none is recognised."""
    for family in FAMILIES:
        if any(sign in template for sign in family.signs):
            return family
    return FORMATS["hermes"]
