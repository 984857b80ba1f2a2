"""Models, health, metrics, admin, auth, CORS and OpenAPI, through Litestar's test client."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from tests.api.conftest import tiny_config  # noqa: E402
from tests.api.helpers import assert_openai_error  # noqa: E402

pytestmark = pytest.mark.timeout(60)


async def test_models_list_every_model_and_alias_with_state(client):
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {"tiny", "tiny-alias", "tiny-embed"}
    assert all(m["object"] == "model" and m["state"] == "unloaded" for m in cards.values())
    assert cards["tiny-alias"]["alias_of"] == "tiny" and cards["tiny"]["alias_of"] is None
    await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
    )
    one = (await client.get("/v1/models/tiny-alias")).json()
    assert one["id"] == "tiny-alias" and one["state"] == "loaded"
    assert_openai_error(await client.get("/v1/models/nope"), 404, code="model_not_found")


async def test_health_status_and_admin_load_unload(client):
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    loaded = await client.post("/api/models/tiny-alias/load", params={"keep_alive": "2m"})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["name"] == "tiny" and loaded.json()["state"] == "loaded"
    status = (await client.get("/api/status")).json()
    tiny = next(m for m in status["models"] if m["name"] == "tiny")
    assert tiny["aliases"] == ["tiny-alias"] and tiny["memory_bytes"] > 0
    assert 60 < tiny["unload_in_seconds"] <= 120
    assert status["version"] and status["uptime_seconds"] >= 0
    unloaded = (await client.post("/api/models/tiny/unload")).json()
    assert unloaded == {"name": "tiny", "result": "unloaded", "state": "unloaded"}
    assert (await client.post("/api/models/tiny/unload")).json()["result"] == "not_loaded"
    assert_openai_error(await client.post("/api/models/nope/load"), 404, code="model_not_found")
    assert_openai_error(
        await client.post("/api/models/tiny/load", params={"keep_alive": "soon"}),
        400,
        param="keep_alive",
    )


def parse_prometheus(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample; fails on a malformed line."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")) or not line, line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


async def test_metrics_count_requests_tokens_and_loads(client):
    await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    await client.post(
        "/v1/chat/completions",
        json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
    )
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = parse_prometheus(r.text)
    assert samples['hoshikage_requests_total{endpoint="chat",model="tiny",status="ok"}'] == 1
    assert samples['hoshikage_completion_tokens_total{model="tiny"}'] >= 1
    assert samples['hoshikage_model_loads_total{model="tiny"}'] == 1
    assert samples['hoshikage_model_load_seconds_count{model="tiny"}'] == 1
    assert samples['hoshikage_time_to_first_token_seconds_count{model="tiny"}'] == 1
    assert (
        samples[
            'hoshikage_http_errors_total{code="model_not_found",path="/v1/chat/completions",status="404"}'
        ]
        == 1
    )
    assert samples["hoshikage_queue_depth"] == 0 and samples["hoshikage_in_flight_requests"] == 0
    assert samples['hoshikage_model_loaded{model="tiny"}'] == 1


async def test_api_key_required_except_health(make_client, tiny_model_path):
    client = await make_client(tiny_config(tiny_model_path, api_key="s3cret"))
    assert (await client.get("/health")).status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret"},
        {"Authorization": "Bearer "},
    ):
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/metrics"),
            ("GET", "/api/status"),
        ):
            r = await client.request(method, path, headers=headers, json={})
            assert_openai_error(r, 401, type="authentication_error", code="invalid_api_key")
    ok = await client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


async def test_cors_when_configured(make_client, tiny_model_path):
    client = await make_client(
        tiny_config(tiny_model_path, cors_origins=["http://app.example"], api_key="k")
    )
    r = await client.options(
        "/v1/chat/completions",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == "http://app.example"


async def test_openapi_schema_describes_the_routes(client):
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/health",
        "/metrics",
        "/api/status",
    ):
        assert path in paths
    chat = paths["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][ref]["properties"]
    assert {"model", "messages", "stream", "keep_alive", "response_format", "tools"} <= set(
        properties
    )
    assert {"200", "400", "404", "503"} <= set(chat["responses"])


def test_the_app_does_not_import_pydantic(tiny_model_path, tmp_path):
    """pydantic is installed beside the official clients, and Litestar imports it whenever
    it can (about 8 MB resident); no route uses it, so the server's app leaves it out (only
    the OpenAPI document, made when /schema is first asked for, still brings it in, through
    Litestar's example factories)."""
    import subprocess
    import sys

    import pydantic  # noqa: F401  (installed here: the check below means something)

    code = (
        "import sys\n"
        "from hoshikage_api.app import create_app\n"
        "from hoshikage_core.plugins import make_plugin_manager\n"
        "from hoshikage_core.runtime import Runtime\n"
        "from hoshikage_core import config\n"
        "pm = make_plugin_manager()\n"
        f"data = {{'models': [{{'name': 'tiny', 'path': {str(tiny_model_path)!r}}}]}}\n"
        "app = create_app(Runtime(config.structure(data, pm=pm), pm))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
