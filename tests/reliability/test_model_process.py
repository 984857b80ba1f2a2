"""Never down: each model runs in a process of its own, and a native crash there (a real
signal: SIGSEGV, SIGABRT) ends only that model's requests, in each API's own error shape.
The server stays up, the other models keep serving, and the next request loads it again.

Crashes come from real signals: ``os.kill`` on the model's process, or the child's test-only
fault hook (``HOSHIKAGE_FAULT``, see hoshikage_llamacpp.lifecycle.child), which kills it at a chosen
point with a real signal. The clients are the official SDKs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import anthropic
import httpx
import ollama
import openai
import psutil
import pytest

from tests.support.server import running_server, wait_for

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.platform != "linux", reason="model processes and /proc"),
]

LONG = 4000  # tokens: a stream that is still running when its process is killed


def _config(tiny_model_path, tmp_path, **server):
    # Two files, so the two models' processes differ in more than their names.
    other = tmp_path / "other.gguf"
    shutil.copy(tiny_model_path, other)
    return {
        "server": {"concurrency": 4, **server},
        "unload": {"max_loaded": 2},
        "models": [
            {"name": "fragile", "path": str(tiny_model_path), "n_ctx": 8192, "parallel": 1},
            {"name": "steady", "path": str(other), "n_ctx": 512},
        ],
    }


def _verdicts(tmp_path) -> dict[str, str]:
    """A safe-mode verdict file of the test's own: a crash injected here must not send the
    run's other loads of the same kind of weights to safe mode."""
    return {"HOSHIKAGE_VERDICTS": str(tmp_path / "verdicts.json")}


def _model_process(server, name: str) -> psutil.Process:
    """The process running model ``name``: ``/api/status`` gives its ``pid``, a child of the
    server's running the model process's module."""
    pid = _status(server, name)["pid"]
    assert pid, f"no process for {name}"
    child = psutil.Process(pid)
    assert child.ppid() == server.process.pid
    assert "hoshikage_llamacpp.lifecycle.child" in child.cmdline()
    return child


def _status(server, name):
    return next(m for m in server.status()["models"] if m["name"] == name)


def _still_serving(server) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="steady", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert server.get("/health")[0] == 200


def test_sigsegv_mid_stream_ends_that_stream_and_nothing_else(tiny_model_path, tmp_path):
    """The done-when of the "never down" issue, with a real SIGSEGV sent to the model's
    process mid-stream: the stream ends with model_failed naming the signal; the server and
    the other model stay up; status shows the model failed, with the time; the next request
    to it is served by a new process."""
    config = _config(tiny_model_path, tmp_path)
    with running_server(config, env=_verdicts(tmp_path)) as server:
        _still_serving(server)  # steady is loaded and stays loaded
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        stream = client.completions.create(
            model="fragile",
            prompt="Once upon a time",
            max_tokens=LONG,
            temperature=0,
            stream=True,
            extra_body={"speculative": False},
        )
        received = 0
        with pytest.raises(openai.APIError) as caught:
            for _chunk in stream:
                received += 1
                if received == 3:
                    os.kill(_model_process(server, "fragile").pid, signal.SIGSEGV)
        assert received >= 3
        message = str(caught.value)
        assert "Model 'fragile' failed" in message and "SIGSEGV" in message, message
        _still_serving(server)
        status = server.model_status("fragile", lambda m: m["state"] == "failed")
        assert "SIGSEGV" in status["last_error"] and "CPU:" in status["last_error"]
        assert status["failed_at"].endswith("+00:00")
        reply = client.completions.create(model="fragile", prompt="hi", max_tokens=4)
        assert reply.choices[0].text is not None
        assert _status(server, "fragile")["state"] == "loaded"
        assert _status(server, "steady")["state"] == "loaded"


def _openai_stream(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError) as caught:
        for _ in client.chat.completions.create(
            model="fragile",
            max_tokens=LONG,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": "tell a story"}],
            extra_body={"speculative": False},
        ):
            pass
    return str(caught.value)


def _anthropic_stream(server):
    client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIError) as caught:
        with client.messages.stream(
            model="fragile",
            max_tokens=LONG,
            messages=[{"role": "user", "content": "tell a story"}],
        ) as stream:
            for _ in stream:
                pass
    return str(caught.value)


def _ollama_stream(server):
    client = ollama.Client(host=server.base_url)
    with pytest.raises(ollama.ResponseError) as caught:
        for _ in client.chat(
            model="fragile",
            messages=[{"role": "user", "content": "tell a story"}],
            stream=True,
            options={"num_predict": LONG, "temperature": 0, "speculative": False},
        ):
            pass
    return caught.value.error


@pytest.mark.parametrize("point", ["stream", "decode"])
@pytest.mark.parametrize("fault", ["SIGSEGV", "SIGABRT"])
@pytest.mark.parametrize("surface", ["openai", "anthropic", "ollama"])
def test_a_crash_reaches_each_client_in_its_own_shape(
    tiny_model_path, tmp_path, surface, fault, point
):
    """The model's process dies (fault hook: after output was sent, or in its first decode
    before any) on every load: each client sees its own error naming the signal; the other
    model keeps serving."""
    env = {"HOSHIKAGE_FAULT": f"fragile@{point}:{fault}", **_verdicts(tmp_path)}
    with running_server(_config(tiny_model_path, tmp_path), env=env) as server:
        _still_serving(server)
        message = {"openai": _openai_stream, "anthropic": _anthropic_stream}.get(
            surface, _ollama_stream
        )(server)
        assert "failed" in message and fault in message, message
        if point == "decode":  # it died again in safe mode: both are reported
            assert "in its first decode" in message and "in safe mode" in message, message
        _still_serving(server)
        server.model_status("fragile", lambda m: m["state"] == "failed")


def test_a_crash_with_the_extra_buffer_types_is_survived_in_safe_mode(tiny_model_path, tmp_path):
    """A first decode that crashes only while llama.cpp's extra buffer types are in use (as
    the AMX kernels do): the request is answered anyway, by the model loaded again in safe
    mode, and the verdict is remembered, so the next load goes straight to safe mode."""
    verdicts = tmp_path / "verdicts.json"
    env = {"HOSHIKAGE_FAULT": "fragile@decode:SIGSEGV:extra", "HOSHIKAGE_VERDICTS": str(verdicts)}
    with running_server(_config(tiny_model_path, tmp_path), env=env) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
        reply = client.messages.create(
            model="fragile", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.stop_reason in ("end_turn", "max_tokens")
        (entry,) = json.loads(verdicts.read_text()).values()
        assert entry["verdict"] == "crash" and "SIGSEGV" in entry["reason"]
        assert "in its first decode" in entry["reason"]
        assert _status(server, "fragile")["state"] == "loaded"
        pid = _model_process(server, "fragile").pid
        httpx.post(server.base_url + "/api/models/fragile/unload", timeout=30).raise_for_status()
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")
        # Loaded again: straight to safe mode (the fault would fire otherwise).
        reply = client.messages.create(
            model="fragile", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.stop_reason in ("end_turn", "max_tokens")
        assert "safe mode" in server.log()


def test_a_crash_while_warming_up_is_a_load_in_safe_mode(tiny_model_path, tmp_path):
    env = {"HOSHIKAGE_FAULT": "fragile@warmup:SIGSEGV:extra", **_verdicts(tmp_path)}
    with running_server(_config(tiny_model_path, tmp_path), env=env) as server:
        client = ollama.Client(host=server.base_url)
        reply = client.generate(model="fragile", prompt="hi", options={"num_predict": 4})
        assert reply.done
        assert "warming up" in server.log() and "safe mode" in server.log()


def test_a_model_that_always_crashes_is_failed_with_a_backoff(tiny_model_path, tmp_path):
    """Dying at every load, in safe mode too: each request is a clear model_load_failed; from
    the second failure in a row the model is not loaded again before a backoff (no crash
    loop, no fork storm)."""
    env = {"HOSHIKAGE_FAULT": "fragile@load:SIGABRT", **_verdicts(tmp_path)}
    with running_server(_config(tiny_model_path, tmp_path), env=env) as server:
        body = {"model": "fragile", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
        url = server.base_url + "/v1/chat/completions"
        first = httpx.post(url, json=body, timeout=60)
        assert first.status_code == 500, first.text
        error = first.json()["error"]
        assert error["code"] == "model_load_failed" and "SIGABRT" in error["message"]
        assert "in safe mode too" in error["message"]
        assert httpx.post(url, json=body, timeout=60).status_code == 500  # the second try
        status = _status(server, "fragile")
        assert status["state"] == "failed" and status["retry_in_seconds"] > 0
        third = httpx.post(url, json=body, timeout=60)
        assert third.status_code == 500
        assert "tried again in" in third.json()["error"]["message"]
        children = [
            c for c in psutil.Process(server.process.pid).children() if c.cmdline()[-1] == "fragile"
        ]
        assert not children  # none left behind, none started for the refused request
        _still_serving(server)


def test_the_server_process_never_maps_llama_cpp(tiny_model_path, tmp_path):
    """Models run in their own processes: the server never loads llama.cpp's libraries."""
    with running_server(_config(tiny_model_path, tmp_path)) as server:
        _still_serving(server)
        with open(f"/proc/{server.process.pid}/maps") as f:
            maps = f.read()
        assert "libllama" not in maps and "libggml" not in maps
        assert "libllama" in open(f"/proc/{_model_process(server, 'steady').pid}/maps").read()


def _maps(process: psutil.Process) -> str:
    with open(f"/proc/{process.pid}/maps") as f:
        return f.read()


def _model_processes(server) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server.process.pid).children():
        try:
            if "hoshikage_llamacpp.lifecycle.child" in child.cmdline():
                found.append(child)
        except psutil.Error:  # one that just exited
            pass
    return found


def test_a_switch_loads_the_next_model_in_a_process_started_ahead(tiny_model_path, tmp_path):
    """With ``max_loaded = 1`` each new model evicts the last. From the first eviction on, a
    spare model process is started beside each load, its imports done while nobody waits,
    and the next model loads there: the switch skips a process's start. It goes when the
    last model does, and dies with the server (a real SIGKILL)."""
    config = _config(tiny_model_path, tmp_path)
    config["unload"]["max_loaded"] = 1
    steady_file = config["models"][1]["path"]
    with running_server(config) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)

        def ask(model: str) -> None:
            reply = client.completions.create(model=model, prompt="hi", max_tokens=2)
            assert reply.choices[0].text is not None

        ask("fragile")
        (first,) = _model_processes(server)  # no switch yet: no spare
        ask("steady")  # evicts fragile: from now on a spare starts beside each load
        steady = _model_process(server, "steady")
        spare = wait_for(
            lambda: [p for p in _model_processes(server) if p.pid not in (first.pid, steady.pid)],
            timeout=30,
            what="a spare model process",
        )[0]
        wait_for(lambda: "libllama" in _maps(spare), timeout=60, what="the spare's imports")
        assert str(tiny_model_path) not in _maps(spare)

        ask("fragile")  # evicts steady; fragile loads in the spare
        assert _status(server, "fragile")["pid"] == spare.pid
        assert str(tiny_model_path) in _maps(spare)
        assert _status(server, "fragile")["state"] == "loaded"
        assert _status(server, "steady")["state"] == "unloaded"
        assert _status(server, "steady")["pid"] is None
        wait_for(lambda: not steady.is_running() or steady.status() == psutil.STATUS_ZOMBIE)
        assert all(steady_file not in _maps(p) for p in _model_processes(server))

        r = httpx.post(server.base_url + "/api/models/fragile/unload", timeout=60)
        assert r.json()["result"] == "unloaded", r.text
        wait_for(lambda: not _model_processes(server), timeout=30, what="no model process left")
        _still_serving(server)  # loads steady: no spare, as on a server that never switched
        (steady,) = _model_processes(server)

        ask("fragile")  # a switch again: a spare starts beside fragile's load
        processes = wait_for(
            lambda: (
                len(found := [p for p in _model_processes(server) if p.pid != steady.pid]) == 2
                and found
            ),
            timeout=30,
            what="fragile's process and a spare",
        )
        server.process.kill()  # no orphans: the spare dies with the server too
        server.process.wait(10)
        _, alive = psutil.wait_procs(processes, timeout=10)
        assert not alive


def test_files_changed_under_the_server_are_named_and_the_server_stays_up(
    tiny_model_path, tmp_path
):
    """A ``git pull`` over ``make serve``'s editable install (or ``pip install -U``) while a
    server runs: a model process started afterwards would import other code than the
    server's. Its load fails with a message that says so and what to do, in the API's own
    shape; the server stays up, and a model already loaded keeps serving. The server runs
    from a copy of the sources (first on ``PYTHONPATH``), and one file of the copy is
    changed, as an update changes it."""
    from pathlib import Path

    import hoshikage_api
    import hoshikage_core
    import hoshikage_llamacpp

    src = tmp_path / "src"
    for package in (hoshikage_core, hoshikage_llamacpp, hoshikage_api):
        root = Path(package.__file__).parent
        shutil.copytree(root, src / root.name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, **_verdicts(tmp_path), "PYTHONPATH": str(src)}
    with running_server(_config(tiny_model_path, tmp_path), env=env) as server:
        _still_serving(server)  # "steady" loads, from the sources as they were
        assert "hoshikage_llamacpp.lifecycle.child" in _model_process(server, "steady").cmdline()
        changed = src / "hoshikage_llamacpp" / "engine" / "__init__.py"
        changed.write_text(changed.read_text() + "\n# an update\n")

        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(
                model="fragile", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
            )
        error = failed.value.body
        assert error["code"] == "model_load_failed", error
        assert "files changed on the disk after this server started" in error["message"]
        assert "Restart the server" in error["message"]
        ollama_client = ollama.Client(host=server.base_url)
        with pytest.raises(ollama.ResponseError, match="Restart the server"):
            ollama_client.generate(model="fragile", prompt="hi", options={"num_predict": 2})
        _still_serving(server)  # the model loaded before the change goes on
        assert _status(server, "fragile")["state"] != "loaded"
