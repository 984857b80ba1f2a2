"""The default token budget end to end: a real ``hoshikage serve`` on the tiny model (real
llama.cpp) with end-of-text banned, so only a budget stops it. A request without
``max_tokens`` ends with "length" at the model's ``max_tokens`` or ``[server].max_tokens``
on every surface; a request may still ask for more."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")
httpx = pytest.importorskip("httpx")

from tests.support.server import running_server  # noqa: E402

NO_EOS = {"2": -100}
USER = [{"role": "user", "content": "hello the cat"}]


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "server": {"max_tokens": 12},
        "unload": {"max_loaded": 2},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 512},
            {"name": "tiny-own", "path": str(tiny_model_path), "n_ctx": 512, "max_tokens": 5},
        ],
    }
    with running_server(config) as srv:
        yield srv


def post(server, path: str, body: dict) -> dict:
    resp = httpx.post(server.base_url + path, json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize(("model", "budget"), [("tiny", 12), ("tiny-own", 5)])
def test_chat_without_max_tokens_stops_at_the_default(server, model, budget):
    body = post(
        server,
        "/v1/chat/completions",
        {"model": model, "messages": USER, "temperature": 0, "logit_bias": NO_EOS},
    )
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == budget


def test_completions_without_max_tokens_stop_at_the_default(server):
    body = post(
        server,
        "/v1/completions",
        {"model": "tiny", "prompt": "the cat", "temperature": 0, "logit_bias": NO_EOS},
    )
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 12


def test_a_request_may_ask_for_more_than_the_default(server):
    body = post(
        server,
        "/v1/chat/completions",
        {
            "model": "tiny-own",
            "messages": USER,
            "temperature": 0,
            "logit_bias": NO_EOS,
            "max_tokens": 40,
        },
    )
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 40


def test_anthropic_messages_send_their_own_max_tokens(server):
    """Anthropic's max_tokens is required, so it always wins over the default."""
    body = post(
        server,
        "/v1/messages",
        {"model": "tiny-own", "messages": USER, "max_tokens": 30, "temperature": 0},
    )
    assert body["usage"]["output_tokens"] == 30, body
    assert body["stop_reason"] == "max_tokens"
