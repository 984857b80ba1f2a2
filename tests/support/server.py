"""A real ``hoshikage serve`` subprocess on loopback, for end-to-end tests.

    with running_server({"models": [...]}) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x")

The config (TOML text or a dict) goes to a temporary file; the server binds a free port on
127.0.0.1. The process is always terminated (then killed) when the block exits, and its
log is kept for failure messages (``server.log()``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """The small TOML subset a Hoshikage config needs: tables and arrays of tables of scalars."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for table in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


@attrs.define
class Server:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    config_path: Path
    #: Seconds from spawning the process to the first successful ``/health``.
    startup_seconds: float = 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None):
        """(status, body bytes) of a GET; HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.base_url + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self, headers: Mapping[str, str] | None = None) -> dict:
        """``GET /api/status``, which must answer 200."""
        code, body = self.get("/api/status", headers=headers)
        assert code == 200, body
        return json.loads(body)

    def model_status(self, name: str, until: Callable[[dict], Any], timeout: float = 10.0) -> dict:
        """Model ``name``'s entry in ``/api/status`` once ``until(entry)`` holds (asserted)."""
        deadline = time.monotonic() + timeout
        while True:
            model = next(m for m in self.status()["models"] if m["name"] == name)
            if until(model) or time.monotonic() > deadline:
                assert until(model), model
                return model
            time.sleep(0.05)

    def terminate(self, timeout: float = 10.0) -> float:
        """Send SIGTERM; return the seconds the process took to exit (killed after ``timeout``)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return time.monotonic() - started


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"hoshikage serve exited with {server.process.returncode}:\n{server.log()}"
            )
        try:
            status, _ = server.get("/health", timeout=1.0)
            if status == 200:
                server.startup_seconds = time.monotonic() - started
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"hoshikage serve did not answer /health within {timeout}s:\n{server.log()}")


@contextmanager
def running_server(
    config: str | Mapping[str, Any] | None,
    *,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[Server]:
    """Run ``hoshikage --config <tmp> serve --port <free>`` until the block exits. With
    ``config=None`` no ``--config`` is passed: the server looks for its config where a user's
    would be (give ``env`` a fresh ``HOME``/``XDG_CONFIG_HOME`` for "no config at all")."""
    with tempfile.TemporaryDirectory(prefix="hoshikage-server-") as tmp:
        config_path = Path(tmp) / "config.toml"
        config_args: list[str] = []
        if config is not None:
            config_path.write_text(config if isinstance(config, str) else to_toml(config))
            config_args = ["--config", str(config_path)]
        log_path = Path(tmp) / "server.log"
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "hoshikage_core.cli",
            *config_args,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own data directory (the Responses store) unless ``env`` names one.
                env={
                    **os.environ,
                    "COLUMNS": "200",
                    "XDG_DATA_HOME": str(Path(tmp) / "data"),
                    **(env or {}),
                },
            )
        server = Server(f"http://127.0.0.1:{port}", process, log_path, config_path)
        try:
            _wait_healthy(server, startup_timeout)
            yield server
        finally:
            server.terminate()
