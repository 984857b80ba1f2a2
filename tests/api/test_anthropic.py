"""End to end: the official ``anthropic`` client against a real ``hoshikage serve`` process on
127.0.0.1 (``/v1/messages`` and ``/v1/messages/count_tokens``), with the real llama.cpp
backend and the tiny generated model. Raw HTTP checks the exact event order (the SDK drops
``ping``) and the error bodies.

One server is shared by the module (an API key is set); tests leave it idle.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("llama_cpp")
anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx")

from tests.support.server import running_server, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(90)

KEY = "test-key"
USER = [{"role": "user", "content": "hello world"}]
GREEDY = {"temperature": 0}
#: A tool whose forced call the tiny model completes at once: ``{"n": <int>}``.
LOOKUP = {
    "name": "lookup",
    "description": "Look a number up.",
    "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
}


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "server": {"api_key": KEY, "max_body_size": "1MB", "concurrency": 1, "max_queue": 1},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "aliases": ["tiny-alias"], "n_ctx": 8192}
        ],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=30)


def post(server, path: str, body, headers=None) -> httpx.Response:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", **(headers or {})}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        server.base_url + path,
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


def sse_events(text: str) -> list[tuple[str, dict]]:
    """``(event name, data)`` pairs of an Anthropic event stream; every ``type`` matches its name."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"], block
        events.append((lines["event"], data))
    return events


def prompt_of(usage) -> int:
    """The prompt's tokens of a usage: those read now and those found in the prompt cache."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0)


def assert_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind and body["error"]["message"]
    return body["error"]["message"]


# ---- messages -----------------------------------------------------------------------------


def test_plain_message(client):
    message = client.messages.create(
        model="tiny",
        max_tokens=8,
        messages=USER,
        system="You are terse.",
        metadata={"user_id": "someone"},
        extra_body={**GREEDY, "thinking": {"type": "disabled"}},
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "tiny"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 8


def test_alias_is_echoed_and_blocks_are_accepted(client):
    message = client.messages.create(
        model="tiny-alias",
        max_tokens=4,
        system=[{"type": "text", "text": "You are"}, {"type": "text", "text": "terse."}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "x"},
                    {"type": "text", "text": "yes"},
                ],
            },
            {"role": "user", "content": "the cat"},
        ],
    )
    assert message.model == "tiny-alias" and message.usage.output_tokens >= 1


def test_max_tokens_is_the_stop_reason_when_reached(client):
    message = client.messages.create(model="tiny", max_tokens=5, messages=USER, extra_body=GREEDY)
    # Greedy on the tiny model runs on past 5 tokens for this prompt.
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_stop_sequence_ends_the_message_and_is_named(client):
    full = (
        client.messages.create(model="tiny", max_tokens=30, messages=USER, extra_body=GREEDY)
        .content[0]
        .text
    )
    # A stop string taken from the greedy answer itself: three plain letters in its middle.
    start = next(
        i
        for i in range(3, len(full) - 3)
        if full[i : i + 3].isascii() and full[i : i + 3].isalpha()
    )
    stop = full[start : start + 3]
    message = client.messages.create(
        model="tiny",
        max_tokens=30,
        messages=USER,
        stop_sequences=["never seen", stop],
        extra_body=GREEDY,
    )
    # The engine says which of several strings matched.
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == stop
    assert message.content[0].text == full[: full.index(stop)]
    # Without stop sequences the same answer ends otherwise.
    assert (
        client.messages.create(
            model="tiny", max_tokens=30, messages=USER, extra_body=GREEDY
        ).stop_sequence
        is None
    )


# ---- streaming ----------------------------------------------------------------------------


def test_stream_events_in_order(server):
    r = post(
        server,
        "/v1/messages",
        {"model": "tiny", "max_tokens": 6, "messages": USER, "stream": True, **GREEDY},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 6
    # The same request, not streamed: the same text and usage.
    whole = post(
        server, "/v1/messages", {"model": "tiny", "max_tokens": 6, "messages": USER, **GREEDY}
    ).json()
    assert whole["content"][0]["text"] == "".join(d["text"] for d in deltas)
    assert delta["usage"]["output_tokens"] == whole["usage"]["output_tokens"]

    def prompt(usage):  # the prompt's tokens, read now or found in the prompt cache
        return usage["input_tokens"] + usage["cache_read_input_tokens"]

    assert prompt(delta["usage"]) == prompt(whole["usage"]) > 0
    # message_start already knows the prompt's size.
    assert start["usage"] == {**delta["usage"], "output_tokens": 0}
    assert start["usage"]["cache_creation_input_tokens"] == 0


def test_sdk_stream_accumulates_the_message(client):
    with client.messages.stream(
        model="tiny", max_tokens=8, messages=USER, extra_body=GREEDY
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == "".join(texts) and texts
    assert final.stop_reason == "max_tokens"
    # input_tokens arrive with message_delta; the SDK keeps them.
    count = client.messages.count_tokens(model="tiny", messages=USER)
    assert prompt_of(final.usage) == count.input_tokens > 0
    assert final.usage.output_tokens == 8


# ---- tools --------------------------------------------------------------------------------


def test_tool_use_round_trip(client):
    first = client.messages.create(
        model="tiny",
        max_tokens=100,
        messages=USER,
        tools=[LOOKUP],
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use", first
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "lookup" and call.id.startswith("toolu_")
    assert isinstance(call.input, dict) and isinstance(call.input["n"], int)

    history = [
        *USER,
        {
            "role": "assistant",
            "content": [block.model_dump(exclude_none=True) for block in first.content],
        },
    ]
    results = {}
    for is_error in (False, True):
        reply = client.messages.create(
            model="tiny",
            max_tokens=4,
            tools=[LOOKUP],
            extra_body=GREEDY,
            messages=[
                *history,
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": call.id,
                            "content": "forty two",
                            "is_error": is_error,
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
        )
        assert reply.stop_reason in ("end_turn", "max_tokens", "tool_use")
        results[is_error] = prompt_of(reply.usage)
    # The call and its result are in the prompt, and is_error shows in it.
    assert results[False] > prompt_of(first.usage)
    assert results[True] > results[False]


def test_named_tool_choice_and_streamed_tool_use(server, client):
    body = {
        "model": "tiny",
        "max_tokens": 100,
        "messages": USER,
        "tools": [LOOKUP],
        "tool_choice": {"type": "tool", "name": "lookup"},
        "stream": True,
        **GREEDY,
    }
    events = sse_events(post(server, "/v1/messages", body).text)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert [block["type"] for block in starts] == ["tool_use"]
    assert starts[0]["name"] == "lookup" and starts[0]["input"] == {}
    partial = "".join(
        data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"
    )
    assert isinstance(json.loads(partial)["n"], int)
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    # The SDK assembles the same call from the input_json_delta events.
    del body["stream"]
    with client.messages.stream(
        **{k: v for k, v in body.items() if k != "temperature"}, extra_body=GREEDY
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == json.loads(partial)


def test_tool_choice_none_leaves_the_tools_out(client):
    with_tools = client.messages.create(
        model="tiny",
        max_tokens=3,
        messages=USER,
        tools=[LOOKUP],
        tool_choice={"type": "none"},
        extra_body=GREEDY,
    )
    plain = client.messages.create(model="tiny", max_tokens=3, messages=USER, extra_body=GREEDY)
    assert prompt_of(with_tools.usage) == prompt_of(plain.usage)
    assert all(block.type == "text" for block in with_tools.content)


# ---- count_tokens -------------------------------------------------------------------------


def test_urls_under_messages_that_match_no_route_answer_in_anthropic_shape(server):
    assert_error(post(server, "/v1/messages/batches", {}), 404, "not_found_error")
    assert_error(
        httpx.get(server.base_url + "/v1/messages", timeout=10), 405, "invalid_request_error"
    )
    # Elsewhere the OpenAI shape stays.
    r = httpx.get(server.base_url + "/v1/nothing-here", timeout=10)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"system": "Be brief."},
        {"tools": [LOOKUP]},
        {"tools": [LOOKUP], "tool_choice": {"type": "any"}},
    ],
    ids=["plain", "system", "tools", "tool_choice"],
)
def test_count_tokens_equals_usage_input_tokens(client, extra):
    count = client.messages.count_tokens(model="tiny", messages=USER, **extra)
    message = client.messages.create(model="tiny", max_tokens=2, messages=USER, **extra)
    assert count.input_tokens == prompt_of(message.usage) > 0


def test_count_tokens_errors(server):
    assert_error(
        post(server, "/v1/messages/count_tokens", {"model": "nope", "messages": USER}),
        404,
        "not_found_error",
    )
    assert_error(
        post(server, "/v1/messages/count_tokens", {"model": "tiny"}), 400, "invalid_request_error"
    )


# ---- errors and auth ----------------------------------------------------------------------


def test_unknown_model_is_not_found_error(client, server):
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="no-such-model", max_tokens=4, messages=USER)
    assert exc.value.status_code == 404
    assert exc.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in assert_error(
        post(server, "/v1/messages", {"model": "no-such-model", "max_tokens": 4, "messages": USER}),
        404,
        "not_found_error",
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        {"model": "tiny", "messages": USER},  # max_tokens is required
        {"model": "tiny", "max_tokens": "5", "messages": USER},
        {"model": "tiny", "max_tokens": -1, "messages": USER},
        {"model": "tiny", "max_tokens": 4, "messages": []},
        {"model": "tiny", "max_tokens": 4, "messages": [{"role": "tool", "content": "x"}]},
        {
            "model": "tiny",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": [{"type": "video"}]}],
        },
        {"model": "tiny", "max_tokens": 4, "messages": USER, "temperature": 1.5},
        {"model": "tiny", "max_tokens": 4, "messages": USER, "stop_sequences": [""]},
        {"model": "tiny", "max_tokens": 4, "messages": USER, "tool_choice": {"type": "any"}},
        {
            "model": "tiny",
            "max_tokens": 4,
            "messages": USER,
            "tools": [LOOKUP],
            "tool_choice": {"type": "tool", "name": "other"},
        },
        {"model": "tiny", "max_tokens": 4, "messages": USER, "tools": [{"name": "x"}]},
        {
            "model": "tiny",
            "max_tokens": 4,
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}
            ],
        },
    ],
)
def test_bad_body_is_invalid_request_error(server, body):
    assert_error(post(server, "/v1/messages", body), 400, "invalid_request_error")


def test_bad_body_through_the_sdk(client):
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model="tiny", max_tokens=-1, messages=USER)
    assert exc.value.body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "content",
    [
        [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            }
        ],
        [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}},
        ],
        [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "x"},
                    }
                ],
            }
        ],
    ],
    ids=["image", "text-then-image", "image-in-tool-result"],
)
def test_image_blocks_are_refused_clearly(client, content):
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(
            model="tiny", max_tokens=4, messages=[{"role": "user", "content": content}]
        )
    error = exc.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "image blocks are not supported" in error["message"]


def test_server_tools_are_refused_by_type(server):
    body = {
        "model": "tiny",
        "max_tokens": 4,
        "messages": USER,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
    }
    assert "web_search_20250305" in assert_error(
        post(server, "/v1/messages", body), 400, "invalid_request_error"
    )


def test_context_overflow_says_prompt_is_too_long(server):
    body = {
        "model": "tiny",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "the cat sat " * 3000}],
    }
    message = assert_error(post(server, "/v1/messages", body), 400, "invalid_request_error")
    # Exactly Anthropic's message: Claude Code matches the whole of it to compact.
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 8192 maximum", message), message
    # Streamed, it is still a JSON error: nothing was generated yet.
    r = post(server, "/v1/messages", {**body, "stream": True})
    assert r.headers["content-type"].startswith("application/json")
    assert_error(r, 400, "invalid_request_error")


def test_auth_with_x_api_key_or_bearer(server):
    body = {"model": "tiny", "max_tokens": 2, "messages": USER}
    both = {"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"}
    assert (
        httpx.post(
            server.base_url + "/v1/messages", json=body, headers={"x-api-key": KEY, **both}
        ).status_code
        == 200
    )
    bearer = {"authorization": f"Bearer {KEY}"}
    assert (
        httpx.post(server.base_url + "/v1/messages", json=body, headers=bearer).status_code == 200
    )
    assert (
        httpx.post(
            server.base_url + "/v1/messages/count_tokens",
            json={"model": "tiny", "messages": USER},
            headers=bearer,
        ).status_code
        == 200
    )
    # The SDK's two ways: api_key (x-api-key) and auth_token (Bearer).
    for kwargs in ({"api_key": KEY}, {"auth_token": KEY}):
        sdk = anthropic.Anthropic(base_url=server.base_url, max_retries=0, **kwargs)
        assert (
            sdk.messages.create(model="tiny", max_tokens=2, messages=USER).usage.output_tokens >= 1
        )
    # The x-api-key header works on the OpenAI routes too.
    assert server.get("/v1/models", headers={"x-api-key": KEY})[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "wrong"},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic " + KEY},
    ],
)
def test_missing_or_wrong_key_is_authentication_error(server, headers):
    r = httpx.post(
        server.base_url + "/v1/messages",
        json={"model": "tiny", "max_tokens": 2, "messages": USER},
        headers=headers,
    )
    assert_error(r, 401, "authentication_error")
    r = httpx.post(
        server.base_url + "/v1/messages/count_tokens",
        json={"model": "tiny", "messages": USER},
        headers=headers,
    )
    assert_error(r, 401, "authentication_error")


def test_sdk_authentication_error(server):
    sdk = anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as exc:
        sdk.messages.create(model="tiny", max_tokens=2, messages=USER)
    assert exc.value.body["error"]["type"] == "authentication_error"


def test_metrics_count_messages_and_their_errors(server):
    from tests.api.test_server_routes import parse_prometheus

    post(server, "/v1/messages", {"model": "tiny", "max_tokens": 2, "messages": USER})
    post(server, "/v1/messages", {"model": "nope", "max_tokens": 2, "messages": USER})
    samples = parse_prometheus(server.get("/metrics", headers={"x-api-key": KEY})[1].decode())
    assert samples['hoshikage_requests_total{endpoint="messages",model="tiny",status="ok"}'] >= 1
    assert (
        samples[
            'hoshikage_http_errors_total{code="model_not_found",path="/v1/messages",status="404"}'
        ]
        >= 1
    )


# ---- overload -----------------------------------------------------------------------------


@contextmanager
def long_generation(server):
    """A streamed chat generation that runs for seconds (EOS banned), its first event read."""
    body = {
        "model": "tiny",
        "messages": USER,
        "stream": True,
        "max_tokens": 8000,
        "temperature": 0,
        "logit_bias": {"2": -100},
    }
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", server.base_url + "/v1/chat/completions", headers={"x-api-key": KEY}, json=body
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a collected line iterator closes the response
        assert next(lines).startswith("data: ")
        yield response


def test_full_queue_is_overloaded_error_529(server, client):
    with long_generation(server) as running, ThreadPoolExecutor(1) as pool:
        queued = pool.submit(
            post, server, "/v1/messages", {"model": "tiny", "max_tokens": 2, "messages": USER}
        )
        wait_for(
            lambda: server.status(headers={"x-api-key": KEY})["queued"] == 1,
            what="the second request to queue",
        )
        r = post(server, "/v1/messages", {"model": "tiny", "max_tokens": 2, "messages": USER})
        assert_error(r, 529, "overloaded_error")
        assert int(r.headers["retry-after"]) >= 1
        with pytest.raises(anthropic.APIStatusError) as exc:  # OverloadedError in newer SDKs
            client.messages.count_tokens(model="tiny", messages=USER)
        assert exc.value.status_code == 529
        running.close()
        assert queued.result(timeout=30).status_code == 200
    wait_for(
        lambda: server.status(headers={"x-api-key": KEY})["running"] == 0,
        what="the server to go idle",
    )


def test_stream_disconnect_frees_the_slot(server):
    body = {"model": "tiny", "max_tokens": 8000, "messages": USER, "stream": True, **GREEDY}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", server.base_url + "/v1/messages", headers={"x-api-key": KEY}, json=body
        ) as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "event: message_start"
        response.close()
    wait_for(
        lambda: server.status(headers={"x-api-key": KEY})["running"] == 0,
        what="the cancelled stream to free its slot",
    )
    code, text = server.get("/metrics", headers={"x-api-key": KEY})
    assert (
        'hoshikage_requests_total{endpoint="messages",model="tiny",status="cancelled"}'
        in text.decode()
    )


# ---- the error mapping and the stream, without a server ------------------------------------


def test_error_mapping_is_anthropic_shaped():
    from hoshikage_api.anthropic.errors import to_anthropic
    from hoshikage_core.errors import Cancelled, ContextLengthExceeded, ModelLoadError, QueueFull

    cases = {
        QueueFull(4, retry_after=2): (529, "overloaded_error"),
        Cancelled("shutting down"): (529, "overloaded_error"),
        ModelLoadError("tiny", "truncated"): (500, "api_error"),
        ContextLengthExceeded(3000, 2048): (400, "invalid_request_error"),
        RuntimeError("bug"): (500, "api_error"),
    }
    for exc, (status_code, kind) in cases.items():
        error, body = to_anthropic(exc)
        assert (error.status, body.error.type) == (status_code, kind), exc
    assert to_anthropic(QueueFull(4, retry_after=2))[0].headers["Retry-After"] == "2"
    assert (
        to_anthropic(ContextLengthExceeded(3000, 2048))[1].error.message
        == "prompt is too long: 3000 tokens > 2048 maximum"
    )


def format_events(*chunks) -> list[tuple[str, dict]]:
    from hoshikage_api.anthropic.format import MessageFormat
    from hoshikage_api.kernel.job import Job

    fmt = MessageFormat(
        Job(endpoint="messages", model="m", keep_alive=None, requests=(), stream=True)
    )
    return sse_events(b"".join(fmt.items(0, chunk) for chunk in chunks).decode())


def test_stream_of_text_then_tool_calls_numbers_the_blocks():
    from hoshikage_core.protocol import Chunk

    calls = (
        {"id": "call_abc", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {
            "id": "call_def",
            "type": "function",
            "function": {"name": "b", "arguments": '"{\\"y\\": 2}"'},
        },
    )
    events = format_events(
        Chunk(text="Let me look."),
        Chunk(
            text=" ok",
            finish_reason="tool_calls",
            tool_calls=calls,
            prompt_tokens=9,
            completion_tokens=20,
        ),
    )
    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("ping", None),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[6][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_abc",
        "name": "a",
        "input": {},
    }
    assert json.loads(events[7][1]["delta"]["partial_json"]) == {"x": 1}
    # Arguments encoded twice are decoded twice: input is always an object.
    assert json.loads(events[10][1]["delta"]["partial_json"]) == {"y": 2}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {
        "input_tokens": 9,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_stream_of_nothing_has_one_empty_text_block():
    from hoshikage_core.protocol import Chunk

    events = format_events(
        Chunk(finish_reason="stop", prompt_tokens=3, completion_tokens=0, stop_sequence="y")
    )
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "y"}
    # A "stop" that no stop string caused is the model ending its turn.
    events = format_events(Chunk(finish_reason="stop", prompt_tokens=3, completion_tokens=0))
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


# ---- a real model -------------------------------------------------------------------------


@pytest.mark.gemma
@pytest.mark.timeout(300)
def test_gemma_messages_stream_stop_sequence_tools_and_count(gemma_model_path):
    """Gemma 3 270M has no chat template (the plain fallback renders the chat, with its own
    stop strings): a streamed message, a stop sequence taken from its text stops the same
    answer there, a forced tool call parses, and count_tokens equals usage."""
    config = {"models": [{"name": "gemma", "path": str(gemma_model_path), "n_ctx": 1024}]}
    with running_server(config) as srv:
        sdk = anthropic.Anthropic(
            base_url=srv.base_url, api_key="unused", max_retries=0, timeout=120
        )
        kwargs = {
            "model": "gemma",
            "max_tokens": 24,
            "system": "You are a helpful assistant.",
            "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
        }
        # The prompt read once first: greedy answers are then compared between requests that
        # all find it cached. (A prompt read whole and one whose last token is read alone can
        # give different near-tie logits: llama.cpp's kernels differ with the batch size,
        # most visibly without the repacked weights of safe mode.)
        sdk.messages.create(**kwargs, extra_body=GREEDY)
        with sdk.messages.stream(**kwargs, extra_body=GREEDY) as stream:
            streamed = "".join(stream.text_stream)
            whole = stream.get_final_message()
        text = whole.content[0].text
        assert text.strip() and text == streamed and whole.stop_reason in ("end_turn", "max_tokens")
        count = sdk.messages.count_tokens(**{k: v for k, v in kwargs.items() if k != "max_tokens"})
        assert count.input_tokens == prompt_of(whole.usage) > 0
        words = [w for w in text.split() if w.isalpha() and len(w) > 2]
        assert words, text
        stop = words[min(1, len(words) - 1)]
        cut = sdk.messages.create(**kwargs, stop_sequences=[stop], extra_body=GREEDY)
        assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
        assert cut.content[0].text == text[: text.index(stop)]
        tool = {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"],
            },
        }
        called = sdk.messages.create(
            model="gemma",
            max_tokens=40,
            tools=[tool],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            extra_body=GREEDY,
        )
        assert called.stop_reason == "tool_use", called
        (use,) = [b for b in called.content if b.type == "tool_use"]
        assert use.name == "get_weather" and isinstance(use.input["city"], str)


def test_output_config_format_constrains_the_answer_to_the_schema(client):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    message = client.messages.create(
        model="tiny",
        max_tokens=100,
        messages=USER,
        extra_body={
            **GREEDY,
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        },
    )
    assert message.stop_reason == "end_turn", message
    assert isinstance(json.loads(message.content[0].text)["n"], int)


def test_the_beta_messages_client_works(client):
    """``client.beta.messages`` (what Claude Code uses) posts to ``/v1/messages?beta=true``
    with an ``anthropic-beta`` header."""
    message = client.beta.messages.create(
        model="tiny", max_tokens=3, messages=USER, betas=["interleaved-thinking-2025-05-14"]
    )
    assert message.type == "message" and message.usage.output_tokens >= 1
    count = client.beta.messages.count_tokens(
        model="tiny", messages=USER, betas=["token-counting-2024-11-01"]
    )
    assert count.input_tokens == prompt_of(message.usage)
