"""Reasoning on every surface, in its own shape, through the official clients: the Qwen3
fixture (the real Qwen tokenizer and template) is made to think exactly
``<think>I should greet.</think>`` and answer ``Hello!`` by a ``grammar``; each surface
shows the two apart, whole and streamed, and turning thinking off shows none."""

from __future__ import annotations

import json

import httpx
import pytest

anthropic = pytest.importorskip("anthropic")
ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

KEY = "test-key"
THOUGHT = 'root ::= <think> "I" " should" " greet" "." </think> "\\n\\nHello" "!"'
REASONING, ANSWER = "I should greet.", "Hello!"
USER = [{"role": "user", "content": "hi"}]
EXTRA = {"grammar": THOUGHT, "temperature": 0}


@pytest.fixture(scope="module")
def server(family_model):
    qwen3 = family_model("qwen35", "Qwen-Qwen3-0.6B")
    config = {
        "server": {"api_key": KEY},
        "models": [{"name": "qwen3", "path": str(qwen3), "n_ctx": 1024}],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)


def test_openai_chat_reasoning_content_whole_and_streamed(oai):
    chat = oai.chat.completions.create(model="qwen3", messages=USER, extra_body=EXTRA)
    message = chat.choices[0].message
    assert (message.reasoning_content, message.content) == (REASONING, ANSWER)
    details = chat.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < chat.usage.completion_tokens
    stream = oai.chat.completions.create(
        model="qwen3",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXTRA,
    )
    reasoning, content, usage = "", "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert (reasoning, content) == (REASONING, ANSWER)
    assert usage.completion_tokens_details.reasoning_tokens == details.reasoning_tokens


def test_openai_reasoning_effort_none_turns_thinking_off(oai):
    chat = oai.chat.completions.create(
        model="qwen3", messages=USER, reasoning_effort="none", extra_body=EXTRA
    )
    message = chat.choices[0].message
    assert getattr(message, "reasoning_content", None) is None
    assert message.content == ANSWER


def test_an_earlier_turns_reasoning_goes_back_into_the_prompt(oai):
    """Sent back on the assistant turn of a running agent loop, Qwen3 writes it again."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "EARLIER-THOUGHT",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    with_thought = oai.chat.completions.create(
        model="qwen3", messages=messages, tools=tools, max_tokens=1
    )
    messages[1] = {k: v for k, v in messages[1].items() if k != "reasoning_content"}
    without = oai.chat.completions.create(
        model="qwen3", messages=messages, tools=tools, max_tokens=1
    )
    assert with_thought.usage.prompt_tokens > without.usage.prompt_tokens
    # Under vLLM's and OpenRouter's name, ``reasoning``, the same.
    messages[1] = {**messages[1], "reasoning": "EARLIER-THOUGHT"}
    renamed = oai.chat.completions.create(
        model="qwen3", messages=messages, tools=tools, max_tokens=1
    )
    assert renamed.usage.prompt_tokens == with_thought.usage.prompt_tokens


def test_responses_reasoning_items_whole_and_streamed(oai):
    response = oai.responses.create(model="qwen3", input="hi", extra_body=EXTRA)
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    assert response.output[0].content[0].text == REASONING
    assert response.output_text == ANSWER
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    events = list(oai.responses.create(model="qwen3", input="hi", stream=True, extra_body=EXTRA))
    names = [e.type for e in events]
    deltas = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert deltas == REASONING
    assert names.index("response.reasoning_text.done") < names.index("response.output_text.delta")
    assert events[-1].response.output_text == ANSWER


def test_responses_reasoning_effort_none(oai):
    response = oai.responses.create(
        model="qwen3", input="hi", reasoning={"effort": "none"}, extra_body=EXTRA
    )
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == ANSWER


def test_anthropic_thinking_blocks_whole_and_streamed(claude):
    message = claude.messages.create(
        model="qwen3",
        max_tokens=50,
        messages=USER,
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body=EXTRA,
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == REASONING and message.content[1].text == ANSWER
    with claude.messages.stream(
        model="qwen3", max_tokens=50, messages=USER, extra_body=EXTRA
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    thinking = "".join(
        e.delta.thinking
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "thinking_delta"
    )
    assert thinking == REASONING
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == ANSWER


def test_anthropic_thinking_disabled_shows_none(claude):
    message = claude.messages.create(
        model="qwen3", max_tokens=50, messages=USER, thinking={"type": "disabled"}, extra_body=EXTRA
    )
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == ANSWER


def test_anthropic_thinking_blocks_sent_back_are_accepted(claude):
    message = claude.messages.create(
        model="qwen3",
        max_tokens=50,
        messages=[
            *USER,
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": ""},
                    {"type": "text", "text": "Hi"},
                ],
            },
            {"role": "user", "content": "again"},
        ],
        extra_body=EXTRA,
    )
    assert message.content[-1].text == ANSWER


def ollama_post(server, path, body):
    return httpx.post(
        server.base_url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    )


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_thinking_on_chat_and_generate(server, stream):
    for path, body, field in (
        ("/api/chat", {"messages": USER}, "message"),
        ("/api/generate", {"prompt": "hi"}, None),
    ):
        answer = ollama_post(
            server,
            path,
            {"model": "qwen3", "think": True, "stream": stream, "grammar": THOUGHT, **body},
        )
        assert answer.status_code == 200, answer.text
        lines = [json.loads(x) for x in answer.text.splitlines() if x.strip()]
        parts = [x[field] if field else x for x in lines]
        thinking = "".join(p.get("thinking") or "" for p in parts)
        text = "".join(p.get("content" if field else "response") or "" for p in parts)
        assert (thinking, text) == (REASONING, ANSWER), path


def test_ollama_client_think_false(server):
    client = ollama.Client(host=server.base_url, headers={"Authorization": f"Bearer {KEY}"})
    chat = client._request(
        ollama.ChatResponse,
        "POST",
        "/api/chat",
        json={
            "model": "qwen3",
            "messages": USER,
            "stream": False,
            "think": False,
            "grammar": THOUGHT,
        },
    )
    assert not chat.message.thinking and chat.message.content == ANSWER
    chat = client._request(
        ollama.ChatResponse,
        "POST",
        "/api/chat",
        json={
            "model": "qwen3",
            "messages": USER,
            "stream": False,
            "think": "high",
            "grammar": THOUGHT,
        },
    )
    assert (chat.message.thinking, chat.message.content) == (REASONING, ANSWER)
