"""Constrained calls in every family's own syntax, on the real engine.

Each family's fixture is a tiny random-weight model with the family's real tokenizer (or one
that stands in) and its real chat template. Random weights write nothing sensible, so what
comes out under ``tool_choice`` is the grammar's doing alone: it must be one call of an
offered function in the family's own syntax, which the family's own reader (not the bare
JSON fallback) reads, with arguments valid under the function's JSON Schema."""

from __future__ import annotations

import json

import pytest
from hoshikage_llamacpp.dialects.tools.families import FORMATS, OPENERS
from hoshikage_llamacpp.dialects.tools.grammar import call_grammar
from hoshikage_llamacpp.grammar.build import literal, text_without

from tests.support.families import template

jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.timeout(600)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Kyoto", "Nara"]},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
            "required": ["city", "days"],
        },
    },
}
PING = {
    "type": "function",
    "function": {
        "name": "ping",
        "parameters": {
            "type": "object",
            "properties": {"host": {"type": "string", "enum": ["a.example", "b.example"]}},
            "required": ["host"],
        },
    },
}
TOOLS = (WEATHER, PING)
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
NO_THINKING = {"enable_thinking": False}

#: syntax -> (vocab, template, chat_template_kwargs, logit bias): the bias closes a think
#: block the prompt left open (random weights would think forever).
FAMILIES = {
    "hermes": ("qwen35", "Qwen-Qwen3-0.6B", NO_THINKING, None),
    "qwen3-coder": ("qwen35", "Qwen3-Coder", {}, None),
    "llama3": ("llama-bpe", "meta-llama-Llama-3.1-8B-Instruct", {}, None),
    "mistral": ("llama-spm", "unsloth-mistral-Devstral-Small-2507", {}, None),
    "mistral-old": ("llama-spm", "mistralai-Mistral-Nemo-Instruct-2407", {}, None),
    "harmony": ("qwen2", "openai-gpt-oss-120b", {}, None),
    # V3.1's template never shows the tools (they are taught in the hermes form then): here
    # with them shown, so its own syntax is used.
    "deepseek": (
        "qwen35",
        "{% if tools %}{{ tools | tojson }}{% endif %}" + template("deepseek-ai-DeepSeek-V3.1"),
        {},
        None,
    ),
    "deepseek-r1": ("qwen35", "llama-cpp-deepseek-r1", {}, {151668: 100.0}),  # </think>
    "glm": ("qwen2", "GLM-4.6", NO_THINKING, None),
    "kimi": ("qwen2", "Kimi-K2-Instruct", {}, None),
    "command-r": ("command-r", "CohereForAI-c4ai-command-r7b-12-2024-tool_use", {}, None),
    "functionary": ("llama-bpe", "meetkai-functionary-medium-v3.1", {}, None),
    "granite": ("llama-bpe", "ibm-granite-granite-3.3-2B-Instruct", {}, None),
    "firefunction": ("llama-bpe", "fireworks-ai-llama-3-firefunction-v2", {}, None),
    "minimax": ("qwen35", "MiniMax-M2", {}, {151668: 100.0}),  # its prompt opens <think>
    "seed": ("qwen35", "ByteDance-Seed-OSS", {}, None),
    "dsml": ("qwen35", "deepseek-ai-DeepSeek-V3.2", {}, None),
    "tool-calls": ("qwen2", "unsloth-Apriel-1.5", {}, None),
    "apertus": ("llama-bpe", "Apertus-8B-Instruct", {}, None),
    "command-r-plus": ("command-r", "CohereForAI-c4ai-command-r-plus-tool_use", {}, None),
}


def load(family_model, syntax: str, **options):
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    vocab, template, _, _ = FAMILIES[syntax]
    path = str(family_model(vocab, template))
    return LlamaCppModel.load(syntax, path, LlamaOptions(n_ctx=2048, parallel=1, **options))


def request(syntax: str, **fields):
    from hoshikage_core.protocol import GenerationRequest

    _, _, kwargs, bias = FAMILIES[syntax]
    if bias is None:
        # Thinking off: random weights that open a think block may never close it (the
        # think-first path has its own tests, with a bias that closes the block).
        fields.setdefault("reasoning", False)
    bias = fields.pop("logit_bias", bias)
    return GenerationRequest(
        messages=({"role": "user", "content": "weather?"},),
        temperature=0,
        max_tokens=200,
        template_kwargs=kwargs,
        logit_bias=bias,
        **fields,
    )


def run(model, req):
    from hoshikage_core.protocol import stream

    chunks = [chunk for _, chunk in stream(model, req)]
    return "".join(c.text for c in chunks), chunks[-1]


def valid(name: str, arguments) -> None:
    jsonschema.validate(arguments, SCHEMAS[name])


@pytest.mark.parametrize("syntax", list(FAMILIES))
def test_a_forced_call_is_the_familys_own_syntax_and_valid_under_the_schema(family_model, syntax):
    from hoshikage_llamacpp.frontend.planning import plan

    model = load(family_model, syntax)
    try:
        base = syntax.removesuffix("-old").removesuffix("-r1")
        assert model.tool_format.name == base
        named = {"type": "function", "function": {"name": "ping"}}
        for choice, names in (("required", ("get_weather", "ping")), (named, ("ping",))):
            _, last = run(model, request(syntax, tools=TOOLS, tool_choice=choice))
            assert last.finish_reason == "tool_calls", last
            (call,) = last.tool_calls
            assert call["function"]["name"] in names
            valid(call["function"]["name"], json.loads(call["function"]["arguments"]))
        # The same grammar on the same prompt as a plain completion (no reasoning split, no
        # call capture): the raw output is the family's syntax, read by its own reader.
        # (Thinking off: no think block first, which random weights might never close.)
        req = request(syntax, tools=TOOLS, tool_choice="required", reasoning=False)
        planned = plan(model, req)
        assert planned.grammar_trigger is None  # forced: from the first token
        raw = raw_output(model, req, planned.grammar)
        assert OPENERS[syntax] in raw, raw
        calls = FORMATS[base].read(raw[raw.index(OPENERS[syntax]) :])
        assert calls is not None and len(calls) == 1, raw
        name, arguments = calls[0]
        valid(name, json.loads(arguments) if isinstance(arguments, str) else arguments)
    finally:
        model.close()


def raw_output(model, req, grammar: str) -> str:
    """``req``'s chat prompt, rendered as the model renders it, completed under ``grammar``."""
    import attrs
    from hoshikage_llamacpp.frontend.planning import thinking_kwargs

    kwargs = {**thinking_kwargs(model.chat.template.source, req), **(req.template_kwargs or {})}
    prompt = model.chat.render(req.messages, req.tools, kwargs)
    text, _ = run(
        model,
        attrs.evolve(
            req, messages=None, prompt=prompt, tools=None, tool_choice=None, grammar=grammar
        ),
    )
    return text


def test_a_strict_tool_waits_for_the_call_marker_then_holds_the_call(family_model):
    """Free text first (no grammar), then the marker (pushed by a bias on it): from there
    the lazy grammar writes the XML call with the parameters of the schema."""
    from hoshikage_llamacpp.frontend.planning import plan

    model = load(family_model, "qwen3-coder")
    try:
        strict = {**WEATHER, "function": {**WEATHER["function"], "strict": True}}
        planned = plan(model, request("qwen3-coder", tools=(strict,)))
        assert planned.grammar_trigger == "<tool_call>"
        assert planned.grammar.startswith('root ::= "<tool_call>\\n<function=" "get_weather"')
        text, last = run(model, request("qwen3-coder", tools=(strict,), logit_bias={151657: 100.0}))
        assert last.finish_reason == "tool_calls", (text, last)
        valid("get_weather", json.loads(last.tool_calls[0]["function"]["arguments"]))
    finally:
        model.close()


def test_a_reasoning_family_may_think_before_a_forced_call(family_model):
    """Thinking on (Qwen3 opens the block itself): the grammar lets the block come first
    (pushed there by a bias on ``<think>``, and closed by one on ``</think>``), and the call
    follows it; the raw output shows the order, the answer the call."""
    import attrs
    from hoshikage_llamacpp.frontend.planning import plan

    model = load(family_model, "hermes")
    try:
        bias = {151667: 50.0, 151668: 100.0}  # <think>, </think>
        req = attrs.evolve(
            request("hermes", tools=TOOLS, tool_choice="required"),
            template_kwargs={},
            reasoning=None,
            logit_bias=bias,
        )
        _, last = run(model, req)
        assert last.finish_reason == "tool_calls", last
        call = last.tool_calls[0]["function"]
        valid(call["name"], json.loads(call["arguments"]))
        raw = raw_output(model, req, plan(model, req).grammar)
        assert raw.startswith("<think>") and raw.index("</think>") < raw.index("<tool_call>"), raw
    finally:
        model.close()


# ---- the grammar's pieces, on strings ---------------------------------------------------------


def _texts(word: str):
    """Every string over the word's letters and one other up to a length (short words), and
    random strings built from pieces of the word (long ones)."""
    import itertools
    import random

    alphabet = sorted(set(word)) + ["x"]
    if len(alphabet) <= 4:
        for length in range(len(word) + 4):
            yield from ("".join(letters) for letters in itertools.product(alphabet, repeat=length))
        return
    rng = random.Random(7)
    for _ in range(3000):
        parts = []
        for _ in range(rng.randrange(1, 5)):
            a = rng.randrange(len(word))
            parts.append(
                word[a : rng.randrange(a, len(word) + 1)] + rng.choice(["", "x", "<", "\n"])
            )
        yield "".join(parts)


@pytest.mark.parametrize("word", ["</parameter>", "aab", "abab", "aaa", "</think>"])
def test_text_without_a_word_never_contains_it(word):
    """The KMP rules, run as an automaton: a string is accepted exactly when it does not
    contain the word."""
    import re

    rules: dict[str, str] = {}
    start = text_without(word, "t", rules)
    moves: dict = {}
    for name, body in rules.items():
        state = int(name.split("-")[1])
        for lit_char, nxt in re.findall(r'"((?:\\.|[^"])+)" t-(\d+)', body):
            moves[(state, json.loads(f'"{lit_char}"'))] = int(nxt)
        excluded = re.search(r"\[\^(.*?)\] t-", body).group(1).replace("\\", "")
        moves[(state, "excluded")] = set(excluded)
    assert start == "t-0"
    for text in _texts(word):
        state = 0
        for c in text:
            if (state, c) in moves:
                state = moves[(state, c)]
            elif c in moves[(state, "excluded")]:
                state = -1
                break
            else:
                state = 0
        assert (state != -1) == (word not in text), text


def test_literals_escape_what_gbnf_needs():
    assert literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_every_familys_grammar_compiles_in_llama_cpp(family_model):
    """With a think block, several functions, and a function whose schema allows any
    parameter name."""
    from hoshikage_llamacpp.dialects.tools.grammar import Think

    free = {"type": "function", "function": {"name": "anything", "parameters": {"type": "object"}}}
    refs = {
        "type": "function",
        "function": {
            "name": "with.refs",
            "parameters": {
                "type": "object",
                "$defs": {"C": {"type": "string", "enum": ["a", "b"]}, "N": {"type": "object"}},
                "properties": {"c": {"$ref": "#/$defs/C"}, "n": {"$ref": "#/$defs/N"}},
                "required": ["c"],
            },
        },
    }
    model = load(family_model, "hermes")
    try:
        import llama_cpp

        vocab = model._vocab
        for syntax in [*FAMILIES, "json"]:
            fmt = FORMATS[syntax.removesuffix("-old").removesuffix("-r1").replace("json", "hermes")]
            template = {"mistral": "[ARGS]", "deepseek-r1": "```json"}.get(syntax, "")
            grammar, _ = call_grammar(
                fmt,
                (*TOOLS, free, refs),
                template=template,
                think=Think("<think>", "</think>"),
                bare=syntax == "json",
            )
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            assert sampler, (syntax, grammar)
            llama_cpp.llama_sampler_free(sampler)
    finally:
        model.close()
