"""Bad input of every kind is a 4xx with OpenAI's error body, never a 500."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from tests.api.helpers import assert_openai_error  # noqa: E402

pytestmark = pytest.mark.timeout(60)

USER = [{"role": "user", "content": "hi"}]


def chat(**fields) -> dict:
    return {"model": "tiny", "messages": USER, **fields}


# (body, param the error must name, or None when there is no single param)
CHAT_CASES = [
    ({"model": "tiny"}, None),
    ({"messages": USER}, None),
    (chat(model=5), "model"),
    (chat(model=""), "model"),
    (chat(messages="hi"), "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages=[1]), "messages[0]"),
    (chat(messages=[None]), "messages[0]"),
    (chat(messages=[{"content": "x"}]), "messages[0]"),
    (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": 5, "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": {"text": "x"}}]), "messages[0].content"),
    (
        chat(messages=[{"role": "user", "content": [{"type": "audio", "x": 1}]}]),
        "messages[0].content[0].type",
    ),
    (
        chat(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ),
        "messages[0].content[0].image_url.url",
    ),
    (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0]"),
    (chat(messages=[{"role": "assistant", "tool_calls": "x"}]), "messages[0].tool_calls"),
    (chat(max_tokens="5"), "max_tokens"),
    (chat(max_tokens=True), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=-1), "max_tokens"),
    (chat(max_tokens=10**30), "max_tokens"),
    (chat(max_completion_tokens="x"), "max_completion_tokens"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=-1), "temperature"),
    (chat(temperature=3), "temperature"),
    (chat(top_p=2), "top_p"),
    (chat(top_k=-1), "top_k"),
    (chat(min_p="x"), "min_p"),
    (chat(repeat_penalty=-1), "repeat_penalty"),
    (chat(n=0), "n"),
    (chat(n=1000), "n"),
    (chat(n="2"), "n"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options={"include_usage": True}), "stream_options"),
    (chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    (chat(stream=True, stream_options=[]), "stream_options"),
    (chat(stop=5), "stop"),
    (chat(stop=[1]), "stop[0]"),
    (chat(stop=["a"] * 20), "stop"),
    (chat(seed="1"), "seed"),
    (chat(seed=1.5), "seed"),
    (chat(seed=2**70), "seed"),
    (chat(presence_penalty=5), "presence_penalty"),
    (chat(frequency_penalty="x"), "frequency_penalty"),
    (chat(logit_bias={"x": 1}), "logit_bias"),
    (chat(logit_bias={"5": "a"}), "logit_bias"),
    (chat(logit_bias={"5": 1000}), "logit_bias"),
    (chat(logit_bias=[1]), "logit_bias"),
    (chat(logprobs="yes"), "logprobs"),
    (chat(logprobs=True, top_logprobs=50), "top_logprobs"),
    (chat(top_logprobs=2), "top_logprobs"),
    (chat(response_format={"type": "xml"}), "response_format.type"),
    (chat(response_format="json"), "response_format"),
    (chat(response_format={"type": "json_schema"}), "response_format"),
    (
        chat(response_format={"type": "json_schema", "json_schema": {"schema": 5}}),
        "response_format.json_schema.schema",
    ),
    (  # an unbalanced group: the grammar converter used to close it by itself, silently
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": {"type": "string", "pattern": "^(((a$"}},
            }
        ),
        "response_format",
    ),
    (
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "p",
                    "schema": {"type": "object", "properties": {"x": {"pattern": "^[a-$"}}},
                },
            }
        ),
        "response_format",
    ),
    (chat(tools="x"), "tools"),
    (chat(tools=[{"type": "function"}]), "tools[0]"),
    (chat(tools=[{"type": "retrieval", "function": {"name": "f"}}]), "tools[0].type"),
    (chat(tool_choice="maybe"), "tool_choice"),
    (chat(tool_choice="required"), "tool_choice"),
    (chat(keep_alive="soon"), "keep_alive"),
    (chat(keep_alive=True), "keep_alive"),
    (chat(keep_alive=-5), "keep_alive"),
    (chat(keep_alive=[1]), "keep_alive"),
    (chat(user=5), "user"),
]


@pytest.mark.parametrize(
    ("body", "param"), CHAT_CASES, ids=[json.dumps(c[0])[:60] for c in CHAT_CASES]
)
async def test_chat_field_errors(client, body, param):
    r = await client.post("/v1/chat/completions", json=body)
    error = assert_openai_error(r, 400)
    if param is not None:
        assert error["param"] == param, error
        assert param.split(".")[0].split("[")[0] in error["message"]


COMPLETION_CASES = [
    ({"model": "tiny"}, None),
    ({"model": "tiny", "prompt": 5}, "prompt"),
    ({"model": "tiny", "prompt": []}, "prompt"),
    ({"model": "tiny", "prompt": [-1]}, "prompt"),
    ({"model": "tiny", "prompt": [[1, 2], 5]}, "prompt[1]"),
    ({"model": "tiny", "prompt": [[1, 2], []]}, "prompt[1]"),
    ({"model": "tiny", "prompt": [[1, 2]], "echo": True}, "echo"),
    ({"model": "tiny", "prompt": [[1, 2]], "suffix": "end"}, "prompt"),
    ({"model": "tiny", "prompt": ["x"] * 129}, "prompt"),
    ({"model": "tiny", "prompt": [None]}, "prompt[0]"),
    ({"model": "tiny", "prompt": "x", "logprobs": True}, "logprobs"),
    ({"model": "tiny", "prompt": "x", "echo": "yes"}, "echo"),
    ({"model": "tiny", "prompt": "x", "suffix": "end"}, "suffix"),
    ({"model": "tiny", "prompt": "x", "best_of": 3}, "best_of"),
]


@pytest.mark.parametrize(("body", "param"), COMPLETION_CASES)
async def test_completion_field_errors(client, body, param):
    error = assert_openai_error(await client.post("/v1/completions", json=body), 400)
    if param is not None:
        assert error["param"] == param, error


RAW_BODIES = [
    b"",
    b"   ",
    b"{",
    b'{"model": "tiny", "messages": [',
    b"\xff\xfe\x00garbage",
    b'{"model": "\xff\xfe", "messages": []}',
    b"[]",
    b'"a string"',
    b"null",
    b"42",
    b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1'
    + b"0" * 5000
    + b"}",
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "extra": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], '
    b'"tools": [{"type": "function", "function": {"name": "f", "parameters": '
    + b'{"a": ' * 50_000
    + b"1"
    + b"}" * 50_000
    + b"}}]}",
]


@pytest.mark.parametrize("raw", RAW_BODIES, ids=range(len(RAW_BODIES)))
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
async def test_malformed_bodies(client, path, raw):
    r = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert_openai_error(r, r.status_code)


async def test_oversized_body_is_413_and_server_stays_up(client):
    huge = json.dumps(chat(messages=[{"role": "user", "content": "x" * 300_000}]))
    r = await client.post(
        "/v1/chat/completions", content=huge, headers={"Content-Type": "application/json"}
    )
    assert_openai_error(r, 413, code="request_too_large")
    r = await client.post("/v1/chat/completions", json=chat(max_tokens=1))
    assert r.status_code == 200


async def test_unknown_route_and_method(client):
    assert_openai_error(await client.post("/v1/nothing", json={}), 404)
    assert_openai_error(await client.delete("/v1/models"), 405)


async def test_unknown_fields_are_ignored(client):
    r = await client.post(
        "/v1/chat/completions", json=chat(max_tokens=1, store=False, metadata={"a": "b"})
    )
    assert r.status_code == 200, r.text
