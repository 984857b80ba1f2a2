"""POST /v1/completions and /v1/embeddings through Litestar's test client, on llama.cpp."""

from __future__ import annotations

import base64
import math
import struct

import pytest

pytest.importorskip("llama_cpp")

from tests.api.helpers import assert_openai_error  # noqa: E402
from tests.api.test_chat import sse_events  # noqa: E402

pytestmark = pytest.mark.timeout(60)


async def test_completion_shape_and_stream_match(client):
    request = {"model": "tiny", "prompt": "the cat", "max_tokens": 8, "temperature": 0, "seed": 2}
    whole = (await client.post("/v1/completions", json=request)).json()
    assert whole["object"] == "text_completion" and whole["id"].startswith("cmpl-")
    assert whole["model"] == "tiny"
    (choice,) = whole["choices"]
    assert (
        choice["index"] == 0
        and choice["logprobs"] is None
        and choice["finish_reason"] in ("stop", "length")
    )
    r = await client.post(
        "/v1/completions",
        json={**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse_events(r.text)
    chunks, usage_chunk = events[:-2], events[-2]
    assert all(c["object"] == "text_completion" and c["id"] == usage_chunk["id"] for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ] == [choice["finish_reason"]]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]


async def test_prompt_list_echo_and_logprobs(client):
    r = await client.post(
        "/v1/completions",
        json={
            "model": "tiny",
            "prompt": ["the cat", "hello"],
            "n": 2,
            "max_tokens": 3,
            "echo": True,
            "logprobs": 2,
        },
    )
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["text"].startswith("the cat") and body["choices"][2][
        "text"
    ].startswith("hello")
    lp = body["choices"][1]["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert (
        len(lp["tokens"])
        == len(lp["token_logprobs"])
        == len(lp["top_logprobs"])
        == len(lp["text_offset"])
    )
    assert lp["text_offset"][0] == len("the cat")
    assert all(len(alternatives) <= 2 for alternatives in lp["top_logprobs"])


async def test_completion_context_overflow_names_prompt(client):
    r = await client.post(
        "/v1/completions", json={"model": "tiny", "prompt": "the cat " * 400, "stream": True}
    )
    assert_openai_error(r, 400, code="context_length_exceeded", param="prompt")


async def test_embeddings_float_and_base64_agree(client):
    inputs = ["the cat sat", "hello world"]
    floats = (
        await client.post("/v1/embeddings", json={"model": "tiny-embed", "input": inputs})
    ).json()
    assert floats["object"] == "list" and floats["model"] == "tiny-embed"
    assert [d["index"] for d in floats["data"]] == [0, 1]
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 64 and math.isclose(
        math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3
    )
    assert floats["usage"]["prompt_tokens"] > 0
    assert floats["usage"]["total_tokens"] == floats["usage"]["prompt_tokens"]
    b64 = (
        await client.post(
            "/v1/embeddings",
            json={"model": "tiny-embed", "input": inputs, "encoding_format": "base64"},
        )
    ).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == len(vector)
    assert all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(decoded, vector, strict=True)
    )
    single = (
        await client.post("/v1/embeddings", json={"model": "tiny-embed", "input": "the cat sat"})
    ).json()
    assert len(single["data"]) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["ok", ""]}, "input[1]"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 8}, "dimensions"),
        ({"input": 5}, "input"),
    ],
)
async def test_embedding_input_errors(client, body, param):
    r = await client.post("/v1/embeddings", json={"model": "tiny-embed", **body})
    error = assert_openai_error(r, 400, param=param)
    if body["input"] == [1, 2, 3]:  # LangChain's default sends tiktoken ids: say how to stop it
        assert "check_embedding_ctx_length=False" in error["message"]


async def test_the_routes_answer_without_v1_as_llama_server_serves_them(client):
    """Clients set up for llama-server leave ``/v1`` out (Continue's ``llama.cpp`` provider):
    the same answers at ``/chat/completions``, ``/completions``, ``/embeddings``, ``/models``."""
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    chat["temperature"] = 0
    text = {"model": "tiny", "prompt": "the cat", "max_tokens": 3, "temperature": 0}
    embed = {"model": "tiny-embed", "input": "the cat sat"}
    for path, body, read in (
        ("/chat/completions", chat, lambda r: r["choices"][0]["message"]["content"]),
        ("/completions", text, lambda r: r["choices"][0]["text"]),
        ("/embeddings", embed, lambda r: r["data"][0]["embedding"]),
    ):
        with_v1 = (await client.post("/v1" + path, json=body)).json()
        without = await client.post(path, json=body)
        assert without.status_code == 200, without.text
        assert read(without.json()) == read(with_v1)
    models = (await client.get("/models")).json()
    assert models == (await client.get("/v1/models")).json()
    assert (await client.get("/models/tiny")).json()["id"] == "tiny"
