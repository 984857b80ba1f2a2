"""Reasoning split from the answer: detection from the real templates, the splitter on
strings cut at every position (a marker split across tokens splits the same), and the real
engine under a grammar on the Qwen3 fixture (a real tokenizer: ``<think>`` is one token)."""

from __future__ import annotations

import pytest
from hoshikage_llamacpp.dialects.reasoning import FORMS, Splitter, detect, opens_in_prompt

from tests.support.families import template

DETECTED = {
    "Qwen-Qwen3-0.6B": "think",
    "Qwen3.5-4B": "think",
    "Qwen-QwQ-32B": "think",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "think",
    "deepseek-ai-DeepSeek-V3.1": "think",
    "GLM-4.6": "think",
    "Kimi-K2-Thinking": "think",
    "MiniMax-M2": "think",
    "HuggingFaceTB-SmolLM3-3B": "think",
    "NVIDIA-Nemotron-Nano-v2": "think",
    "mistralai-Ministral-3-14B-Reasoning-2512": "mistral",
    "ByteDance-Seed-OSS": "seed",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": "command-r",
    "google-gemma-4-31B-it": "gemma4",
    "openai-gpt-oss-120b": "harmony",
    "meta-llama-Llama-3.1-8B-Instruct": None,
    "Qwen-Qwen2.5-7B-Instruct": None,
    "mistralai-Mistral-Nemo-Instruct-2407": None,
}


@pytest.mark.parametrize("name", list(DETECTED))
def test_the_form_is_detected_from_the_template(name):
    form = detect(template(name))
    assert (form.name if form else None) == DETECTED[name]


def split_all(form_name: str, text: str, cut: int, inside=False, show=True):
    splitter = Splitter(FORMS[form_name], inside=inside, show=show)
    pieces = [text[:cut], text[cut:]] if cut else [text]
    reasoning, answer = "", ""
    for piece in pieces:
        r, a = splitter.feed(piece)
        reasoning, answer = reasoning + r, answer + a
    r, a = splitter.finish()
    return reasoning + r, answer + a


CASES = [
    ("think", "<think>\nI should greet.\n</think>\n\nHello!", False, "I should greet.\n", "Hello!"),
    ("think", "I should greet.\n</think>\n\nHello!", True, "I should greet.\n", "Hello!"),
    ("think", "Hello, no reasoning here.", False, "", "Hello, no reasoning here."),
    ("think", "<think>\ncut off by max_tokens", False, "cut off by max_tokens", ""),
    ("mistral", "[THINK]Plan it.[/THINK]Done.", False, "Plan it.", "Done."),
    ("seed", "<seed:think>Hmm.</seed:think>Answer.", False, "Hmm.", "Answer."),
    ("command-r", "<|START_THINKING|>Hmm.<|END_THINKING|>Answer.", False, "Hmm.", "Answer."),
    ("gemma4", "<|channel>thought\nHmm.<channel|>Answer.", False, "Hmm.", "Answer."),
    (
        "harmony",
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Hi.",
        False,
        "Think.",
        "Hi.",
    ),
]


@pytest.mark.parametrize("form,text,inside,reasoning,answer", CASES)
def test_split_at_every_cut(form, text, inside, reasoning, answer):
    for cut in range(len(text) + 1):
        assert split_all(form, text, cut, inside=inside) == (reasoning, answer), cut


def test_thinking_off_never_shows_reasoning():
    assert split_all("think", "<think>secret</think>Hello", 9, show=False) == ("", "Hello")


def test_a_prompt_that_opens_the_think_block():
    assert opens_in_prompt(FORMS["think"], "<|im_start|>assistant\n<think>\n")
    assert not opens_in_prompt(FORMS["think"], "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert opens_in_prompt(FORMS["harmony"], "<|start|>assistant<|channel|>analysis<|message|>")


# ---- the real engine ----------------------------------------------------------------------

THOUGHT = 'root ::= <think> "I" " should" " greet" "." </think> "\\n\\nHello" "!"'
USER = ({"role": "user", "content": "hi"},)


@pytest.fixture(scope="module")
def qwen3(family_model):
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    model = LlamaCppModel.load(
        "qwen3",
        str(family_model("qwen35", "Qwen-Qwen3-0.6B")),
        LlamaOptions(n_ctx=1024, parallel=2),
    )
    yield model
    model.close()


@pytest.fixture(scope="module")
def qwen35(family_model):
    """Qwen3.5's template opens the think block in the generation prompt."""
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    model = LlamaCppModel.load(
        "qwen35", str(family_model("qwen35", "Qwen3.5-4B")), LlamaOptions(n_ctx=1024, parallel=1)
    )
    yield model
    model.close()


def run(model, **fields):
    from hoshikage_core.protocol import GenerationRequest, stream

    request = GenerationRequest(messages=USER, **{"temperature": 0, **fields})
    chunks = [chunk for _, chunk in stream(model, request)]
    return chunks, "".join(c.reasoning for c in chunks), "".join(c.text for c in chunks)


def test_engine_splits_reasoning_from_the_answer_token_by_token(qwen3):
    chunks, reasoning, answer = run(qwen3, grammar=THOUGHT)
    assert (reasoning, answer) == ("I should greet.", "Hello!")
    assert any(c.reasoning for c in chunks[:-1]) and any(c.text for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert 0 < last.reasoning_tokens < last.completion_tokens


def test_stop_and_max_tokens_inside_the_reasoning_end_cleanly(qwen3):
    chunks, reasoning, answer = run(qwen3, grammar=THOUGHT, stop=("greet",))
    assert (reasoning, answer, chunks[-1].finish_reason) == ("I should ", "", "stop")
    chunks, reasoning, answer = run(qwen3, grammar=THOUGHT, max_tokens=3)
    assert reasoning and "I should greet.".startswith(reasoning), reasoning
    assert (answer, chunks[-1].finish_reason) == ("", "length")


def test_thinking_off_uses_the_templates_switch_and_shows_no_reasoning(qwen3):
    prompt = qwen3.chat.render(list(USER), kwargs={"enable_thinking": False})
    assert prompt.endswith("<think>\n\n</think>\n\n")
    _, reasoning, answer = run(qwen3, grammar=THOUGHT, reasoning=False)
    assert (reasoning, answer) == ("", "Hello!")


def test_reasoning_off_model_option_passes_the_raw_text(family_model):
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    path = str(family_model("qwen35", "Qwen-Qwen3-0.6B"))
    model = LlamaCppModel.load("raw", path, LlamaOptions(n_ctx=512, parallel=1, reasoning="off"))
    try:
        _, reasoning, answer = run(model, grammar=THOUGHT)
    finally:
        model.close()
    assert (reasoning, answer) == ("", "<think>I should greet.</think>\n\nHello!")


def test_the_budget_closes_the_think_block_with_the_end_marker(qwen35):
    """Qwen3.5's prompt opens the block; at 4 reasoning tokens the engine inserts
    ``</think>`` and the answer follows."""
    chunks, reasoning, answer = run(
        qwen35, temperature=1.0, seed=3, max_tokens=16, reasoning_budget=4
    )
    last = chunks[-1]
    assert 4 <= last.reasoning_tokens <= 4 + 3  # the budget, then the end marker's tokens
    assert last.completion_tokens - last.reasoning_tokens >= 8  # then the answer
    free, _, _ = run(qwen35, temperature=1.0, seed=3, max_tokens=16)
    assert free[-1].reasoning_tokens == 16  # unbounded, it never left the block


HARMONY = (
    'root ::= <|channel|> "analysis" <|message|> "Think" "." <|end|> '
    '<|start|> "assistant" <|channel|> "final" <|message|> "Hi" "."'
)


def test_harmony_channels_on_the_real_engine(family_model):
    """gpt-oss's template with harmony's markers as control tokens: the analysis channel is
    reasoning, the final channel the answer (the markers render because they are preserved)."""
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    path = str(family_model("qwen2", "openai-gpt-oss-120b"))
    model = LlamaCppModel.load("gpt-oss", path, LlamaOptions(n_ctx=2048, parallel=1))
    try:
        assert model.reasoning.name == "harmony"
        chunks, reasoning, answer = run(model, grammar=HARMONY)
    finally:
        model.close()
    assert (reasoning, answer) == ("Think.", "Hi.")
    assert chunks[-1].reasoning_tokens >= 2


# ---- the default: enable_thinking true, as llama-server passes it --------------------------

R1_DISTILL = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"
R1_OUTPUT = 'root ::= "Plan" " it" "." "</think>" "\\n\\n" "Done" "."'


@pytest.fixture(scope="module")
def r1_distill(family_model):
    """DeepSeek-R1-Distill's template tests ``if not enable_thinking``: left undefined, it
    would close the think block in the generation prompt."""
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    model = LlamaCppModel.load(
        "r1", str(family_model("qwen2", R1_DISTILL)), LlamaOptions(n_ctx=1024, parallel=1)
    )
    yield model
    model.close()


def planned(model, **fields):
    from hoshikage_core.protocol import GenerationRequest
    from hoshikage_llamacpp.frontend.planning import plan

    return plan(model, GenerationRequest(messages=USER, **fields))


def test_no_reasoning_setting_means_thinking_on(r1_distill):
    """With nothing said, the prompt leaves the think block open and the reasoning is
    reasoning (it came back as answer text when ``enable_thinking`` was left undefined)."""
    assert r1_distill.reasoning is not None and r1_distill.reasoning.name == "think"
    default = planned(r1_distill)
    assert default.reasoning_open
    assert default.tokens == planned(r1_distill, reasoning=True).tokens
    _, reasoning, answer = run(r1_distill, grammar=R1_OUTPUT)
    assert (reasoning, answer) == ("Plan it.", "Done.")
    # Turned off by the request, the template closes the block itself.
    off = planned(r1_distill, reasoning=False)
    assert not off.reasoning_open and len(off.tokens) > len(default.tokens)


def test_the_models_own_template_kwargs_still_set_the_default(family_model):
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    path = str(family_model("qwen2", R1_DISTILL))
    options = LlamaOptions(n_ctx=512, parallel=1, chat_template_kwargs={"enable_thinking": False})
    model = LlamaCppModel.load("r1-off", path, options)
    try:
        assert not planned(model).reasoning_open
        assert planned(model, reasoning=True).reasoning_open
    finally:
        model.close()


@pytest.mark.parametrize(
    "name, same",
    [
        ("Qwen-Qwen3-0.6B", True),  # tests `enable_thinking is defined and ... is false`
        ("GLM-4.6", True),
        ("deepseek-ai-DeepSeek-V3.1", False),  # undefined was "off": now on, as llama-server
        (R1_DISTILL, False),  # undefined was "off" (`not enable_thinking`)
    ],
)
def test_what_the_default_changes_per_template(name, same):
    """The default (true) against ``enable_thinking`` left undefined, as it was: the same
    prompt for templates that treat undefined as on; thinking now on for the others."""
    from hoshikage_llamacpp.dialects.templating import Template

    tmpl = Template(template(name), bos_token="", eos_token="")
    messages = [{"role": "user", "content": "hi"}]
    undefined = tmpl.render(messages, None, add_generation_prompt=True)
    on = tmpl.render(messages, None, add_generation_prompt=True, enable_thinking=True)
    assert (undefined == on) is same
    off = tmpl.render(messages, None, add_generation_prompt=True, enable_thinking=False)
    assert on != off  # the template has the switch, and true is "on"
    assert "</think>" not in on[-20:]
