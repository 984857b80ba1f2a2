"""Tool calls in each family's own form, from the real engine, through the official
clients: tiny fixtures with the family's real tokenizer and template are held to the
family's exact call syntax by a ``grammar``, and every surface gets the parsed call (with
the reasoning before it apart). Text before a call, several calls, a botched call (as
text), and a tool result sent back are covered too."""

from __future__ import annotations

import json

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(300)

KEY = "test-key"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
USER = [{"role": "user", "content": "Weather in Kyoto?"}]

#: family -> (vocab, template, grammar of the model's exact output)
FAMILIES = {
    "qwen3": (
        "qwen35",
        "Qwen-Qwen3-0.6B",
        'root ::= <think> "Call" " it" "." </think> "\\n\\n" <tool_call> '
        '"\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Kyoto\\"}}\\n" </tool_call>',
    ),
    "qwen3-coder": (
        "qwen35",
        "Qwen3-Coder",
        'root ::= <tool_call> "\\n<function=get_weather>\\n<parameter=city>\\nKyoto\\n</parameter>\\n'
        '</function>\\n" </tool_call>',
    ),
    "llama3": (
        "llama-bpe",
        "meta-llama-Llama-3.1-8B-Instruct",
        'root ::= <|python_tag|> "{\\"name\\": \\"get_weather\\", \\"parameters\\": {\\"city\\": \\"Kyoto\\"}}"',
    ),
    "gpt-oss": (
        "qwen2",
        "openai-gpt-oss-120b",
        'root ::= <|channel|> "analysis" <|message|> "Call" " it" "." <|end|> <|start|> "assistant" '
        '<|channel|> "commentary to=functions.get_weather " <|constrain|> "json" <|message|> '
        '"{\\"city\\": \\"Kyoto\\"}"',
    ),
}
REASONING = {"qwen3": "Call it.", "gpt-oss": "Call it."}


@pytest.fixture(scope="module")
def server(family_model):
    models = [
        {"name": name, "path": str(family_model(vocab, tpl)), "n_ctx": 2048, "parallel": 1}
        for name, (vocab, tpl, _) in FAMILIES.items()
    ]
    with running_server(
        {"server": {"api_key": KEY}, "unload": {"max_loaded": 4}, "models": models}
    ) as srv:
        yield srv


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)


def extra(family: str) -> dict:
    return {"grammar": FAMILIES[family][2], "temperature": 0}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_openai_chat_parses_the_familys_call_whole_and_streamed(oai, family):
    chat = oai.chat.completions.create(
        model=family, messages=USER, tools=TOOLS, extra_body=extra(family)
    )
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Kyoto"}
    assert not choice.message.content
    assert getattr(choice.message, "reasoning_content", None) == REASONING.get(family)
    stream = oai.chat.completions.create(
        model=family, messages=USER, tools=TOOLS, stream=True, extra_body=extra(family)
    )
    names, arguments, content = [], "", ""
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            for delta in c.delta.tool_calls or ():
                if delta.function.name:
                    names.append(delta.function.name)
                arguments += delta.function.arguments or ""
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Kyoto"}
    assert content == ""


@pytest.mark.parametrize("family", ["qwen3-coder", "gpt-oss"])
def test_anthropic_and_responses_get_the_call(oai, claude, family):
    tools = [{"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]}]
    message = claude.messages.create(
        model=family, max_tokens=200, messages=USER, tools=tools, extra_body=extra(family)
    )
    uses = [b for b in message.content if b.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Kyoto"})]
    response = oai.responses.create(
        model=family,
        input="Weather in Kyoto?",
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "parameters": TOOLS[0]["function"]["parameters"],
            }
        ],
        extra_body=extra(family),
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Kyoto"})
    ]


def test_text_before_a_call_and_two_calls(oai):
    grammar = (
        'root ::= "Let" " me" " check" "." "\\n" call "\\n" call\n'
        'call ::= <tool_call> "{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"" ("Kyoto" | "Nara") '
        '"\\"}}" </tool_call>'
    )
    chat = oai.chat.completions.create(
        model="qwen3",
        messages=USER,
        tools=TOOLS,
        extra_body={
            "grammar": grammar,
            "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": False},
        },
    )
    message = chat.choices[0].message
    assert message.content.strip() == "Let me check."
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_weather"]


def test_a_botched_call_reaches_the_client_as_text(oai):
    grammar = 'root ::= <tool_call> "{\\"name\\": \\"get_weather\\", \\"arguments\\": {broken" </tool_call>'
    chat = oai.chat.completions.create(
        model="qwen3", messages=USER, tools=TOOLS, extra_body={"grammar": grammar, "temperature": 0}
    )
    choice = chat.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert "<tool_call>" in choice.message.content and "broken" in choice.message.content


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_tool_result_sent_back_renders(oai, family):
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Kyoto"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    chat = oai.chat.completions.create(
        model=family, messages=messages, tools=TOOLS, max_tokens=2, extra_body={"temperature": 0}
    )
    assert chat.usage.prompt_tokens > 20
