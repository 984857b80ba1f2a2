"""``/`` and the web page's files under ``/ui/``, through Litestar's test client (the page
itself is tested in a real browser in ``tests/browser``)."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from tests.api.conftest import tiny_config  # noqa: E402
from tests.api.helpers import assert_openai_error  # noqa: E402

pytestmark = pytest.mark.timeout(60)

PAGE_FILES = (
    "index.html",
    "app.css",
    "app.js",
    "api.js",
    "chat.js",
    "chart.js",
    "conversations.js",
    "markdown.js",
    "status.js",
    "getmodel.js",
    "icon.svg",
)


async def test_root_is_a_liveness_line_or_a_redirect_for_browsers(client):
    r = await client.get("/")
    assert r.status_code == 200 and r.text == "Hoshikage is running"
    assert r.headers["content-type"].startswith("text/plain")
    r = await client.head("/")
    assert r.status_code == 200 and r.content == b""
    for accept in ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html"):
        r = await client.get("/", headers={"Accept": accept}, follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == "/ui/"
    for accept in ("*/*", "application/json"):
        r = await client.get("/", headers={"Accept": accept})
        assert r.status_code == 200 and r.text == "Hoshikage is running"
    assert_openai_error(await client.post("/"), 405, code="method_not_allowed")


async def test_page_files_are_served_with_the_csp(client):
    r = await client.get("/ui", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "/ui/"
    r = await client.get("/ui/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js">' in r.text
    csp = dict(
        part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";")
    )
    assert (
        csp["default-src"]
        == csp["script-src"]
        == csp["connect-src"]
        == csp["style-src"]
        == "'self'"
    )
    assert (
        csp["object-src"]
        == csp["base-uri"]
        == csp["form-action"]
        == csp["frame-ancestors"]
        == "'none'"
    )
    assert csp["require-trusted-types-for"] == "'script'"
    assert r.headers["x-content-type-options"] == "nosniff"
    for name in PAGE_FILES:
        r = await client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert "content-security-policy" in r.headers
        if name.endswith(".js"):
            assert r.headers["content-type"] == "text/javascript; charset=utf-8"
            assert (
                "innerHTML" not in r.text
                and "eval(" not in r.text
                and "document.write" not in r.text
            )
    head = await client.head("/ui/app.js")
    assert head.status_code == 200 and head.content == b""
    # Revalidation: an unchanged file is a 304.
    first = await client.get("/ui/app.css")
    again = await client.get("/ui/app.css", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/server/web.py",
        "/ui/..%2fapp.py",
        "/ui/__init__.py",
        "/ui/web/app.js",
        "/ui//etc/passwd",
        "/ui/app.js/",
    ],
)
async def test_only_the_page_files_are_reachable(client, path):
    r = await client.get(path)
    if r.status_code == 200:  # a URL that normalises to a page file (e.g. a trailing slash)
        assert r.headers["content-type"].startswith("text/javascript")
        return
    assert_openai_error(r, 404, code="not_found")


async def test_page_is_public_but_the_data_is_not(make_client, tiny_model_path):
    client = await make_client(tiny_config(tiny_model_path, api_key="s3cret"))
    assert (await client.get("/")).status_code == 200
    assert (await client.head("/")).status_code == 200
    for name in PAGE_FILES:
        assert (await client.get(f"/ui/{name}")).status_code == 200, name
    assert (await client.get("/ui/")).status_code == 200
    assert_openai_error(await client.get("/api/status"), 401, type="authentication_error")
    assert_openai_error(await client.get("/v1/models"), 401, type="authentication_error")


async def test_page_routes_are_not_in_the_api_schema(client):
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)


async def test_status_reports_the_process_resident_memory(client):
    status = (await client.get("/api/status")).json()
    assert isinstance(status["rss_bytes"], int) and status["rss_bytes"] > 10 * 1024 * 1024


def test_serve_prints_the_pages_address(tiny_model_path):
    from tests.support.server import running_server

    with running_server(tiny_config(tiny_model_path)) as server:
        assert f"web page: {server.base_url}/ui/" in server.log()
        status, body = server.get("/ui/")
        assert status == 200 and b"<title>Hoshikage</title>" in body
