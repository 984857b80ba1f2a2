"""Speculative decoding through the HTTP API, with the official clients against a real
server on the tiny model (real llama.cpp): the ``timings`` extension reports drafts as
llama-server does, ``"speculative": false`` turns them off for one request with the same
answer on every generation surface (OpenAI chat, completions and Responses, Anthropic
Messages, Ollama chat and generate), a wrong type is a 400 in each surface's shape, and the
drafts are counted in ``/metrics``, ``/api/status``, ``hoshikage status`` and the server log."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

anthropic = pytest.importorskip("anthropic")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")

from tests.support.server import running_server  # noqa: E402

#: A prompt whose greedy continuation loops on the tiny model, so it drafts and accepts.
LOOPING = "the cat sat on the mat the cat sat on the mat the cat"
EOS_BANNED = {"2": -100}


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {"models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 1024}]}
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=60)


def metric(server, name: str) -> float:
    _code, body = server.get("/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith(name + "{")
    )


def complete(client, **extra):
    return client.completions.create(
        model="tiny",
        prompt=LOOPING,
        max_tokens=80,
        temperature=0,
        logit_bias=EOS_BANNED,
        extra_body=extra or None,
    )


def test_timings_report_drafts_and_speculative_false_gives_the_same_text(server, client):
    drafted = complete(client)
    timings = drafted.model_extra["timings"]
    assert timings["draft_n"] >= timings["draft_n_accepted"] > 0
    plain = complete(client, speculative=False)
    assert "timings" not in (plain.model_extra or {})
    assert plain.choices[0].text == drafted.choices[0].text
    assert plain.usage.completion_tokens == drafted.usage.completion_tokens == 80


def test_chat_streams_report_drafts_on_the_finishing_chunk(server, client):
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": LOOPING}],
        max_tokens=80,
        temperature=0,
        logit_bias=EOS_BANNED,
        stream=True,
    )
    chunks = list(stream)
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1
    assert finishing[0].model_extra["timings"]["draft_n"] > 0
    assert all("timings" not in (c.model_extra or {}) for c in chunks if c is not finishing[0])
    whole = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": LOOPING}],
        max_tokens=80,
        temperature=0,
        logit_bias=EOS_BANNED,
    )
    assert whole.choices[0].message.content == "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    assert whole.model_extra["timings"]["draft_n_accepted"] > 0


def test_a_wrong_speculative_value_is_a_400_in_openai_shape(client):
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, speculative="yes")
    assert "speculative" in str(err.value)


def test_drafts_are_counted_in_metrics_status_cli_and_log(server, client):
    before = metric(server, "hoshikage_draft_tokens_total")
    accepted_before = metric(server, "hoshikage_draft_accepted_tokens_total")
    timings = complete(client).model_extra["timings"]
    assert metric(server, "hoshikage_draft_tokens_total") - before == timings["draft_n"]
    assert (
        metric(server, "hoshikage_draft_accepted_tokens_total") - accepted_before
        == timings["draft_n_accepted"]
    )
    (model,) = server.status()["models"]
    assert model["draft_tokens"] >= timings["draft_n"] > 0
    assert 0 < model["draft_accepted"] <= model["draft_tokens"]
    assert f"drafts {timings['draft_n_accepted']}/{timings['draft_n']}" in server.log()
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": "/nonexistent"}
    shown = subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", "status", "--url", server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    share = round(100 * model["draft_accepted"] / model["draft_tokens"])
    assert "drafts" in shown.stdout and f"{share}% of {model['draft_tokens']}" in shown.stdout


# ---- "speculative": false on every generation surface ------------------------------------
#
# Each surface is asked the looping prompt twice through its official client: as it is, it
# drafts (the draft counter in /metrics grows); with the extension false, it drafts nothing
# and gives the same text. The tiny model keeps looping for all 60 tokens without a bias.

TOKENS = 60


def _responses(server, extra):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    answer = client.responses.create(
        model="tiny", input=LOOPING, max_output_tokens=TOKENS, temperature=0, extra_body=extra
    )
    return answer.output_text


def _messages(server, extra):
    client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    answer = client.messages.create(
        model="tiny",
        max_tokens=TOKENS,
        messages=[{"role": "user", "content": LOOPING}],
        extra_body={"temperature": 0, **extra},
    )
    return answer.content[0].text


def _ollama_chat(server, extra):
    """Through ``options``: the ollama client passes them as they are."""
    answer = ollama.Client(host=server.base_url).chat(
        model="tiny",
        messages=[{"role": "user", "content": LOOPING}],
        options={"temperature": 0, "num_predict": TOKENS, **extra},
    )
    return answer.message.content


def _ollama_generate(server, extra):
    answer = ollama.Client(host=server.base_url).generate(
        model="tiny", prompt=LOOPING, options={"temperature": 0, "num_predict": TOKENS, **extra}
    )
    return answer.response


def _ollama_top_level(server, extra):
    """Ollama's top-level field, beside ``keep_alive`` (the ollama client sends only the
    fields it knows: raw HTTP)."""
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": LOOPING}],
        "stream": False,
        "options": {"temperature": 0, "num_predict": TOKENS},
        **extra,
    }
    answer = httpx.post(server.base_url + "/api/chat", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["message"]["content"]


SURFACES = {
    "responses": _responses,
    "messages": _messages,
    "ollama-chat-options": _ollama_chat,
    "ollama-generate-options": _ollama_generate,
    "ollama-chat-top-level": _ollama_top_level,
}


@pytest.mark.parametrize("surface", SURFACES)
def test_speculative_false_turns_drafting_off_on_every_surface(server, surface):
    ask = SURFACES[surface]
    # It drafts by default, so the check below can fail. Whether a step drafts is the
    # planner's choice against the step costs it measures, and the tiny model's steps (0.1
    # ms, a graph rebuild as dear as a step) sit near where drafting pays: a request may
    # draft nothing, so it is asked until one has drafted.
    for _ in range(8):
        before = metric(server, "hoshikage_draft_tokens_total")
        drafted = ask(server, {})
        middle = metric(server, "hoshikage_draft_tokens_total")
        if middle > before:
            break
    assert middle > before
    plain = ask(server, {"speculative": False})
    assert metric(server, "hoshikage_draft_tokens_total") == middle
    assert plain == drafted and plain


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/responses", {"input": "x", "speculative": "no"}, "openai"),
        (
            "/v1/messages",
            {"max_tokens": 3, "messages": [{"role": "user", "content": "x"}], "speculative": 1},
            "anthropic",
        ),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x"}], "speculative": "no"},
            "ollama",
        ),
        ("/api/generate", {"prompt": "x", "options": {"speculative": "off"}}, "ollama"),
    ],
)
def test_a_wrong_speculative_type_is_a_400_in_each_surface_shape(server, path, body, shape):
    answer = httpx.post(
        server.base_url + path, json={"model": "tiny", "stream": False, **body}, timeout=30
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()
    if shape == "openai":
        assert error["error"]["param"] == "speculative"
    elif shape == "anthropic":
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert "'speculative'" in error["error"]["message"]
    else:
        assert set(error) == {"error"} and "speculative" in error["error"]


def test_the_ollama_client_reports_a_wrong_speculative_option(server):
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=server.base_url).generate(
            model="tiny", prompt="x", options={"speculative": "no"}
        )
    assert info.value.status_code == 400
    assert "options.speculative" in info.value.error
