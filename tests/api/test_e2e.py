"""End to end: the official ``openai`` client against a real ``hoshikage serve`` process on
127.0.0.1, with the real llama.cpp backend and the tiny generated model (Gemma where marked).

One server is shared by the module (concurrency 1, max_queue 1, an API key); tests leave it
idle. Tests that stop or restart the server start their own.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from tests.api.test_server_routes import parse_prometheus  # noqa: E402
from tests.support.server import running_server, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(90)

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
USER = [{"role": "user", "content": "hello world"}]
#: A generation that runs for seconds on the tiny model: EOS is banned, the context is large.
# Seconds of generation: without speculation, which drafts the tiny model's repeats so well
# that 7000 tokens take well under a second on a quiet machine.
LONG = {"max_tokens": 7000, "temperature": 0, "logit_bias": {"2": -100}, "speculative": False}


def server_config(tiny_model_path, **server) -> dict:
    return {
        "server": {
            "api_key": KEY,
            "concurrency": 1,
            "max_queue": 1,
            "max_body_size": "1MB",
            "shutdown_grace": 1,
            **server,
        },
        "unload": {"max_loaded": 2},
        "models": [
            {
                "name": "tiny",
                "path": str(tiny_model_path),
                "aliases": ["tiny-alias"],
                "n_ctx": 8192,
            },
            {"name": "tiny-embed", "path": str(tiny_model_path), "n_ctx": 512, "embedding": True},
        ],
    }


@pytest.fixture(scope="module")
def server(tiny_model_path):
    with running_server(server_config(tiny_model_path)) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=30)


@pytest.fixture
def aclient(server):
    return openai.AsyncOpenAI(
        base_url=server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=30
    )


def idle(server) -> bool:
    s = server.status(headers=AUTH)
    return s["running"] == 0 and s["queued"] == 0


@pytest.fixture(autouse=True)
def leaves_server_idle(request):
    """Every test using the shared server must leave it with nothing running or queued."""
    yield
    if "server" in request.fixturenames:
        wait_for(lambda: idle(request.getfixturevalue("server")), 10, "the server to be idle")


def test_health_answers_fast_and_is_public(server):
    # Generous bound; the measured figure is in server.startup_seconds (typically well under 1 s).
    assert server.startup_seconds < 5
    code, body = server.get("/health")
    assert code == 200 and json.loads(body)["status"] == "ok"


def test_models_list_and_retrieve(client):
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "tiny-alias", "tiny-embed"} <= ids
    model = client.models.retrieve("tiny-alias")
    assert model.id == "tiny-alias" and model.model_extra["state"] in ("unloaded", "loaded")
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("nope")
    assert exc.value.code == "model_not_found"


def test_chat_stream_equals_non_stream(client):
    kwargs = {
        "model": "tiny-alias",
        "messages": USER,
        "max_tokens": 16,
        "temperature": 0,
        "seed": 11,
    }
    whole = client.chat.completions.create(**kwargs)
    assert whole.model == "tiny-alias" and whole.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )
    # asked twice: the second time the prompt (all but its last token) came from the cache
    assert usage.prompt_tokens_details.cached_tokens == whole.usage.prompt_tokens - 1
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


async def test_async_client_chat_and_completions(aclient):
    whole = await aclient.chat.completions.create(
        model="tiny", messages=USER, max_tokens=8, temperature=0, seed=5
    )
    stream = await aclient.chat.completions.create(
        model="tiny", messages=USER, max_tokens=8, temperature=0, seed=5, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == whole.choices[0].message.content
    completion = await aclient.completions.create(model="tiny", prompt="the cat", max_tokens=5)
    assert completion.object == "text_completion" and completion.usage.completion_tokens <= 5


def test_completions_stream_with_usage(client):
    kwargs = {
        "model": "tiny",
        "prompt": "the cat sat",
        "max_tokens": 10,
        "temperature": 0,
        "seed": 3,
    }
    whole = client.completions.create(**kwargs)
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_embeddings_float_and_base64(client):
    floats = client.embeddings.create(
        model="tiny-embed", input=["the cat", "hello"], encoding_format="float"
    )
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 64
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = client.embeddings.create(model="tiny-embed", input=["the cat", "hello"])
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-5, abs=1e-6)
    raw = client.embeddings.with_raw_response.create(
        model="tiny-embed", input="the cat", encoding_format="base64"
    )
    b64 = json.loads(raw.text)["data"][0]["embedding"]
    values = struct.unpack("<64f", base64.b64decode(b64))
    assert values == pytest.approx(floats.data[0].embedding, rel=1e-5, abs=1e-6)


def test_error_types_and_codes(client, server):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="nope", messages=USER)
    assert exc.value.code == "model_not_found" and exc.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=[])
    assert exc.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "the cat " * 5000}]
        )
    assert exc.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=USER, temperature="hot")
    assert exc.value.body["param"] == "temperature"
    r = httpx.post(
        server.base_url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "tiny", "messages": USER, "stream_options": {"include_usage": True}},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"


def test_auth(server):
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key or "x", max_retries=0)
        if not key:
            bad = bad.with_options(default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.models.list()
        assert exc.value.body["type"] == "authentication_error"
    assert httpx.get(server.base_url + "/v1/models").status_code == 401
    assert httpx.get(server.base_url + "/health").status_code == 200


@contextmanager
def long_stream(server, **extra):
    """An open streamed response whose generation runs for seconds; its first event is read.
    ``response.close()`` disconnects early."""
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            server.base_url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": "tiny", "messages": USER, "stream": True, **LONG, **extra},
        ) as response,
    ):
        assert response.status_code == 200
        response.lines = response.iter_lines()
        assert next(response.lines).startswith("data: ")
        yield response


def test_queue_full_is_503_with_retry_after(server, client):
    with long_stream(server) as running, ThreadPoolExecutor(1) as pool:
        queued = pool.submit(
            httpx.post,
            server.base_url + "/v1/chat/completions",
            headers=AUTH,
            timeout=30,
            json={"model": "tiny", "messages": USER, "max_tokens": 2},
        )
        wait_for(
            lambda: server.status(headers=AUTH)["queued"] == 1, what="the second request to queue"
        )
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model="tiny", messages=USER, max_tokens=2)
        assert exc.value.status_code == 503 and exc.value.code == "queue_full"
        assert int(exc.value.response.headers["retry-after"]) >= 1
        running.close()
        assert queued.result(timeout=20).status_code == 200


def test_stream_disconnect_cancels_and_frees_the_slot(server, client):
    with long_stream(server) as response:
        assert server.status(headers=AUTH)["running"] == 1
        response.close()
        wait_for(lambda: idle(server), 3, "the cancelled stream to free its slot")
    assert client.chat.completions.create(model="tiny", messages=USER, max_tokens=2).choices


def test_non_stream_disconnect_cancels(server):
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.base_url + "/v1/chat/completions",
            headers=AUTH,
            timeout=httpx.Timeout(30, read=1.0),
            json={"model": "tiny", "messages": USER, **LONG},
        )
    wait_for(lambda: idle(server), 3, "the abandoned request to be cancelled")
    assert time.monotonic() - started < 6  # the whole generation would take far longer
    samples = parse_prometheus(server.get("/metrics", headers=AUTH)[1].decode())
    assert samples['hoshikage_requests_total{endpoint="chat",model="tiny",status="cancelled"}'] >= 1


def test_models_answer_during_a_long_generation(server):
    with long_stream(server):
        latencies = []
        for _ in range(5):
            t = time.monotonic()
            code, _ = server.get("/v1/models", headers=AUTH)
            latencies.append(time.monotonic() - t)
            assert code == 200
        assert server.status(headers=AUTH)["running"] == 1  # the generation was still going
        assert max(latencies) < 1.0, latencies


def test_keep_alive_zero_unloads_right_after(client):
    client.chat.completions.create(
        model="tiny", messages=USER, max_tokens=2, extra_body={"keep_alive": 0}
    )
    wait_for(
        lambda: client.models.retrieve("tiny").model_extra["state"] == "unloaded",
        3,
        "tiny to unload",
    )
    client.chat.completions.create(
        model="tiny", messages=USER, max_tokens=2, extra_body={"keep_alive": "5m"}
    )
    assert client.models.retrieve("tiny").model_extra["state"] == "loaded"


def test_metrics_text_parses(server, client):
    client.chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    code, body = server.get("/metrics", headers=AUTH)
    samples = parse_prometheus(body.decode())
    assert code == 200
    assert samples['hoshikage_requests_total{endpoint="chat",model="tiny",status="ok"}'] >= 1
    assert "hoshikage_queue_depth" in samples and "hoshikage_in_flight_requests" in samples


def test_bad_bodies_over_http_keep_the_server_up(server):
    url = server.base_url + "/v1/chat/completions"
    for raw in (
        b"{",
        b"\xff\xfe",
        b"",
        b"[]",
        b'{"model": "tiny", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    ):
        r = httpx.post(url, content=raw, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    big = b"x" * 2_000_000
    json_auth = {**AUTH, "Content-Type": "application/json"}  # without it: 415 first
    r = httpx.post(url, content=big, headers=json_auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(40):
            yield b"y" * 65536

    r = httpx.post(url, content=chunked(), headers=json_auth)
    assert r.status_code == 413
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_sigterm_exits_within_seconds_during_a_stream(tiny_model_path):
    with running_server(server_config(tiny_model_path)) as srv:
        with long_stream(srv) as response:
            received: list[str] = []
            reader = threading.Thread(target=lambda: received.extend(response.lines), daemon=True)
            reader.start()
            seconds = srv.terminate()
            reader.join(5)
            assert not reader.is_alive()  # the stream ended instead of hanging
        last = json.loads([line for line in received if line][-1].removeprefix("data: "))
        assert last["error"]["code"] == "cancelled" and "shutting down" in last["error"]["message"]
        assert srv.process.returncode is not None
        assert seconds < 5, srv.log()
        assert "unloaded tiny (shutdown)" in srv.log()


@pytest.mark.gemma
@pytest.mark.timeout(180)
def test_gemma_chat_without_template_streams_the_same_text(gemma_model_path):
    config = {
        "server": {"shutdown_grace": 1},
        "models": [{"name": "gemma", "path": str(gemma_model_path), "n_ctx": 1024}],
    }
    with running_server(config) as srv:
        client = openai.OpenAI(
            base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=120
        )
        kwargs = {
            "model": "gemma",
            "messages": [{"role": "user", "content": "Name three colours."}],
            "max_tokens": 24,
            "temperature": 0,
            "seed": 1,
        }
        whole = client.chat.completions.create(**kwargs)
        assert whole.choices[0].message.content.strip()
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(**kwargs, stream=True)
        )
        assert text == whole.choices[0].message.content
