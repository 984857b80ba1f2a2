"""Tool calls in each family's own form, from the real engine, through the official
clients: tiny fixtures with the family's real tokenizer and template are held to the
family's exact call syntax by a ``grammar``, and every surface gets the parsed call (with
the reasoning before it apart). Text before a call, several calls, a botched call (as
text), and a tool result sent back are covered too.

Streamed, a call goes out as it is generated: its name first, then argument deltas (OpenAI
``delta.tool_calls``, Anthropic ``input_json_delta``, Responses
``response.function_call_arguments.delta``) that join to the whole call's arguments."""

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
#: More families whose calls are streamed (not in FAMILIES: Mistral's template refuses the
#: short tool-call ids of test_a_tool_result_sent_back_renders).
MORE = {
    "mistral": (
        "llama-spm",
        "Mistral-Small-3.2-24B-Instruct-2506",
        'root ::= "[TOOL_CALLS]get_weather[ARGS]{\\"city\\": \\"Kyoto\\"}"',
    ),
}
GRAMMARS = {**FAMILIES, **MORE}
STREAMED = ["qwen3", "qwen3-coder", "llama3", "gpt-oss", "mistral"]


@pytest.fixture(scope="module")
def server(family_model):
    models = [
        {"name": name, "path": str(family_model(vocab, tpl)), "n_ctx": 2048, "parallel": 1}
        for name, (vocab, tpl, _) in GRAMMARS.items()
    ]
    with running_server(
        {"server": {"api_key": KEY}, "unload": {"max_loaded": len(models)}, "models": models}
    ) as srv:
        yield srv


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)


def extra(family: str) -> dict:
    return {"grammar": GRAMMARS[family][2], "temperature": 0}


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


# ---- streamed as they are generated ---------------------------------------------------------

RESPONSES_TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": TOOLS[0]["function"]["parameters"]}
]
CLAUDE_TOOLS = [{"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]}]


def chat_deltas(stream):
    """The ``delta.tool_calls`` entries of a chat stream, in order, and the content."""
    deltas, content = [], ""
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.content:
                assert not deltas, "text came after a call had started"
                content += c.delta.content
            deltas += c.delta.tool_calls or ()
    return deltas, content


def calls_of(deltas):
    """Per call index, [id, name, arguments joined]; checks OpenAI's delta shapes: the first
    of a call has its id, type and name with empty arguments, the others only arguments."""
    calls: dict[int, list] = {}
    for d in deltas:
        if d.index not in calls:
            assert d.id and d.type == "function" and d.function.name and d.function.arguments == ""
            assert d.index == len(calls)
            calls[d.index] = [d.id, d.function.name, "", 0]
        else:
            assert d.id is None and d.function.name is None and d.function.arguments
            calls[d.index][2] += d.function.arguments
            calls[d.index][3] += 1
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("family", STREAMED)
def test_openai_chat_streams_the_name_then_argument_deltas(oai, family):
    whole = oai.chat.completions.create(
        model=family, messages=USER, tools=TOOLS, extra_body=extra(family)
    )
    (call,) = whole.choices[0].message.tool_calls
    stream = oai.chat.completions.create(
        model=family, messages=USER, tools=TOOLS, stream=True, extra_body=extra(family)
    )
    deltas, content = chat_deltas(stream)
    ((call_id, name, arguments, pieces),) = calls_of(deltas)
    assert name == "get_weather" and call_id.startswith("call_")
    assert pieces > 1, deltas  # the arguments came while they were generated
    assert arguments == call.function.arguments and json.loads(arguments) == {"city": "Kyoto"}
    assert content == ""
    # The SDK's own accumulation agrees.
    with oai.chat.completions.stream(
        model=family, messages=USER, tools=TOOLS, extra_body=extra(family)
    ) as helper:
        final = helper.get_final_completion()
    (accumulated,) = final.choices[0].message.tool_calls
    assert (accumulated.function.name, accumulated.function.arguments) == ("get_weather", arguments)
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("family", STREAMED)
def test_anthropic_streams_a_tool_use_block_with_input_json_deltas(claude, family):
    with claude.messages.stream(
        model=family, max_tokens=200, messages=USER, tools=CLAUDE_TOOLS, extra_body=extra(family)
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
    kinds = [
        (e.type, getattr(e, "content_block", None) and e.content_block.type)
        for e in events
        if e.type in ("content_block_start", "input_json", "content_block_stop")
    ]
    start = kinds.index(("content_block_start", "tool_use"))
    jsons = [e.partial_json for e in events if e.type == "input_json"]
    assert len(jsons) > 1 and kinds[start + 1 : start + 1 + len(jsons)] == [
        ("input_json", None)
    ] * len(jsons)
    assert json.loads("".join(jsons)) == {"city": "Kyoto"}
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Kyoto"})]
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("family", STREAMED)
def test_responses_stream_a_function_call_item_with_argument_deltas(oai, family):
    with oai.responses.stream(
        model=family, input="Weather in Kyoto?", tools=RESPONSES_TOOLS, extra_body=extra(family)
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    added = [
        k
        for k, e in enumerate(events)
        if e.type == "response.output_item.added" and e.item.type == "function_call"
    ]
    deltas = [k for k, e in enumerate(events) if e.type == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(added) == 1 and events[added[0]].item.name == "get_weather"
    assert len(deltas) > 1 and added[0] < deltas[0]
    joined = "".join(events[k].delta for k in deltas)
    assert done.arguments == joined and json.loads(joined) == {"city": "Kyoto"}
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert (call.name, call.arguments) == ("get_weather", joined)
    whole = oai.responses.create(
        model=family, input="Weather in Kyoto?", tools=RESPONSES_TOOLS, extra_body=extra(family)
    )
    assert [(c.name, c.arguments) for c in whole.output if c.type == "function_call"] == [
        ("get_weather", joined)
    ]


TWO_CALLS = (
    'root ::= "Let" " me" " check" "." "\\n" call "\\n" call\n'
    'call ::= <tool_call> "{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"" ("Kyoto" | "Nara") '
    '"\\"}}" </tool_call>'
)
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}, "temperature": 0}


def test_text_streams_before_two_calls_indexed_0_and_1(oai, claude):
    body = {"grammar": TWO_CALLS, **NO_THINKING}
    stream = oai.chat.completions.create(
        model="qwen3", messages=USER, tools=TOOLS, stream=True, extra_body=body
    )
    deltas, content = chat_deltas(stream)
    calls = calls_of(deltas)
    assert content.strip() == "Let me check."
    assert [c[1] for c in calls] == ["get_weather", "get_weather"] and calls[0][0] != calls[1][0]
    assert all(json.loads(c[2])["city"] in ("Kyoto", "Nara") and c[3] > 1 for c in calls)
    with claude.messages.stream(
        model="qwen3", max_tokens=200, messages=USER, tools=CLAUDE_TOOLS, extra_body=body
    ) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text.strip() == "Let me check."
    with oai.responses.stream(
        model="qwen3", input="Weather?", tools=RESPONSES_TOOLS, extra_body=body
    ) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert final.output_text.strip() == "Let me check."


def test_a_botched_call_streams_as_text(oai, claude):
    grammar = 'root ::= <tool_call> "{\\"name\\": \\"get_weather\\", \\"arguments\\": {broken" </tool_call>'
    body = {"grammar": grammar, **NO_THINKING}
    stream = oai.chat.completions.create(
        model="qwen3", messages=USER, tools=TOOLS, stream=True, extra_body=body
    )
    deltas, content = chat_deltas(stream)
    assert deltas == [] and "<tool_call>" in content and "broken" in content
    with claude.messages.stream(
        model="qwen3", max_tokens=200, messages=USER, tools=CLAUDE_TOOLS, extra_body=body
    ) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["text"] and message.stop_reason == "end_turn"


def test_a_call_that_goes_wrong_after_it_started_keeps_what_was_streamed(oai, claude):
    """Once a call's name and first argument are out they cannot be taken back: the call
    stands with the valid argument text streamed, streamed and whole alike, and no SDK
    fails on it."""
    grammar = (
        'root ::= <tool_call> "{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Kyoto\\", '
        'oops}}" </tool_call>'
    )
    body = {"grammar": grammar, **NO_THINKING}
    stream = oai.chat.completions.create(
        model="qwen3", messages=USER, tools=TOOLS, stream=True, extra_body=body
    )
    deltas, content = chat_deltas(stream)
    ((_, name, arguments, _),) = calls_of(deltas)
    assert (name, arguments, content) == ("get_weather", '{"city": "Kyoto", ', "")
    whole = oai.chat.completions.create(model="qwen3", messages=USER, tools=TOOLS, extra_body=body)
    choice = whole.choices[0]
    assert [c.function.arguments for c in choice.message.tool_calls] == [arguments]
    assert choice.finish_reason == "tool_calls"
    with claude.messages.stream(
        model="qwen3", max_tokens=200, messages=USER, tools=CLAUDE_TOOLS, extra_body=body
    ) as stream:
        message = stream.get_final_message()
    assert [(b.type, b.input) for b in message.content] == [("tool_use", {"city": "Kyoto"})]


def test_ollama_still_gets_whole_calls(server):
    import httpx

    lines = []
    body = {
        "model": "qwen3-coder",
        "messages": USER,
        "tools": TOOLS,
        "grammar": GRAMMARS["qwen3-coder"][2],
        "options": {"temperature": 0},
    }
    with httpx.stream(
        "POST",
        server.base_url + "/api/chat",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    ) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    calls = [c for line in lines for c in line["message"].get("tool_calls") or ()]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", {"city": "Kyoto"})
    ]


def test_a_call_cut_by_max_tokens_stays_a_call_with_its_partial_arguments(oai, claude):
    """As OpenAI does: finish_reason "length" and the arguments so far (not JSON yet), the
    same streamed and whole; the Anthropic SDK's partial JSON parser takes every piece."""
    grammar = (
        'root ::= <tool_call> "{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"" [a-z]{2000} '
        '"\\"}}" </tool_call>'
    )
    body = {"grammar": grammar, **NO_THINKING}
    events = oai.chat.completions.create(
        model="qwen3", messages=USER, tools=TOOLS, stream=True, max_tokens=100, extra_body=body
    )
    finish = []

    def chunks():
        for chunk in events:
            finish.extend(c.finish_reason for c in chunk.choices if c.finish_reason)
            yield chunk

    deltas, content = chat_deltas(chunks())
    ((_, name, arguments, pieces),) = calls_of(deltas)
    assert finish == ["length"] and content == "" and pieces > 1
    assert (
        name == "get_weather" and arguments.startswith('{"city": "') and not arguments.endswith("}")
    )
    whole = oai.chat.completions.create(
        model="qwen3", messages=USER, tools=TOOLS, max_tokens=100, extra_body=body
    )
    assert whole.choices[0].finish_reason == "length"
    assert [c.function.arguments for c in whole.choices[0].message.tool_calls] == [arguments]
    with claude.messages.stream(
        model="qwen3", max_tokens=100, messages=USER, tools=CLAUDE_TOOLS, extra_body=body
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "max_tokens"
    assert [b.type for b in message.content] == ["tool_use"]
    assert isinstance(message.content[0].input, dict)  # its partial parse of what came
