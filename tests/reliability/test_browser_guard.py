"""A web page cannot drive a server that has no key: a browser's bodies that are not JSON are
a 415 (other clients' are read as JSON), a foreign ``Origin`` on a state-changing route is a
403 (nothing runs, nothing is stored), and without an ``api_key`` a ``Host`` that is not this
server's (DNS rebinding) is a 403."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.server import running_server

pytestmark = pytest.mark.timeout(120)
EVIL = "http://evil.example"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "server": {"allowed_hosts": ["hoshikage.lan"], "cors_origins": ["http://friend.example"]},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with running_server(config) as running:
        yield running


def test_a_browser_must_send_json(server):
    """A request with an ``Origin`` (every browser's POST has one; see
    tests/browser/test_foreign_pages.py) and a body not declared JSON is a 415, even from the
    server's own origin."""
    body = json.dumps(CHAT).encode()
    before = server.status()["models"][0]["requests"]
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/api/chat"):
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            None,
        ):
            headers = {"Origin": server.base_url}
            if content_type:
                headers["Content-Type"] = content_type
            r = httpx.post(server.base_url + path, content=body, headers=headers, timeout=10)
            assert r.status_code == 415, (path, content_type, r.status_code, r.text)
            error = r.json()["error"]
            assert "application/json" in (error if isinstance(error, str) else error["message"])
    assert server.status()["models"][0]["requests"] == before  # nothing ran
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.x+json",
    ):
        r = httpx.post(
            server.base_url + "/v1/chat/completions",
            content=body,
            headers={"Content-Type": content_type, "Origin": server.base_url},
            timeout=30,
        )
        assert r.status_code == 200, (content_type, r.text)
    # A POST without a body needs no content type.
    assert httpx.post(server.base_url + "/api/reload", timeout=30).status_code == 200


def test_other_clients_may_send_json_as_any_type(server):
    """Without an ``Origin`` (not a browser) a body is read as JSON whatever type it declares,
    as Ollama and llama-server read it; a multipart body is still a 415 where a route takes
    JSON, and a body that is not JSON is a 400 that says what it was sent as."""
    body = json.dumps(CHAT).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        r = httpx.post(
            server.base_url + "/v1/chat/completions", content=body, headers=headers, timeout=30
        )
        assert r.status_code == 200, (content_type, r.text)
        assert r.json()["usage"]["completion_tokens"] == 2
    r = httpx.post(
        server.base_url + "/api/chat",
        content=json.dumps({**CHAT, "stream": False}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["done"] is True, r.text
    r = httpx.post(
        server.base_url + "/v1/chat/completions",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        timeout=10,
    )
    assert r.status_code == 415, r.text
    r = httpx.post(server.base_url + "/v1/chat/completions", data={"model": "tiny"}, timeout=10)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "not valid JSON" in message and "application/x-www-form-urlencoded" in message
    r = httpx.post(server.base_url + "/api/chat", data={"model": "tiny"}, timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"], r.text


def test_a_foreign_origin_cannot_change_anything(server):
    before = server.status()["models"][0]["requests"]
    for path, body in (
        ("/api/reload", None),
        ("/v1/chat/completions", CHAT),
        ("/v1/responses", {"model": "tiny", "input": "hi", "max_output_tokens": 2}),
        ("/api/chat", {**CHAT, "stream": False}),
        ("/v1/messages", {**CHAT, "max_tokens": 2}),
    ):
        for origin in (EVIL, "null", "http://127.0.0.1.evil.example"):
            r = httpx.post(
                server.base_url + path, json=body, headers={"Origin": origin}, timeout=10
            )
            assert r.status_code == 403, (path, origin, r.status_code, r.text)
            error = r.json()["error"]
            assert "cors_origins" in (error if isinstance(error, str) else error["message"])
    assert server.status()["models"][0]["requests"] == before  # nothing ran
    # The server's own origin (the web page) and a configured one may.
    for origin in (server.base_url, "http://friend.example"):
        r = httpx.post(
            server.base_url + "/v1/chat/completions",
            json=CHAT,
            headers={"Origin": origin},
            timeout=30,
        )
        assert r.status_code == 200, (origin, r.text)
    # Reads are not state-changing: a foreign Origin may GET (CORS keeps the answer from it).
    assert httpx.get(server.base_url + "/v1/models", headers={"Origin": EVIL}).status_code == 200


def test_without_a_key_only_this_servers_host_names_are_answered(server):
    port = server.base_url.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}", ""):
        for path in ("/v1/models", "/api/status", "/health"):
            r = httpx.get(server.base_url + path, headers={"Host": host}, timeout=10)
            assert r.status_code == 403, (host, path, r.status_code)
            assert r.json()["error"]["code"] == "forbidden_host"
    r = httpx.get(server.base_url + "/api/tags", headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code == 403 and "allowed_hosts" in r.json()["error"]
    for host in (
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        "app.localhost",
        "hoshikage.lan",
        f"192.168.1.20:{port}",
    ):
        r = httpx.get(server.base_url + "/v1/models", headers={"Host": host}, timeout=10)
        assert r.status_code == 200, (host, r.text)


def test_with_a_key_any_host_is_answered(tiny_model_path):
    config = {
        "server": {"api_key": "k"},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with running_server(config) as server:
        headers = {"Host": "evil.example", "Authorization": "Bearer k"}
        assert httpx.get(server.base_url + "/v1/models", headers=headers).status_code == 200
        r = httpx.post(
            server.base_url + "/v1/chat/completions",
            content=json.dumps(CHAT),
            headers={
                "Authorization": "Bearer k",
                "Content-Type": "text/plain",
                "Origin": server.base_url,
            },
        )
        assert r.status_code == 415
