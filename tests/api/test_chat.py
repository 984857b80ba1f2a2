"""POST /v1/chat/completions through Litestar's test client, on the real llama.cpp backend."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("llama_cpp")

from tests.api.helpers import assert_openai_error  # noqa: E402

pytestmark = pytest.mark.timeout(60)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


def sse_events(text: str) -> list:
    """The data payloads of an SSE body; ``[DONE]`` stays a string."""
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    out = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def test_chat_completion_shape(client):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny-alias",
            "messages": MESSAGES,
            "max_tokens": 6,
            "temperature": 0,
            "seed": 3,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny-alias"  # as the client named it
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] in ("stop", "length")
    assert choice["logprobs"] is None
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_stream_shapes_and_text_match_non_stream(client):
    request = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 12,
        "temperature": 0,
        "seed": 7,
        "logit_bias": {"2": -100},
    }
    whole = (await client.post("/v1/chat/completions", json=request)).json()
    r = await client.post(
        "/v1/chat/completions",
        json={**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks, usage_chunk = events[:-2], events[-2]
    assert {c["id"] for c in events[:-1]} == {usage_chunk["id"]}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "tiny" for c in events[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert all(c["usage"] is None for c in chunks)
    finished = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ]
    assert finished == [whole["choices"][0]["finish_reason"]] == ["length"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert usage_chunk["choices"] == []
    streamed_details = usage_chunk["usage"].pop("prompt_tokens_details")
    assert usage_chunk["usage"] == {
        k: v for k, v in whole["usage"].items() if k != "prompt_tokens_details"
    }
    # the same prompt a second time: all of it but the last token came from the cache
    assert streamed_details == {"cached_tokens": whole["usage"]["prompt_tokens"] - 1}
    u = usage_chunk["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


async def test_stream_without_include_usage_has_no_usage_field(client):
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": MESSAGES, "max_tokens": 3, "stream": True},
    )
    events = sse_events(r.text)
    assert all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] is not None


async def test_n_choices_each_finish_once(client):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "max_tokens": 4,
            "n": 3,
            "stream": True,
            "seed": 1,
        },
    )
    events = sse_events(r.text)[:-1]
    for index in range(3):
        mine = [e["choices"][0] for e in events if e["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert sum(1 for c in mine if c["finish_reason"]) == 1
        assert mine[-1]["finish_reason"]
    whole = (
        await client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "n": 2},
        )
    ).json()
    assert [c["index"] for c in whole["choices"]] == [0, 1]


async def test_logprobs_in_openai_chat_shape(client):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "max_tokens": 4,
            "logprobs": True,
            "top_logprobs": 2,
        },
    )
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"]
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}
        assert item["logprob"] <= 0 and isinstance(item["bytes"], list)
        assert len(item["top_logprobs"]) == 2
        assert set(item["top_logprobs"][0]) == {"token", "logprob", "bytes"}
    stream = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "max_tokens": 3,
            "logprobs": True,
            "stream": True,
        },
    )
    with_lp = [e for e in sse_events(stream.text)[:-1] if e["choices"][0]["logprobs"]]
    assert with_lp and all("content" in e["choices"][0]["logprobs"] for e in with_lp)


async def test_json_object_response_format_gives_json(client):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "max_tokens": 40,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        },
    )
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["message"]["content"]
    assert text.lstrip().startswith(("{", "["))


async def test_json_object_with_end_of_text_banned_does_not_kill_the_server(client):
    # The grammar needs the end of generation once the object closes; banning it left
    # llama.cpp without a candidate and it aborted the process. Now the grammar wins.
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "max_tokens": 40,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "logit_bias": {"2": -100},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].lstrip().startswith("{")
    assert (await client.get("/health")).status_code == 200


async def test_text_parts_and_developer_role_accepted(client):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "max_tokens": 2,
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hello"},
                        {"type": "text", "text": "world"},
                    ],
                },
            ],
        },
    )
    assert r.status_code == 200, r.text


async def test_text_parts_are_joined_by_one_rule_on_every_surface(client):
    """Text given in parts reads as the same prompt as the parts joined with a newline,
    whether it came as OpenAI content parts, Anthropic text blocks, or parts handed to the
    backend directly (the core's ``join_text`` is the one owner of that rule)."""
    from hoshikage_core.protocol import join_text
    from hoshikage_llamacpp.dialects.chat import normalize_messages

    parts = ["hello", "world"]

    async def openai_prompt_tokens(content) -> int:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": content}],
            },
        )
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    joined = await openai_prompt_tokens("hello\nworld")
    glued = await openai_prompt_tokens("helloworld")
    assert joined != glued  # the rule is visible in the prompt
    assert await openai_prompt_tokens([{"type": "text", "text": p} for p in parts]) == joined
    r = await client.post(
        "/v1/messages",
        json={
            "model": "tiny",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": [{"type": "text", "text": p} for p in parts]}],
        },
    )
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]  # the prompt: read now, or found in the prompt cache
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == joined
    backend = normalize_messages(
        [{"role": "user", "content": [{"type": "text", "text": p} for p in parts]}]
    )
    assert backend[0]["content"] == join_text(parts) == "hello\nworld"


async def test_context_length_exceeded_is_a_json_error_even_when_streaming(client):
    long = "the cat sat on the mat " * 200
    for stream in (False, True):
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": long}],
                "stream": stream,
            },
        )
        assert r.headers["content-type"].startswith("application/json")
        assert_openai_error(r, 400, code="context_length_exceeded", param="messages")


async def test_unknown_model_is_404_even_when_streaming(client):
    for stream in (False, True):
        r = await client.post(
            "/v1/chat/completions", json={"model": "nope", "messages": MESSAGES, "stream": stream}
        )
        error = assert_openai_error(r, 404, code="model_not_found", param="model")
        assert "tiny" in error["message"]


async def test_keep_alive_zero_unloads_after_the_request(client):
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": MESSAGES, "max_tokens": 2, "keep_alive": 0},
    )
    assert r.status_code == 200
    for _ in range(100):
        state = (await client.get("/v1/models/tiny")).json()["state"]
        if state == "unloaded":
            break
        await asyncio.sleep(0.02)
    assert state == "unloaded"
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": MESSAGES, "max_tokens": 2, "keep_alive": "5m"},
    )
    status = (await client.get("/api/status")).json()
    tiny = next(m for m in status["models"] if m["name"] == "tiny")
    assert tiny["state"] == "loaded" and 200 < tiny["unload_in_seconds"] <= 300


async def test_tools_are_passed_to_the_backend(client):
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "max_tokens": 60,
            "tools": [tool],
            "tool_choice": "required",
        },
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    # tool_choice "required" constrains the output to a call of the one tool.
    assert choice["finish_reason"] == "tool_calls", choice
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "lookup"
    assert isinstance(call["function"]["arguments"], str) and call["id"]
    # The prompt grew by the tool definitions the chat template rendered.
    plain = await client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 1}
    )
    assert r.json()["usage"]["prompt_tokens"] > plain.json()["usage"]["prompt_tokens"]
    stream = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "max_tokens": 60,
            "tools": [tool],
            "tool_choice": "required",
            "stream": True,
        },
    )
    choices = [e["choices"][0] for e in sse_events(stream.text)[:-1]]
    calls = [c["delta"]["tool_calls"] for c in choices if "tool_calls" in c["delta"]]
    assert calls and calls[0][0]["index"] == 0 and calls[0][0]["function"]["name"] == "lookup"
    assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["tool_calls"]
