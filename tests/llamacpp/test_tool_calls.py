"""Each family's tool-call parser on the outputs llama.cpp's tests/test-chat.cpp expects
(``special_function(arg1=1)``, and its ``special_function_with_opt(arg1=1, arg2=2)``),
ported as data; the format detected from each family's real template; botched calls are
None (the engine then gives them back as text)."""

from __future__ import annotations

import json

import pytest
from hoshikage_llamacpp.dialects.tools.calls import parse
from hoshikage_llamacpp.dialects.tools.families import FORMATS, detect

from tests.support.families import template

ONE = [("special_function", {"arg1": 1})]
TWO = [("special_function", {"arg1": 1}), ("special_function_with_opt", {"arg1": 1, "arg2": 2})]
KNOWN = ["special_function", "special_function_with_opt", "get_time", "get_weather", "empty_args"]
PARIS = [("get_time", {"city": "Paris"})]

CASES = [
    (
        "hermes",
        '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>',
        ONE,
    ),
    ("hermes", '{"name": "special_function", "arguments": {"arg1": 1}}', ONE),
    (
        "qwen3-coder",
        "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>",
        ONE,
    ),
    (
        "qwen3-coder",
        "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=special_function_with_opt>\n<parameter=arg1>\n1\n</parameter>\n"
        "<parameter=arg2>\n2\n</parameter>\n</function>\n</tool_call>",
        TWO,
    ),
    ("llama3", '{"name": "special_function", "parameters": {"arg1": 1}}', ONE),
    ("llama3", '<|python_tag|>{"name": "special_function", "parameters": {"arg1": 1}}', ONE),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}]',
        ONE,
    ),
    ("mistral", '[TOOL_CALLS]special_function[ARGS]{"arg1":1}', ONE),
    (
        "mistral",
        '[TOOL_CALLS]special_function[ARGS]{"arg1": 1}'
        '[TOOL_CALLS]special_function_with_opt[ARGS]{"arg1": 1, "arg2": 2}',
        TWO,
    ),
    (
        "harmony",
        '<|channel|>commentary to=functions.special_function <|constrain|>json<|message|>{"arg1": 1}',
        ONE,
    ),
    (
        "deepseek",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>special_function<｜tool▁sep｜>"
        '{"arg1": 1}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        ONE,
    ),
    (
        "deepseek",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n```json\n"
        '{"arg1": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        ONE,
    ),
    (
        "glm",
        "<tool_call>special_function\n<arg_key>arg1</arg_key>\n<arg_value>1</arg_value>\n</tool_call>",
        ONE,
    ),
    (
        "glm",
        "<tool_call>special_function<arg_key>arg1</arg_key><arg_value>1</arg_value></tool_call>"
        "<tool_call>special_function_with_opt<arg_key>arg1</arg_key><arg_value>1</arg_value>"
        "<arg_key>arg2</arg_key><arg_value>2</arg_value></tool_call>",
        TWO,
    ),
    (
        "kimi",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.special_function:0<|tool_call_argument_begin|>"
        '{"arg1": 1}<|tool_call_end|><|tool_calls_section_end|>',
        ONE,
    ),
    (
        "kimi",
        '<|tool_call_begin|>functions.special_function:0<|tool_call_argument_begin|>{"arg1": 1}<|tool_call_end|>'
        "<|tool_call_begin|>functions.special_function_with_opt:1<|tool_call_argument_begin|>"
        '{"arg1": 1, "arg2": 2}<|tool_call_end|>',
        TWO,
    ),
    (
        "command-r",
        '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "special_function", "parameters": {"arg1": 1}}\n]'
        "<|END_ACTION|>",
        ONE,
    ),
    ("functionary", '>>>special_function\n{"arg1": 1}', ONE),
    ("functionary", '<function=special_function>{"arg1": 1}</function>', ONE),
    ("granite", '<|tool_call|>[{"name": "special_function", "arguments": {"arg1": 1}}]', ONE),
    ("firefunction", 'functools[{"name": "special_function", "arguments": {"arg1": 1}}]', ONE),
    (
        "minimax",
        '<minimax:tool_call>\n<invoke name="special_function">\n<parameter name="arg1">1</parameter>\n</invoke>\n'
        "</minimax:tool_call>",
        ONE,
    ),
    # Gemma 4: strings between <|"|> marks, bare keys.
    (
        "gemma4",
        "<|tool_call>call:special_function{arg1:42}<tool_call|>",
        [("special_function", {"arg1": 42})],
    ),
    ("gemma4", '<|tool_call>call:get_time{city:<|"|>Paris<|"|>}<tool_call|>', PARIS),
    ("gemma4", "<|tool_call>call:empty_args{}<tool_call|>", [("empty_args", {})]),
    (
        "gemma4",
        "<|tool_call>call:special_function{arg1:-7}<tool_call|>",
        [("special_function", {"arg1": -7})],
    ),
    (
        "gemma4",
        "<|tool_call>call:special_function{arg1:1.5e10}<tool_call|>",
        [("special_function", {"arg1": 1.5e10})],
    ),
    (
        "gemma4",
        "<|tool_call>call:special_function{arg1:true}<tool_call|>",
        [("special_function", {"arg1": True})],
    ),
    (
        "gemma4",
        "<|tool_call>call:special_function{arg1:null}<tool_call|>",
        [("special_function", {"arg1": None})],
    ),
    (
        "gemma4",
        '<|tool_call>call:special_function{arg1:[<|"|>buy milk<|"|>,<|"|>walk, dog: now<|"|>]}<tool_call|>',
        [("special_function", {"arg1": ["buy milk", "walk, dog: now"]})],
    ),
    (
        "gemma4",
        '<|tool_call>call:special_function{arg1:{theme:<|"|>dark<|"|>,count:3}}<tool_call|>',
        [("special_function", {"arg1": {"theme": "dark", "count": 3}})],
    ),
    (
        "gemma4",
        '<|tool_call>call:get_time{city:<|"|>London<|"|>}<tool_call|>'
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>',
        [("get_time", {"city": "London"}), ("get_weather", {"city": "Paris"})],
    ),
    # DeepSeek V3.2 / V4 DSML: string="true" raw, string="false" JSON.
    (
        "dsml",
        '<｜DSML｜function_calls>\n<｜DSML｜invoke name="special_function">\n'
        '<｜DSML｜parameter name="arg1" string="false">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
        "</｜DSML｜function_calls>",
        ONE,
    ),
    (
        "dsml",
        '<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_time">\n'
        '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
        '<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n</｜DSML｜function_calls>",
        [("get_time", {"city": "Paris"}), ("get_weather", {"city": "Paris"})],
    ),
    # LFM2: Python call syntax.
    ("pythonic", "<|tool_call_start|>[special_function(arg1=1)]<|tool_call_end|>", ONE),
    ("pythonic", '<|tool_call_start|>[get_time(city="Paris")]<|tool_call_end|>', PARIS),
    (
        "pythonic",
        "<|tool_call_start|>[special_function(arg1=1), special_function_with_opt(arg1=1, arg2=2)]<|tool_call_end|>",
        TWO,
    ),
    # Apriel 1.5/1.6 (a JSON list) and MiniMax-M1 (a JSON object a line).
    (
        "tool-calls",
        '<tool_calls>[{"name": "special_function", "arguments": {"arg1": 1}}]</tool_calls>',
        ONE,
    ),
    (
        "tool-calls",
        '<tool_calls>\n{"name": "special_function", "arguments": {"arg1": 1}}\n'
        '{"name": "special_function_with_opt", "arguments": {"arg1": 1, "arg2": 2}}\n</tool_calls>',
        TWO,
    ),
    (
        "command-r-plus",
        'Action:\n```json\n[\n    {\n        "tool_name": "special_function",\n        "parameters": {"arg1": 1}\n'
        "    }\n]\n```",
        ONE,
    ),
    ("apertus", '<|tools_prefix|>[{"special_function": {"arg1": 1}}]<|tools_suffix|>', ONE),
    (
        "seed",
        "<seed:tool_call>\n<function=special_function>\n<parameter=arg1>1</parameter>\n</function>\n</seed:tool_call>",
        ONE,
    ),
]


@pytest.mark.parametrize("fmt,text,expected", CASES)
def test_expected_parses_from_llama_cpps_test_chat(fmt, text, expected):
    calls = parse(FORMATS[fmt], text, KNOWN)
    assert calls is not None
    assert [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls
    ] == expected
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)


@pytest.mark.parametrize(
    "fmt,text",
    [
        ("hermes", '<tool_call>{"name": "special_function", "arguments": {"arg1": </tool_call>'),
        ("hermes", '<tool_call>{"name": "unknown_function", "arguments": {}}</tool_call>'),
        ("mistral", "[TOOL_CALLS]special_function[ARGS]{not json"),
        ("harmony", "<|channel|>commentary to=functions.special_function<|message|>{oops"),
        ("kimi", "<|tool_call_begin|>functions.special_function:0<|tool_call_argument_begin|>[1,"),
        ("deepseek", "<｜tool▁call▁begin｜>special_function<｜tool▁sep｜>{"),
        ("gemma4", '<|tool_call>call:special_function{arg1:<|"|>open<tool_call|>'),
        (
            "pythonic",
            "<|tool_call_start|>[special_function(arg1=__import__('os'))]<|tool_call_end|>",
        ),
        ("pythonic", "<|tool_call_start|>[special_function(1)]<|tool_call_end|>"),
        ("tool-calls", '<tool_calls>[{"name": "special_function", "arguments": </tool_calls>'),
        ("apertus", '<|tools_prefix|>[{"special_function": 1}]<|tools_suffix|>'),
        ("command-r-plus", "Action:\n```json\n[{oops\n```"),
        ("dsml", '<｜DSML｜invoke name="unknown">\n</｜DSML｜invoke>'),
    ],
)
def test_a_botched_call_is_not_a_call(fmt, text):
    assert parse(FORMATS[fmt], text, KNOWN) is None


DETECTED = {
    "Qwen-Qwen2.5-7B-Instruct": "hermes",
    "Qwen-Qwen3-0.6B": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": "hermes",
    "Qwen3-Coder": "qwen3-coder",
    "Qwen3.5-4B": "qwen3-coder",
    "meta-llama-Llama-3.1-8B-Instruct": "llama3",
    "meta-llama-Llama-3.3-70B-Instruct": "llama3",
    "mistralai-Mistral-Nemo-Instruct-2407": "mistral",
    "unsloth-mistral-Devstral-Small-2507": "mistral",
    "openai-gpt-oss-120b": "harmony",
    "deepseek-ai-DeepSeek-V3.1": "deepseek",
    "llama-cpp-deepseek-r1": "deepseek",
    "GLM-4.6": "glm",
    "Kimi-K2-Instruct": "kimi",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": "command-r",
    "meetkai-functionary-medium-v3.2": "functionary",
    "meetkai-functionary-medium-v3.1": "functionary",
    "ibm-granite-granite-3.3-2B-Instruct": "granite",
    "fireworks-ai-llama-3-firefunction-v2": "firefunction",
    "MiniMax-M2": "minimax",
    "google-gemma-4-31B-it": "gemma4",
    "google-gemma-4-31B-it-interleaved": "gemma4",
    "deepseek-ai-DeepSeek-V3.2": "dsml",
    "deepseek-ai-DeepSeek-V4": "dsml",
    "deepseek-ai-DeepSeek-V4-Flash-0731": "dsml",
    "ByteDance-Seed-OSS": "seed",
    "LFM2-8B-A1B": "pythonic",
    "LFM2.5-8B-A1B": "pythonic",
    "LFM2.5-Instruct": "pythonic",
    "unsloth-Apriel-1.5": "tool-calls",
    "Apriel-1.6-15b-Thinker-fixed": "tool-calls",
    "MiniMax-M1": "tool-calls",
    "Apertus-8B-Instruct": "apertus",
    "meta-llama-Llama-3.2-3B-Instruct": "llama3",
    "CohereForAI-c4ai-command-r-plus-tool_use": "command-r-plus",
}


@pytest.mark.parametrize("name", list(DETECTED))
def test_the_format_is_detected_from_the_template(name):
    assert detect(template(name)).name == DETECTED[name]


# ---- constrained calls on the real engine ---------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Kyoto", "Nara"]}},
            "required": ["city"],
        },
    },
}
TOOL_CALL = 151657  # Qwen's <tool_call>


@pytest.fixture(scope="module")
def qwen3(family_model):
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    path = str(family_model("qwen35", "Qwen-Qwen3-0.6B"))
    model = LlamaCppModel.load("qwen3", path, LlamaOptions(n_ctx=1024, parallel=1))
    yield model
    model.close()


def generate(model, **fields):
    from hoshikage_core.protocol import GenerationRequest, stream

    request = GenerationRequest(
        messages=({"role": "user", "content": "weather?"},),
        temperature=0,
        max_tokens=60,
        template_kwargs={"enable_thinking": False},
        **fields,
    )
    return [chunk for _, chunk in stream(model, request)][-1]


def test_a_forced_call_is_written_in_the_familys_own_syntax(qwen3):
    from hoshikage_llamacpp.frontend.planning import plan

    request_fields = {"tools": (WEATHER,), "tool_choice": "required"}
    from hoshikage_core.protocol import GenerationRequest

    planned = plan(
        qwen3, GenerationRequest(messages=({"role": "user", "content": "x"},), **request_fields)
    )
    # Thinking is on: the think block may come first, then the call in hermes syntax.
    assert planned.grammar.startswith('root ::= ( "<think>" ') and planned.grammar_trigger is None
    assert '"{\\"name\\": " "\\"get_weather\\""' in planned.grammar
    last = generate(qwen3, **request_fields)
    assert last.finish_reason == "tool_calls"
    assert json.loads(last.tool_calls[0]["function"]["arguments"])["city"] in ("Kyoto", "Nara")


def test_a_strict_tool_is_held_to_its_schema_from_the_call_marker_on(qwen3):
    """No tool_choice: the model writes freely until it opens a call (here pushed to by a
    logit bias on ``<tool_call>``); from there a lazy grammar holds it to the schema."""
    strict = {**WEATHER, "function": {**WEATHER["function"], "strict": True}}
    last = generate(qwen3, tools=(strict,), logit_bias={TOOL_CALL: 100.0})
    assert last.finish_reason == "tool_calls", last
    assert json.loads(last.tool_calls[0]["function"]["arguments"])["city"] in ("Kyoto", "Nara")
    free = generate(qwen3, tools=(WEATHER,), logit_bias={TOOL_CALL: 100.0})
    assert free.finish_reason != "tool_calls"  # without strict, nothing makes it a valid call
