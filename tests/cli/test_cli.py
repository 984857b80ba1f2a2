"""The CLI end to end against a real ``hoshikage serve`` process with the tiny model."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("litestar")

from tests.support.server import running_server  # noqa: E402


def cli(*args, stdin=None, timeout=60):
    # No user config leaks in: every test names its config or its --url.
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": "/nonexistent"}
    env.pop("HOSHIKAGE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env=env,
    )


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "unload": {"idle_ttl": "10m", "max_loaded": 1},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "aliases": ["t"], "n_ctx": 512}],
    }
    with running_server(config) as srv:
        yield srv


def test_status_json_load_unload(server):
    status = cli("status", "--json", "--url", server.base_url)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["concurrency"] == 4 and data["queued"] == 0
    (model,) = data["models"]
    assert model["name"] == "tiny" and model["aliases"] == ["t"]

    load = cli("load", "t", "--url", server.base_url)
    assert load.returncode == 0, load.stderr
    assert "loaded tiny in" in load.stdout or "tiny was already loaded" in load.stdout
    model = json.loads(cli("status", "--json", "--url", server.base_url).stdout)["models"][0]
    assert model["state"] == "loaded" and model["memory_bytes"] > 0
    assert 0 < model["unload_in_seconds"] <= 600

    table = cli("status", "--url", server.base_url)
    assert table.returncode == 0 and "tiny" in table.stdout and "loaded" in table.stdout

    unload = cli("unload", "tiny", "--url", server.base_url)
    assert unload.returncode == 0, unload.stderr
    assert "unloaded tiny" in unload.stdout
    model = json.loads(cli("status", "--json", "--url", server.base_url).stdout)["models"][0]
    assert model["state"] == "unloaded"
    again = cli("unload", "tiny", "--url", server.base_url)
    assert "tiny was not loaded" in again.stdout


def test_unknown_model_is_one_line_listing_names(server):
    res = cli("load", "nope", "--url", server.base_url)
    assert res.returncode == 1
    assert "'nope' does not exist" in res.stderr and "tiny" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_unreachable_server_names_the_url():
    res = cli("status", "--url", "http://127.0.0.1:9")
    assert res.returncode == 1
    assert "Cannot reach the Hoshikage server at http://127.0.0.1:9" in res.stderr
    assert "Traceback" not in res.stderr


def test_models_shows_state_from_the_server(server, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(server.config_path.read_text() + f'\n[server]\nurl = "{server.base_url}"\n')
    cli("load", "tiny", "--url", server.base_url)
    res = cli("--config", str(cfg), "models", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["server"] == server.base_url
    (model,) = data["models"]
    assert (model["architecture"], model["quantization"], model["state"]) == (
        "llama",
        "F32",
        "loaded",
    )
    assert model["n_ctx"] == 512


def test_chat_streams_a_reply(server):
    res = cli(
        "chat",
        "tiny",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "--url",
        server.base_url,
        stdin="hello\n/exit\n",
    )
    assert res.returncode == 0, res.stderr
    assert "ai ›" in res.stdout
    assert "tokens in" in res.stdout


def test_chat_goes_on_past_the_context(server):
    """Six messages of ~200 tokens in a 512-token context: each is answered (the oldest
    turns are left out), none refused."""
    lines = [f"line {i}: " + "the cat sat on the mat " * 30 for i in range(6)]
    res = cli(
        "chat",
        "tiny",
        "--max-tokens",
        "4",
        "--url",
        server.base_url,
        stdin="\n".join(lines) + "\n/exit\n",
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("tokens in") == 6, res.stdout
    prompts = [int(n) for n in re.findall(r"\(prompt (\d+)\)", res.stdout)]
    assert max(prompts) < 512 and "context" not in res.stdout, res.stdout


def test_doctor_exit_codes(tiny_model_path, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'[[models]]\nname = "tiny"\npath = "{tiny_model_path}"\n')
    res = cli("--config", str(good), "doctor", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["model tiny"]["ok"] is True and "llama" in checks["model tiny"]["detail"]
    assert "GPU offload" in checks and "libcudart" in checks
    assert checks["hoshikage-core"]["detail"] == "0.1.0"
    assert {"api", "llamacpp"} <= {p.split(" ")[0] for p in checks["plugins"]["detail"].split(", ")}

    (tmp_path / "junk.gguf").write_text("not a model")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[[models]]\nname = "gone"\npath = "{tmp_path / "gone.gguf"}"\n'
        f'[[models]]\nname = "junk"\npath = "{tmp_path / "junk.gguf"}"\n'
    )
    res = cli("--config", str(bad), "doctor", "--json")
    assert res.returncode == 1
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert (
        checks["model gone"]["ok"] is False and "file not found" in checks["model gone"]["detail"]
    )
    assert (
        checks["model junk"]["ok"] is False and "not a GGUF file" in checks["model junk"]["detail"]
    )
    table = cli("--config", str(bad), "doctor")
    assert table.returncode == 1 and "2 problem(s) found" in table.stdout

    broken = tmp_path / "broken.toml"
    broken.write_text("[unload]\nmax_loaded = 0\n")
    res = cli("--config", str(broken), "doctor")
    assert res.returncode == 1 and "unload.max_loaded: must be > 0" in res.stdout


def test_config_errors_are_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[models]]\nname = "a"\npath = "/a.gguf"\nn_ctx = 0\n')
    res = cli("config", "check", str(cfg))
    assert res.returncode == 1
    assert "models[0].n_ctx: must be > 0" in res.stderr and "Traceback" not in res.stderr
    cfg.write_text('[[models]]\nname = "a"\npath = "/a.gguf"\nn_ctxx = 4096\n')
    res = cli("config", "check", str(cfg))
    assert "models[0].n_ctxx: unknown key" in res.stderr


def test_status_watch_renders_live_in_a_terminal(server):
    cli("load", "tiny", "--url", server.base_url)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI in a pseudo-terminal
        # A background job of a non-interactive shell inherits SIGINT ignored, and Python
        # then leaves it ignored: the SIGINT below would never stop the child.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ["COLUMNS"], os.environ["LINES"] = "160", "40"
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "hoshikage_core.cli",
                "status",
                "--watch",
                "--interval",
                "0.2",
                "--url",
                server.base_url,
            ],
        )
    output = b""
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline and output.count(b"tiny") < 3:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    break
        os.kill(pid, signal.SIGINT)
        status = _wait_child(pid, 15)
    finally:
        os.close(fd)
    text = output.decode("utf-8", errors="replace")
    assert text.count("tiny") >= 3, text  # redrawn several times
    assert "loaded" in text and "up " in text and "queued 0/" in text
    assert b"\x1b[" in output  # a live terminal view (cursor movement), not a plain dump
    assert os.WEXITSTATUS(status) == 0


def _wait_child(pid: int, timeout: float) -> int:
    """The child's wait status; it is killed (and the test fails) if it has not exited by
    then, rather than waiting forever."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child did not exit within {timeout}s of SIGINT")


def test_status_shows_the_prompts_kept_on_disk_after_an_unload(server):
    import httpx

    cli("load", "tiny", "--url", server.base_url)
    body = {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "the cat sat on the mat " * 20},
            {"role": "user", "content": "hello"},
        ],
        "max_tokens": 4,
        "temperature": 0,
    }
    httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60).raise_for_status()
    assert cli("unload", "tiny", "--url", server.base_url).returncode == 0
    deadline = time.monotonic() + 20
    model = {}
    while time.monotonic() < deadline:  # the states are written after the memory is freed
        model = json.loads(cli("status", "--json", "--url", server.base_url).stdout)["models"][0]
        if model["cached_prompts"]:
            break
        time.sleep(0.2)
    assert model["cached_prompts"] >= 1 and model["load_progress"] is None
    table = cli("status", "--url", server.base_url).stdout
    assert "on disk" in table
    row = next(line for line in table.splitlines() if "tiny" in line and "unloaded" in line)
    assert f" {model['cached_prompts']} " in row
