"""Every chat template the pinned llama.cpp vendors (``models/templates/*.jinja``, 70 real
models' templates) renders a 5-turn agent conversation and its variants through
:class:`~hoshikage_llamacpp.dialects.chat.ChatRenderer`, and what was said is in the prompt: the
system text, both user turns, the tool call's name and argument, the tool's result.
"""

from __future__ import annotations

import functools
import json

import pytest

pytest.importorskip("jinja2")

from tests.support.families import template, template_names  # noqa: E402

SYSTEM = "You are Hoshi, a weather agent."
FIRST = "What is the weather in Kyoto?"
THOUGHT = "The user wants Kyoto's weather: call get_weather."
RESULT = "sunny, 21 degrees"
SECOND = "And tomorrow in Osaka?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def call(i: int, city: str) -> dict:
    return {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
    }


def conversation(*, system=True, reasoning=True, calls=1) -> list[dict]:
    cities = ["Kyoto", "Nara", "Kobe"][:calls]
    assistant = {
        "role": "assistant",
        "content": "",
        "tool_calls": [call(i, c) for i, c in enumerate(cities)],
    }
    if reasoning:
        assistant["reasoning_content"] = THOUGHT
    msgs = [{"role": "system", "content": SYSTEM}] if system else []
    msgs += [{"role": "user", "content": FIRST}, assistant]
    msgs += [
        {
            "role": "tool",
            "tool_call_id": f"call_{i}",
            "name": "get_weather",
            "content": f"{RESULT} in {c}",
        }
        for i, c in enumerate(cities)
    ]
    msgs.append({"role": "user", "content": SECOND})
    return msgs


VARIANTS = {
    "agent": {},
    "no-reasoning": {"reasoning": False},
    "no-system": {"system": False},
    "two-calls": {"calls": 2},
}


@functools.cache
def renderer(name: str):
    from hoshikage_llamacpp.dialects.chat import ChatRenderer, TemplateChoice

    return ChatRenderer(TemplateChoice(template(name), (), name), "<s>", "</s>")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", template_names())
def test_every_vendored_template_renders_the_agent_conversation(name, variant):
    options = VARIANTS[variant]
    prompt = renderer(name).render(conversation(**options), TOOLS)
    for text in (FIRST, SECOND, "get_weather", "Kyoto", RESULT):
        assert text in prompt, f"{text!r} missing from the prompt of {name}"
    if options.get("system", True):
        assert SYSTEM in prompt
    if options.get("calls") == 2:
        assert "Nara" in prompt


def test_seventy_templates_are_vendored():
    assert len(template_names()) == 70


def test_reasoning_of_earlier_turns_goes_back_where_the_template_writes_it():
    """Qwen3 writes ``reasoning_content`` back for the turns after the last user message
    (the agent loop still running) and drops it for older ones, as its template says."""
    running = conversation()[:-1]  # ends with the tool result: the loop goes on
    qwen3 = renderer("Qwen-Qwen3-0.6B")
    assert f"<think>\n{THOUGHT}\n</think>" in qwen3.render(running, TOOLS)
    assert THOUGHT not in qwen3.render(conversation(), TOOLS)


def test_template_kwargs_per_model_and_per_request():
    from hoshikage_llamacpp.dialects.chat import ChatRenderer, TemplateChoice

    user = [{"role": "user", "content": FIRST}]
    choice = TemplateChoice(template("Qwen-Qwen3-0.6B"), (), "test")
    thinking = ChatRenderer(choice, "", "")
    assert thinking.render(user).endswith("<|im_start|>assistant\n")
    off = ChatRenderer(choice, "", "", {"enable_thinking": False})
    assert off.render(user).endswith("<think>\n\n</think>\n\n")
    assert off.render(user, kwargs={"enable_thinking": True}).endswith("assistant\n")
    from hoshikage_core.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="may not set 'messages'"):
        off.render(user, kwargs={"messages": []})


def test_a_template_cannot_reach_python_internals():
    from hoshikage_core.errors import InvalidRequest
    from hoshikage_llamacpp.dialects.chat import ChatRenderer, TemplateChoice

    for source in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% for m in messages %}{{ m.__class__ }}{% endfor %}",
    ):
        chat = ChatRenderer(TemplateChoice(source, (), "test"), "", "")
        # The sandbox answers an unsafe attribute with undefined (or refuses the call).
        try:
            out = chat.render([{"role": "user", "content": "x"}])
        except InvalidRequest as exc:
            out = str(exc)
        assert "<class" not in out and "<function" not in out and "builtins" not in out


def test_raise_exception_is_the_clients_error():
    from hoshikage_core.errors import InvalidRequest

    chat = renderer("google-gemma-2-2b-it")
    # Gemma 2 refuses roles out of order with raise_exception; no rewrite makes an
    # assistant-first conversation valid there.
    with pytest.raises(InvalidRequest, match="cannot render"):
        chat.render([{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}])
