"""Bad input, property-based: random and mutated bodies on every endpoint that takes one.
Every response is 2xx or a 4xx with the surface's error body (OpenAI's, or Anthropic's on
``/v1/messages``), never a 500, and the server stays up."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import running_server

pytestmark = pytest.mark.timeout(300)

ENDPOINTS = {
    "/v1/chat/completions": {
        "model": "tiny",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/completions": {"model": "tiny", "max_tokens": 4, "prompt": "hi"},
    "/v1/embeddings": {"model": "embed", "input": "hi"},
    "/v1/messages": {
        "model": "tiny",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/messages/count_tokens": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    "/api/chat": {
        "model": "tiny",
        "stream": False,
        "options": {"num_predict": 4},
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/api/generate": {"model": "tiny:latest", "prompt": "hi", "options": {"num_predict": 4}},
    "/api/embed": {"model": "embed", "input": ["hi"]},
    "/api/embeddings": {"model": "embed", "prompt": "hi"},
    "/api/show": {"model": "tiny"},
    "/v1/responses": {"model": "tiny", "max_output_tokens": 4, "input": "hi"},
}
ANTHROPIC = ("/v1/messages", "/v1/messages/count_tokens")
#: Ollama's routes: errors are ``{"error": "..."}``.
OLLAMA = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show")
OLLAMA_KEYS = [
    "options",
    "format",
    "keep_alive",
    "think",
    "tools",
    "raw",
    "suffix",
    "template",
    "context",
    "images",
    "system",
    "logprobs",
    "top_logprobs",
    "truncate",
    "dimensions",
    "stream",
    "verbose",
    "name",
]
OLLAMA_OPTIONS = [
    "num_predict",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "num_ctx",
    "num_gpu",
    "mirostat",
    "x",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([2**63, -(2**63) - 1, 10**400, 0, -1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["tiny", "embed", "user", "system", "tool", "json_schema", "5m", "-1", ""])
    | st.sampled_from(
        ["assistant", "text", "image", "tool_use", "tool_result", "thinking", "any", "auto", "none"]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


BLOCK_TYPES = [
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "auto",
    "any",
    "tool",
    "none",
    "web_search_20250305",
    "custom",
    "x",
]
BLOCK_KEYS = [
    "type",
    "text",
    "source",
    "id",
    "name",
    "input",
    "tool_use_id",
    "content",
    "is_error",
    "input_schema",
    "thinking",
    "signature",
]


@st.composite
def anthropic_values(draw):
    """Anthropic-shaped values: messages, blocks, tools and tool choices with random fields."""
    blocks = st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(BLOCK_TYPES)},
            optional={k: json_values for k in BLOCK_KEYS[1:]},
        ),
        max_size=3,
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool"])},
        optional={"content": st.text(max_size=20) | blocks},
    )
    return draw(
        st.lists(message, max_size=3)
        | blocks
        | st.sampled_from(BLOCK_TYPES).map(lambda t: {"type": t})
    )


RESPONSES_TYPES = [
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "item_reference",
    "input_text",
    "output_text",
    "input_image",
    "refusal",
    "function",
    "web_search",
    "json_schema",
    "allowed_tools",
    "x",
]
RESPONSES_KEYS = [
    "role",
    "content",
    "call_id",
    "name",
    "arguments",
    "output",
    "id",
    "status",
    "text",
    "parameters",
    "strict",
    "schema",
    "format",
    "mode",
    "tools",
    "annotations",
]


@st.composite
def responses_values(draw):
    """Responses-shaped values: input items, content parts, tools and formats with random fields."""
    parts = st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(RESPONSES_TYPES)},
            optional={k: json_values for k in RESPONSES_KEYS},
        ),
        max_size=3,
    )
    item = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(RESPONSES_TYPES),
            "role": st.sampled_from(["user", "assistant", "developer", "tool"]),
            "content": st.text(max_size=20) | parts,
            "call_id": st.text(max_size=8),
            "output": st.text(max_size=8) | parts,
        },
    )
    return draw(
        st.lists(item, max_size=3)
        | parts
        | st.sampled_from(RESPONSES_TYPES).map(lambda t: {"type": t, "format": {"type": t}})
    )


@st.composite
def bodies(draw):
    path = draw(st.sampled_from(sorted(ENDPOINTS)))
    base = dict(ENDPOINTS[path])
    how = draw(st.sampled_from(["replace", "add", "whole", "nested"]))
    if how == "replace":
        base[draw(st.sampled_from(sorted(base)))] = draw(json_values)
    elif how == "add":
        key = draw(
            st.sampled_from(
                [
                    "temperature",
                    "top_p",
                    "n",
                    "stream",
                    "stream_options",
                    "stop",
                    "seed",
                    "logit_bias",
                    "logprobs",
                    "top_logprobs",
                    "response_format",
                    "tools",
                    "tool_choice",
                    "keep_alive",
                    "encoding_format",
                    "max_completion_tokens",
                    "echo",
                    "presence_penalty",
                    "min_p",
                    "top_k",
                    "system",
                    "stop_sequences",
                    "metadata",
                    "thinking",
                    "input",
                    "instructions",
                    "previous_response_id",
                    "text",
                    "store",
                    "include",
                    "reasoning",
                    "truncation",
                    "parallel_tool_calls",
                    "top_logprobs",
                    "background",
                    "conversation",
                ]
            )
        )
        base[key] = draw(json_values)
    elif how == "nested" and path in OLLAMA:
        key = draw(st.sampled_from(OLLAMA_KEYS))
        if key == "options" or draw(st.booleans()):
            base["options"] = draw(
                st.dictionaries(st.sampled_from(OLLAMA_OPTIONS), json_values, max_size=4)
            )
        else:
            base[key] = draw(json_values)
        if "messages" in base and draw(st.booleans()):
            base["messages"] = [
                draw(
                    st.dictionaries(
                        st.sampled_from(
                            ["role", "content", "images", "thinking", "tool_calls", "tool_name"]
                        ),
                        json_values,
                        max_size=4,
                    )
                )
            ]
    elif how == "nested" and path in ANTHROPIC:
        base[draw(st.sampled_from(["messages", "system", "tools", "tool_choice"]))] = draw(
            anthropic_values()
        )
    elif how == "nested" and path == "/v1/responses":
        base[draw(st.sampled_from(["input", "tools", "tool_choice", "text"]))] = draw(
            responses_values()
        )
    elif how == "nested" and "messages" in base:
        base["messages"] = [
            draw(
                st.dictionaries(
                    st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id"]),
                    json_values,
                    max_size=4,
                )
            )
        ]
    else:
        return path, draw(json_values)
    return path, base


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "server": {"max_queue": 64, "max_body_size": "2MiB"},
        "unload": {"max_loaded": 2},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 128},
            {"name": "embed", "path": str(tiny_model_path), "n_ctx": 128, "embedding": True},
        ],
    }
    with running_server(config) as srv:
        yield srv
        assert srv.process.poll() is None, "the server died:\n" + srv.log()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


def check(response: httpx.Response, path: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        error = body["error"]
        if path in ANTHROPIC:
            assert body["type"] == "error" and set(error) == {"type", "message"}, body
        elif path in OLLAMA:
            assert set(body) == {"error"} and isinstance(error, str) and error, body
            return
        else:
            assert set(error) >= {"message", "type", "param", "code"}
        assert error["message"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_random_bodies_never_500(client, case):
    path, body = case
    try:
        raw = json.dumps(body).encode()
    except ValueError:
        return
    check(client.post(path, content=raw, headers={"Content-Type": "application/json"}), path)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage\x80", id="non-utf8"),
        pytest.param(b'{"model": "tiny", "prompt": "\xc3\x28"}', id="invalid-utf8-in-string"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"model": "tiny", "max_tokens": 1' + b"0" * 400 + b"}", id="huge-number"),
        pytest.param(
            b'{"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": ['
            + b'{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]},'
            * 200
            + b'{"type": "text", "text": "x"}]}]}',
            id="many-blocks-with-images",
        ),
        pytest.param(
            b'{"model": "tiny", "max_tokens": 4, "messages": [{"role": "assistant", '
            b'"content": [{"type": "tool_use", "id": "t", "name": "n", "input": '
            + b'{"a":' * 5000
            + b"1"
            + b"}" * 5000
            + b"}]}]}",
            id="deep-tool-input",
        ),
        pytest.param(b'{"model": "tiny", "temperature": 1e400}', id="overflowing-float"),
        pytest.param(
            b'{"model": "tiny", "messages": [' + b'{"role":"user","content":"x"},' * 50 + b"{}]}",
            id="one-bad-message",
        ),
        pytest.param(b"null", id="null"),
        pytest.param(b'"just a string"', id="string"),
        pytest.param(b'{"model": "tiny"', id="truncated-json"),
        pytest.param(
            b'{"model": "tiny", "prompt": "", "messages": [], "keep_alive": 1e308}',
            id="huge-keep-alive",
        ),
        pytest.param(
            b'{"model": "tiny:latest", "prompt": "x", "stream": false, "options": {"seed": 1e30, "num_predict": 1}}',
            id="huge-option",
        ),
        pytest.param(
            b'{"model": "tiny", "stream": false, "messages": [{"role": "assistant", "content": "", "tool_calls": '
            + b'[{"function": {"name": "f", "arguments": "{"}}]}, {"role": "user", "content": "x"}]}',
            id="broken-tool-arguments",
        ),
    ],
)
def test_hostile_bodies(client, path, raw):
    check(client.post(path, content=raw, headers={"Content-Type": "application/json"}), path)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_ten_megabyte_body_is_refused(client, path):
    raw = b'{"model": "tiny", "prompt": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    r = client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    error = r.json()["error"]
    if path in OLLAMA:
        assert "max_body_size" in error
        return
    assert (error["type"] if path in ANTHROPIC else error["code"]) == "request_too_large"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(min_size=1, max_size=60),
    st.sampled_from(["GET", "DELETE", "GET-items"]),
    st.text(max_size=20),
)
def test_stored_response_routes_never_500(client, response_id, method, query):
    from urllib.parse import quote

    path = "/v1/responses/" + quote(response_id, safe="")
    if method == "GET-items":
        method, path = "GET", path + "/input_items"
    r = client.request(method, path, params={"limit": query, "after": query, "order": query})
    check(r, path)


def test_still_up_and_idle_after_the_fuzzing(client):
    assert client.get("/health").status_code == 200
    status = client.get("/api/status").json()
    assert (status["running"], status["queued"]) == (0, 0)
