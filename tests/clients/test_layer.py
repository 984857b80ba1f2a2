"""The client test layer itself (tests/support/clients.py): the recording proxy relays plain
and streamed answers unchanged and tells a failure from a success; a pinned program installs
from npm and runs."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from tests.support.clients import PINS, npm_program, offline_env, recording_proxy, scrub

pytestmark = pytest.mark.clients

SSE_OK = b'event: message_start\ndata: {"type": "message_start"}\n\n'
SSE_ERROR = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error"}}\n\n'


@contextmanager
def upstream():
    """A small HTTP/1.0 server: /json echoes the request, /sse and /sse-error stream, /bad is
    a 400."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.path.startswith("/json"):
                self._send(200, "application/json", json.dumps({"echo": json.loads(body)}).encode())
            elif self.path.startswith("/sse"):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for part in (SSE_OK, SSE_ERROR if "error" in self.path else SSE_OK):
                    self.wfile.write(part)
                    self.wfile.flush()
            else:
                self._send(400, "application/json", b'{"error": {"message": "no"}}')

        def _send(self, status, kind, data):
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def post(url, data: dict):
    req = urllib.request.Request(url, json.dumps(data).encode(), method="POST")
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_proxy_relays_and_records_successes():
    with upstream() as url, recording_proxy(url) as proxy:
        assert post(proxy.base_url + "/json?beta=true", {"a": 1}) == (
            200,
            b'{"echo": {"a": 1}}',
        )
        assert post(proxy.base_url + "/sse", {"stream": True}) == (200, SSE_OK + SSE_OK)
        proxy.assert_all_ok()
    assert [x.path for x in proxy.exchanges] == ["/json?beta=true", "/sse"]
    assert proxy.requests("/json") == [{"a": 1}]
    assert proxy.exchanges[0].response_headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/bad", "/sse-error"])
def test_proxy_tells_a_failure(path):
    with upstream() as url, recording_proxy(url) as proxy:
        post(proxy.base_url + "/json", {})
        post(proxy.base_url + path, {})
        with pytest.raises(AssertionError, match=path):
            proxy.assert_all_ok()


def test_proxy_with_no_request_is_not_a_success():
    with upstream() as url, recording_proxy(url) as proxy:
        with pytest.raises(AssertionError, match="no request"):
            proxy.assert_all_ok()


def test_scrub_replaces_in_keys_and_values():
    data = {"/tmp/x/home": ["cwd /tmp/x/home/a", 3, {"id": "sess-1"}]}
    assert scrub(data, {"/tmp/x/home": "/home/user", "sess-1": "SESSION"}) == {
        "/home/user": ["cwd /home/user/a", 3, {"id": "SESSION"}]
    }


def test_a_pinned_program_installs_and_runs(tmp_path):
    claude = npm_program("@anthropic-ai/claude-code")
    assert npm_program("@anthropic-ai/claude-code") == claude  # reused, not reinstalled
    out = subprocess.run(
        [claude, "--version"], env=offline_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert PINS["@anthropic-ai/claude-code"] in out.stdout
