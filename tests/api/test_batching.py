"""The batched engine through the HTTP API, with the official ``openai`` client against a
real server on the tiny model (real llama.cpp): concurrent streams decoded together and
visible as such in the status, ``n`` choices counted once, cached prompt tokens reported,
and grammar-constrained answers inside a mixed batch."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

from tests.support.server import running_server  # noqa: E402

EOS_BANNED = {"2": -100}


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "server": {"concurrency": 4, "max_queue": 16},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 4096, "parallel": 4}],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=60)


def metric(server, name: str) -> float:
    _code, body = server.get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_four_streams_are_decoded_together(server, client):
    """Four long streams at once: all four hold a slot and all four are really decoding."""
    streams = [
        client.completions.create(
            model="tiny",
            prompt=f"the cat {i}",
            max_tokens=3000,
            temperature=0,
            stream=True,
            logit_bias=EOS_BANNED,
        )
        for i in range(4)
    ]
    try:
        for s in streams:
            next(iter(s))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = server.status()
            if st["running"] == 4:
                break
            time.sleep(0.02)
        (model,) = st["models"]
        assert (st["running"], st["sequences"], model["slots"], model["running_sequences"]) == (
            4,
            4,
            4,
            4,
        ), st
    finally:
        for s in streams:
            s.close()
    deadline = time.monotonic() + 10
    while server.status()["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    st = server.status()
    assert (st["running"], st["models"][0]["running_sequences"]) == (0, 0)


def test_n_choices_count_the_prompt_once_in_usage_and_metrics(server, client):
    client.completions.create(model="tiny", prompt="hi", max_tokens=1)  # loaded, metrics exist
    before = metric(server, "hoshikage_prompt_tokens_total")
    single = client.completions.create(
        model="tiny", prompt="the cat sat on the mat", max_tokens=6, seed=4
    )
    four = client.completions.create(
        model="tiny",
        prompt="the cat sat on the mat",
        max_tokens=6,
        n=4,
        temperature=1.5,
        seed=4,
        logit_bias=EOS_BANNED,
    )
    assert len(four.choices) == 4
    assert len({c.text for c in four.choices}) == 4  # seed + j per choice
    assert four.usage.prompt_tokens == single.usage.prompt_tokens
    assert four.usage.completion_tokens == 4 * 6
    after = metric(server, "hoshikage_prompt_tokens_total")
    assert after - before == 2 * single.usage.prompt_tokens


def test_second_turn_reports_cached_prompt_tokens(server, client):
    messages = [
        {"role": "system", "content": "the cat sat on the mat " * 15},
        {"role": "user", "content": "hello world"},
    ]
    first = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=5, temperature=0
    )
    assert first.usage.prompt_tokens_details.cached_tokens < 20
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "yes"},
    ]
    second = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=5, temperature=0
    )
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    model = server.status()["models"][0]
    assert model["cached_prompt_tokens"] >= second.usage.prompt_tokens_details.cached_tokens


def test_json_schema_answers_validate_inside_a_mixed_batch(server, client):
    jsonschema = pytest.importorskip("jsonschema")
    # Enums and booleans: the tiny random model's free strings hit byte-fallback tokens, which
    # llama.cpp's grammar lets through as raw control characters (with or without batching).
    schema = {
        "type": "object",
        "properties": {"pick": {"enum": ["red", "blue", "green"]}, "yes": {"type": "boolean"}},
        "required": ["pick", "yes"],
        "additionalProperties": False,
    }
    results: dict[int, str] = {}

    def constrained(i: int) -> None:
        r = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"json {i}"}],
            max_tokens=60,
            temperature=1.0,
            seed=i,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
        results[i] = r.choices[0].message.content

    def plain(i: int) -> None:
        client.completions.create(
            model="tiny", prompt=f"the cat {i}", max_tokens=200, logit_bias=EOS_BANNED
        )

    threads = [threading.Thread(target=constrained, args=(i,)) for i in range(2)]
    threads += [threading.Thread(target=plain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1]
    for text in results.values():
        jsonschema.validate(json.loads(text), schema)


def test_cancelling_a_stream_mid_batch_leaves_the_others(server):
    body = {
        "model": "tiny",
        "max_tokens": 300,
        "temperature": 0,
        "stream": True,
        "logit_bias": EOS_BANNED,
    }
    texts: dict[int, str] = {}

    def full(i: int) -> None:
        r = httpx.post(
            server.base_url + "/v1/completions", json={**body, "prompt": f"hello {i}"}, timeout=60
        )
        texts[i] = "".join(
            json.loads(line[6:])["choices"][0]["text"]
            for line in r.text.splitlines()
            if line.startswith("data: {")
        )

    threads = [threading.Thread(target=full, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            server.base_url + "/v1/completions",
            json={**body, "prompt": "hello 9", "max_tokens": 3000},
        ) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    for t in threads:
        t.join(60)
    for i in range(3):
        alone = httpx.post(
            server.base_url + "/v1/completions",
            json={**body, "prompt": f"hello {i}", "stream": False},
            timeout=60,
        ).json()
        assert texts[i] == alone["choices"][0]["text"]
    _code, log = server.get("/metrics")
    assert re.search(
        r'hoshikage_requests_total\{[^}]*status="cancelled"[^}]*\} [1-9]', log.decode()
    )
