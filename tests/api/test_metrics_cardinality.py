"""Metric labels never come from the raw URL: a stranger cannot grow the server's memory by
requesting random paths. Error series are labelled by route template, and every URL that
matches no route shares one ``<unmatched>`` series."""

from __future__ import annotations

import random
import string

import pytest

from tests.api.conftest import tiny_config
from tests.api.test_server_routes import parse_prometheus

pytest.importorskip("llama_cpp")

KEY = "cardinality-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def random_path(rng: random.Random) -> str:
    word = "".join(
        rng.choices(string.ascii_letters + string.digits + "-_.~%", k=rng.randint(1, 24))
    )
    return rng.choice(
        [
            f"/{word}",
            f"/v1/{word}",
            f"/v1/{word}/{word}",
            f"/v1/models/{word}",  # a route with a path parameter
            f"/api/models/{word}/load",
            f"/api/models/{word}/unload",
            f"/v1/messages/{word}",
            f"/metrics/{word}",
            f"/{word}?{word}={word}",
        ]
    )


def series(text: str) -> set[str]:
    return set(parse_prometheus(text))


def error_series(text: str) -> set[str]:
    return {name for name in series(text) if name.startswith("hoshikage_http_errors_total")}


async def test_random_unauthenticated_paths_keep_the_series_bounded(make_client, tiny_model_path):
    client = await make_client(tiny_config(tiny_model_path, api_key=KEY))
    rng = random.Random(1234)
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]

    async def hit(n: int, headers=None) -> list[str]:
        paths = []
        for _ in range(n):
            path = random_path(rng)
            paths.append(path)
            r = await client.request(rng.choice(methods), path, headers=headers, content=b"{}")
            assert r.status_code in (401, 404, 405), (path, r.status_code, r.text)
        return paths

    await hit(50)
    before = (await client.get("/metrics", headers=AUTH)).text
    paths = await hit(1000)
    after = (await client.get("/metrics", headers=AUTH)).text

    # 1,000 more random URLs added no series at all, and no path appears in the output.
    assert series(after) == series(before)
    assert not any(
        p.split("?")[0] in after for p in paths if len(p) > 8 and p.count("/") > 1 and "{" not in p
    )
    labels = error_series(after)
    assert 0 < len(labels) <= 16, labels
    assert 'hoshikage_http_errors_total{code="not_found",path="<unmatched>",status="404"}' in labels
    assert (
        parse_prometheus(after)[
            'hoshikage_http_errors_total{code="not_found",path="<unmatched>",status="404"}'
        ]
        > 100
    )
    # Matched routes are labelled by their template, not by the URL that matched them.
    assert any('path="/v1/models/{model_id}"' in name for name in labels), labels


async def test_authenticated_unknown_models_and_urls_keep_the_series_bounded(
    make_client, tiny_model_path
):
    client = await make_client(tiny_config(tiny_model_path, api_key=KEY))
    rng = random.Random(99)
    for i in range(300):
        name = "".join(rng.choices(string.ascii_lowercase, k=12))
        if i % 3 == 0:
            r = await client.get(f"/v1/models/{name}", headers=AUTH)
        elif i % 3 == 1:
            r = await client.post(
                "/v1/chat/completions",
                headers=AUTH,
                json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
            )
        else:
            r = await client.post(f"/{name}", headers=AUTH)
        assert r.status_code in (404, 405), r.text
    text = (await client.get("/metrics", headers=AUTH)).text
    labels = error_series(text)
    assert len(labels) <= 4, labels
    # Requests for unknown models create no per-model series either.
    models = {name.split('model="')[1].split('"')[0] for name in series(text) if 'model="' in name}
    assert models <= {"tiny", "tiny-embed"}, models


async def test_metrics_have_the_standard_process_metrics(make_client, tiny_model_path):
    client = await make_client(tiny_config(tiny_model_path))
    samples = parse_prometheus((await client.get("/metrics")).text)
    assert samples["process_resident_memory_bytes"] > 0
    assert "python_info" in "".join(samples)
    assert samples["hoshikage_queue_depth"] == 0


async def test_each_app_has_its_own_registry(make_client, tiny_model_path):
    first = await make_client(tiny_config(tiny_model_path))
    second = await make_client(tiny_config(tiny_model_path))
    await first.get("/no-such-route")
    key = 'hoshikage_http_errors_total{code="not_found",path="<unmatched>",status="404"}'
    assert parse_prometheus((await first.get("/metrics")).text)[key] == 1
    assert key not in parse_prometheus((await second.get("/metrics")).text)
