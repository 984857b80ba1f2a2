"""A page of another origin, in a real Chromium, cannot make the server do anything.

The browser guard reads a body sent with any content type as JSON when the request carries no
``Origin`` (``curl -d``, the form of Ollama's documented examples), and relies on every
browser sending an ``Origin`` with whatever it POSTs. These tests hold Chromium to that: a
page served from another port (another origin, the same address space, so Chromium's private
network rules do not stop the requests first) sends each request a page can send without a
CORS preflight, all with a JSON body that would run a generation: a ``text/plain`` form (the
classic JSON-in-a-form forgery), an ``application/x-www-form-urlencoded`` form, a
``no-cors`` fetch and a beacon. Each reached the server and was refused as a foreign origin
(403, ``forbidden_origin``), and nothing ran.
"""

from __future__ import annotations

import html
import http.server
import json
import threading

import pytest

from .conftest import model_status

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
GENERATE = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}


def _page(target: str) -> str:
    """A page whose forms and script send the server requests of every simple kind."""
    chat = json.dumps(CHAT)
    # The text/plain forgery: the field's name and value join as ``name=value``, a JSON body.
    name, value = chat[:-1] + ', "pad": "', '"}'
    generate = html.escape(json.dumps(GENERATE), quote=True)
    return f"""<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="plain" method="POST" enctype="text/plain" target="sink1"
      action="{target}/v1/chat/completions">
  <input name="{html.escape(name, quote=True)}" value="{html.escape(value, quote=True)}">
</form>
<form id="urlencoded" method="POST" target="sink2" action="{target}/api/generate">
  <input name="{generate}" value="">
</form>
<script>
  window.sent = (async () => {{
    document.getElementById("plain").submit();
    document.getElementById("urlencoded").submit();
    await fetch("{target}/api/chat", {{method: "POST", mode: "no-cors",
      body: JSON.stringify({json.dumps({**CHAT, "stream": False})})}});
    navigator.sendBeacon("{target}/v1/completions",
      JSON.stringify({json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2})}));
    return true;
  }})();
</script>
</body></html>"""


class _Foreign(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def foreign_site(server):
    handler = type("Handler", (_Foreign,), {"body": _page(server.base_url).encode()})
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()


def test_a_page_of_another_origin_cannot_run_anything(browser, server, foreign_site):
    before = model_status(server.base_url)["requests"]
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    responses = {}
    expected = {"/v1/chat/completions", "/api/generate", "/api/chat", "/v1/completions"}

    def answered(response) -> None:
        path = response.url.removeprefix(server.base_url)
        if path in expected and response.request.method == "POST":
            responses[path] = response

    page.on("response", answered)
    try:
        page.goto(foreign_site + "/")
        page.evaluate("() => window.sent")
        for _ in range(80):  # Playwright delivers the responses' events while it waits
            if set(responses) == expected:
                break
            page.wait_for_timeout(250)
        assert set(responses) == expected, list(responses)
        for path, response in responses.items():
            # The requests were simple ones: no preflight, a body not declared JSON.
            content_type = response.request.all_headers().get("content-type", "")
            assert not content_type.startswith("application/json"), (path, content_type)
            # Each carried the foreign page's Origin: the guard's only 403 for a request to
            # 127.0.0.1 (an IP literal, always this server's Host) is a foreign Origin.
            # (Chromium adds the header below what Playwright reports of a fetch's or a
            # beacon's headers, and keeps no body of those answers to read.)
            assert response.status == 403, (path, response.status)
    finally:
        context.close()
    assert model_status(server.base_url)["requests"] == before  # nothing ran
