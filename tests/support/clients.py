"""The client test layer: real agent programs from npm, and a recording proxy before the server.

The API (kept small and stable; ``tests/clients`` and its fixtures build on it):

``PINS``
    ``{npm package: version}``, the versions the client tests run. Bump one on purpose and
    re-record its fixtures (``tests/clients/fixtures/``).

``npm_program(package, bin=None, version=None) -> Path``
    The executable ``bin`` (default: the package's only or first ``bin``) of ``package`` at
    ``version`` (default ``PINS[package]``), installed once with ``npm install --prefix``
    into ``$HOSHIKAGE_NPM_CACHE`` (else ``~/.cache/hoshikage/npm``), in a folder
    ``<package with / as +>@<version>``, reused when present. Skips the test when node or npm
    is missing (``make test`` provides them: scripts/node.sh).

``npm_installed({package: version}) -> Path``
    A folder whose ``node_modules`` holds those packages, installed together once into the
    same cache (a library and its providers, for a script of a test's own to import).

``offline_env(home, **extra) -> dict``
    An environment for a program run: ``os.environ`` with ``HOME`` (and the XDG folders)
    moved into ``home``, and every documented switch that stops telemetry, auto-update,
    error reporting and other phone-home of the programs in ``PINS`` turned on; whatever
    still tries to reach past loopback goes through ``HTTP(S)_PROXY`` to a port that refuses
    at once. The machines running the suite have no network beyond the package registries;
    a program must never wait on one, nor reach the internet.

``recording_proxy(upstream, steer=None) -> Proxy`` (a context manager)
    A plain HTTP proxy on 127.0.0.1 in front of ``upstream`` (e.g. ``server.base_url``). Point
    the program at ``proxy.base_url``. Every exchange is kept in ``proxy.exchanges``, in
    order, as :class:`Exchange` (method, path with query, request headers and body, status,
    response headers and body). Streamed answers (SSE, NDJSON) pass through chunk by chunk.
    ``steer(path, body) -> dict | None``: for a JSON request, the extra fields to add to its
    body before it goes on (a ``grammar`` that makes a tiny random model say exactly what
    the test needs, given what the conversation holds so far); ``Exchange.request_body``
    stays what the program sent, ``Exchange.steered`` is what was added.
    ``proxy.assert_all_ok()`` fails, listing them, when any request was answered with a
    status of 400 or more, or with an error event inside a stream (an SSE ``event: error``,
    ``response.failed``, or an NDJSON line with a top-level ``error``).
    ``proxy.requests(path_prefix)`` is the parsed JSON bodies of the requests to that path.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

PINS: dict[str, str] = {
    "@anthropic-ai/claude-code": "2.1.337",
    "@openai/codex": "0.171.0",
    "opencode-ai": "1.18.33",
    "@qwen-code/qwen-code": "0.24.4",
    "@continuedev/cli": "1.5.47",
    "@mariozechner/pi-coding-agent": "0.73.1",
    # The Vercel AI SDK and its providers (a library, run by tests/clients/test_ai_sdk.py).
    "ai": "6.0.333",
    "@ai-sdk/openai": "3.0.141",
    "@ai-sdk/openai-compatible": "2.0.92",
    "@ai-sdk/anthropic": "3.0.140",
    "ollama-ai-provider-v2": "3.6.0",
    "zod": "4.6.7",
}


def npm_cache() -> Path:
    base = os.environ.get("HOSHIKAGE_NPM_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hoshikage" / "npm"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        import pytest

        pytest.skip(f"{tool} is missing: `make test` installs it (scripts/node.sh)")
    return path


def npm_program(package: str, bin: str | None = None, version: str | None = None) -> Path:
    """The path of ``package``'s executable ``bin``, installed once (see the module doc)."""
    version = version or PINS[package]
    folder = npm_installed({package: version})
    manifest = folder / "node_modules" / package / "package.json"
    bins = json.loads(manifest.read_text()).get("bin") or {}
    if isinstance(bins, str):
        bins = {package.rsplit("/", 1)[-1]: bins}
    name = bin or next(iter(bins))
    path = folder / "node_modules" / ".bin" / name
    assert path.exists(), f"{package}@{version} has no executable {name!r} (it has {list(bins)})"
    return path


def npm_installed(packages: dict[str, str]) -> Path:
    """A folder whose ``node_modules`` holds ``packages`` (name -> version), installed once
    together with ``npm install --prefix`` into :func:`npm_cache`, in a folder named after
    them, and reused when present. Skips the test when node or npm is missing."""
    name = "+".join(f"{p.replace('/', '+')}@{v}" for p, v in sorted(packages.items()))
    if len(name) > 120:  # a library with its providers: a shorter name of the same set
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{sorted(packages)[0].replace('/', '+')}-set-{digest}"
    folder = npm_cache() / name
    if not all((folder / "node_modules" / p / "package.json").exists() for p in packages):
        npm = _need("npm")
        _need("node")
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Installed beside, then renamed: an interrupted install is never taken for a whole one.
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        try:
            subprocess.run(
                [npm, "install", "--prefix", str(tmp), "--no-audit", "--no-fund"]
                + ["--loglevel", "error", *(f"{p}@{v}" for p, v in sorted(packages.items()))],
                check=True,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"},
            )
            try:
                os.rename(tmp, folder)
            except OSError:  # another run installed it meanwhile
                if not (folder / "node_modules").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


#: The documented off switches of the pinned programs (each program ignores the others').
OFFLINE_SWITCHES: dict[str, str] = {
    # Claude Code (docs: settings, "Environment variables").
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL": "1",
    # opencode (docs: config, "Environment variables").
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_AUTOCOMPACT": "1",
    # Qwen Code / Gemini CLI lineage (docs: telemetry, sandbox).
    "QWEN_TELEMETRY_ENABLED": "false",
    "GEMINI_TELEMETRY_ENABLED": "false",
    "QWEN_SANDBOX": "false",
    # Anything that still reaches past loopback goes to a proxy that refuses at once (the
    # discard port), instead of the internet: bun (Claude Code, opencode) and Node's own
    # fetch with NODE_USE_ENV_PROXY honour these.
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "NODE_USE_ENV_PROXY": "1",
    # Everything that prints or checks for updates through npm's notifier.
    "NO_UPDATE_NOTIFIER": "1",
    # Continue's CLI: its telemetry and metrics.
    "CONTINUE_CLI_ENABLE_TELEMETRY": "0",
    "CONTINUE_METRICS_ENABLED": "0",
    # pi (README: "Telemetry and update checks"): no update check, no install ping.
    "PI_OFFLINE": "1",
    "PI_TELEMETRY": "0",
    "NPM_CONFIG_UPDATE_NOTIFIER": "false",
    "DO_NOT_TRACK": "1",
    "CI": "1",
}


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    """``os.environ`` with a private ``home`` and every off switch (see the module doc)."""
    home = Path(home)
    for sub in (".config", ".cache", ".local/share", ".local/state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        # Nothing of the developer's own accounts leaks into a test run.
        if not k.startswith(
            ("ANTHROPIC_", "OPENAI_", "CLAUDE_", "OPENCODE", "QWEN_", "CODEX_", "CONTINUE_", "PI_")
        )
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_STATE_HOME=str(home / ".local/state"),
        **OFFLINE_SWITCHES,
    )
    env.update(extra)
    return env


@attrs.define
class Exchange:
    """One request through the proxy and its answer (bodies as bytes, headers lower-cased)."""

    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int = 0
    response_headers: dict[str, str] = attrs.Factory(dict)
    response_body: bytes = b""
    #: The fields the proxy's ``steer`` added to the body before it went on.
    steered: dict[str, Any] = attrs.Factory(dict)

    def json(self) -> Any:
        """The request body as JSON (None when empty)."""
        return json.loads(self.request_body) if self.request_body else None

    def error(self) -> str | None:
        """Why this exchange is not a success, or None."""
        if self.status >= 400 or self.status == 0:
            return f"status {self.status}: {self.response_body[:500]!r}"
        kind = self.response_headers.get("content-type", "")
        text = self.response_body.decode("utf-8", "replace")
        if "text/event-stream" in kind:
            for line in text.splitlines():
                if line.strip() in ("event: error", "event: response.failed"):
                    return f"error event in stream: {text[-500:]!r}"
                if line.startswith("data:"):
                    try:
                        data = json.loads(line[5:])
                    except ValueError:
                        continue
                    if isinstance(data, dict) and data.get("type") in ("error", "response.failed"):
                        return f"error event in stream: {line[:500]!r}"
        elif "ndjson" in kind:
            for line in text.splitlines():
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if isinstance(data, dict) and "error" in data:
                    return f"error line in stream: {line[:500]!r}"
        return None


_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


@attrs.define
class Proxy:
    base_url: str
    upstream: str
    steer: Callable[[str, Any], dict | None] | None = None
    exchanges: list[Exchange] = attrs.Factory(list)

    def failures(self) -> list[str]:
        return [f"{x.method} {x.path}: {err}" for x in list(self.exchanges) if (err := x.error())]

    def assert_all_ok(self) -> None:
        """Every request got a success answer, and there was at least one."""
        assert self.exchanges, "the program sent no request through the proxy"
        failures = self.failures()
        assert not failures, "requests not answered with success:\n" + "\n".join(failures)

    def requests(self, path_prefix: str = "/") -> list[Any]:
        """The JSON bodies of the requests whose path starts with ``path_prefix``."""
        return [x.json() for x in list(self.exchanges) if x.path.startswith(path_prefix)]


def _handler(proxy: Proxy) -> type[http.server.BaseHTTPRequestHandler]:
    target = urllib.parse.urlsplit(proxy.upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            if "chunked" in self.headers.get("transfer-encoding", ""):
                parts = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                body = b"".join(parts)
            headers = {k.lower(): v for k, v in self.headers.items()}
            exchange = Exchange(self.command, self.path, headers, body)
            proxy.exchanges.append(exchange)
            if proxy.steer is not None and "json" in headers.get("content-type", ""):
                extra = proxy.steer(self.path, exchange.json())
                if extra:
                    exchange.steered = dict(extra)
                    body = json.dumps({**exchange.json(), **extra}).encode()
                    headers = {**headers, "content-length": str(len(body))}
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
            try:
                send = {k: v for k, v in headers.items() if k not in _HOP and k != "host"}
                send["host"] = target.netloc
                upstream.request(self.command, self.path, body=body, headers=send)
                resp = upstream.getresponse()
            except OSError as exc:
                exchange.status = 502
                exchange.response_body = str(exc).encode()
                self.send_error(502, str(exc))
                return
            exchange.status = resp.status
            exchange.response_headers = {k.lower(): v for k, v in resp.getheaders()}
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if self.command == "HEAD" or resp.status in (204, 304):
                self.send_header("content-length", "0")
                self.end_headers()
                upstream.close()
                return
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            try:
                while chunk := resp.read1(65536):
                    # Recorded before the client sees it: the exchange is whole when it is.
                    exchange.response_body += chunk
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            finally:
                upstream.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _relay

    return Handler


@contextmanager
def recording_proxy(
    upstream: str, steer: Callable[[str, Any], dict | None] | None = None
) -> Iterator[Proxy]:
    """A recording proxy before ``upstream`` for the length of the block (see the module doc)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    proxy = Proxy(f"http://127.0.0.1:{server.server_address[1]}", upstream.rstrip("/"), steer)
    server.RequestHandlerClass = _handler(proxy)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="recording-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


def scrub(value: Any, replacements: Mapping[str, str]) -> Any:
    """``value`` (JSON data) with every occurrence of each key of ``replacements`` in its
    strings replaced by its value: temporary paths, home folders and session ids out of a
    recorded request before it becomes a fixture."""
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [scrub(v, replacements) for v in value]
    if isinstance(value, dict):
        return {scrub(k, replacements): scrub(v, replacements) for k, v in value.items()}
    return value


# ---- grammars that steer a tiny model through an agent's conversation ---------------------


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (JSON's escapes are GBNF's)."""
    return json.dumps(text)


def harmony_turn(thought: str, call: dict | None, answer: str | None) -> str:
    """A grammar for gpt-oss's own output: the analysis channel, then a call on the
    commentary channel or the final answer (its markers as the special tokens they are)."""
    lit = gbnf_literal
    head = f'<|channel|> "analysis" <|message|> {lit(thought)} <|end|> <|start|> "assistant" '
    if call is not None:
        to = lit(f"commentary to=functions.{call['name']} ")
        args = lit(json.dumps(call["arguments"]))
        return f'root ::= {head}<|channel|> {to} <|constrain|> "json" <|message|> {args}'
    return f'root ::= {head}<|channel|> "final" <|message|> {lit(answer)}'
