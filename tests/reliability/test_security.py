"""Security: the API key guards every route but /health, the default bind is loopback, and
bodies are size-capped."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.server import free_port, running_server

pytestmark = pytest.mark.timeout(120)
KEY = "s3cret-key"


def test_api_key_guards_every_route_but_health(tiny_model_path):
    config = {
        "server": {"api_key": KEY, "max_body_size": "1MiB"},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with running_server(config) as server:
        assert server.get("/health")[0] == 200
        for path in ("/", "/ui/", "/ui/app.js"):  # the web page's files carry no data: public
            assert server.get(path)[0] == 200, path
        schema_status, schema = server.get(
            "/schema/openapi.json", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert schema_status == 200
        paths = json.loads(schema)["paths"]
        assert {
            "/v1/models",
            "/v1/chat/completions",
            "/api/status",
            "/metrics",
            "/v1/messages",
        } <= set(paths)
        assert {
            "/api/chat",
            "/api/generate",
            "/api/tags",
            "/api/ps",
            "/api/show",
            "/api/embed",
            "/api/version",
        } <= set(paths)
        assert {
            "/v1/responses",
            "/v1/responses/{response_id}",
            "/v1/responses/{response_id}/input_items",
        } <= set(paths)
        checked = 0
        for path, methods in paths.items():
            url = server.base_url + path.replace("{name}", "tiny").replace(
                "{model_id}", "tiny"
            ).replace("{id}", "tiny").replace("{response_id}", "resp_x")
            for method in methods:
                if method not in ("get", "post", "delete"):
                    continue
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": KEY},
                    {"x-api-key": "wrong"},
                ):
                    r = httpx.request(method.upper(), url, headers=headers, json={}, timeout=10)
                    if path == "/health":
                        assert r.status_code == 200
                        continue
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    error = r.json()["error"]
                    if isinstance(error, str):  # Ollama's routes: {"error": "..."}
                        assert path.startswith("/api/") and "API key" in error, (path, error)
                    else:
                        assert error["type"] == "authentication_error"
                    checked += 1
        assert checked >= 40
        for path in ("/schema", "/schema/openapi.json"):  # the schema is guarded too
            assert httpx.get(server.base_url + path, timeout=10).status_code == 401
        ok = httpx.get(
            server.base_url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
        )
        assert ok.status_code == 200
        ok = httpx.get(server.base_url + "/v1/models", headers={"x-api-key": KEY}, timeout=10)
        assert ok.status_code == 200

        big = b'{"model": "tiny", "prompt": "' + b"a" * (10 * 1024 * 1024) + b'"}'
        r = httpx.post(
            server.base_url + "/v1/completions",
            content=big,
            timeout=30,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        assert server.get("/health")[0] == 200


def test_default_bind_is_loopback_only(tiny_model_path):
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_text(
            f'[server]\nport = {port}\n[[models]]\nname = "tiny"\npath = "{tiny_model_path}"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "hoshikage_core.cli", "--config", str(cfg), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            listening = []
            while time.monotonic() < deadline and not listening:
                listening = [
                    c.laddr
                    for c in psutil.Process(proc.pid).net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN
                ]
                time.sleep(0.05)
            assert listening, "the server never listened"
            assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
            assert {addr.port for addr in listening} == {port}
        finally:
            proc.terminate()
            proc.wait(10)


def test_strangers_cannot_grow_the_metrics(tiny_model_path):
    """The bug this guards against: error series labelled with the raw path let 300
    unauthenticated requests to random URLs create 300 series on a server with a key."""
    import secrets

    config = {
        "server": {"api_key": KEY},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    auth = {"Authorization": f"Bearer {KEY}"}
    with (
        running_server(config) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):

        def series() -> list[str]:
            text = http.get("/metrics", headers=auth).text
            return [
                line.rsplit(" ", 1)[0]
                for line in text.splitlines()
                if line and not line.startswith("#")
            ]

        for path in ("/x", "/v1/models/x", "/v1/messages/x"):
            http.get(path)
        before = series()
        for _ in range(300):
            token = secrets.token_hex(8)
            http.request("GET", f"/{token}")
            http.request("POST", f"/v1/{token}/{token}", json={})
            http.request("GET", f"/v1/models/{token}")
        after = series()
        assert after == before
        assert len(after) < 400  # every series is a fixed metric, a model or a route template
        assert server.get("/health")[0] == 200
