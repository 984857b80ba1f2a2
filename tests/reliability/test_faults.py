"""Faults: broken model files, failed loads, SIGTERM mid-generation, real idle unload."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time

import httpx
import pytest

from tests.reliability.conftest import server_rss, tree_rss
from tests.support.server import running_server

pytestmark = pytest.mark.timeout(120)


def chat(server, model, **extra):
    body = {
        "model": model,
        "max_tokens": 4,
        "temperature": 0,
        "messages": [{"role": "user", "content": "hello"}],
        **extra,
    }
    return httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)


def state(server, name):
    models = json.loads(server.get("/api/status")[1])["models"]
    return next(m for m in models if m["name"] == name)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_damaged_model_file_fails_clearly_and_others_keep_serving(
    tiny_model_path, tmp_path, damage
):
    fragile = tmp_path / "fragile.gguf"
    shutil.copy(tiny_model_path, fragile)
    config = {
        "unload": {"max_loaded": 1},
        "models": [
            {"name": "fragile", "path": str(fragile), "n_ctx": 256},
            {"name": "steady", "path": str(tiny_model_path), "n_ctx": 256},
        ],
    }
    with running_server(config) as server:
        assert chat(server, "fragile").status_code == 200
        assert chat(server, "steady").status_code == 200  # evicts fragile (max_loaded 1)
        assert state(server, "fragile")["state"] == "unloaded"
        if damage == "deleted":
            fragile.unlink()
        else:
            data = fragile.read_bytes()
            fragile.write_bytes(data[: len(data) // 2])
        r = chat(server, "fragile")
        assert r.status_code == 500
        error = r.json()["error"]
        assert error["code"] == "model_load_failed"
        assert str(fragile) in error["message"]
        assert ("file not found" if damage == "deleted" else "truncated") in error["message"]
        s = state(server, "fragile")
        assert s["state"] == "failed" and str(fragile) in s["last_error"]  # not left "loading"
        assert s["failed_at"] and s["retry_in_seconds"] == 0  # one failure: no backoff
        assert chat(server, "steady").status_code == 200
        assert server.get("/health")[0] == 200
        # Repaired, it loads again.
        shutil.copy(tiny_model_path, fragile)
        assert chat(server, "fragile").status_code == 200


def test_sigterm_mid_batch_ends_every_stream_and_exits(tiny_model_path):
    """Four streams decoded together in one batch (parallel 4), then SIGTERM."""
    config = {
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 8192, "parallel": 4}]
    }
    with running_server(config) as server:
        seen: list[list[str]] = [[] for _ in range(4)]
        ended = [threading.Event() for _ in range(4)]

        def stream(i: int):
            body = {
                "model": "tiny",
                "prompt": f"the cat {i}",
                "max_tokens": 8000,
                "stream": True,
                "logit_bias": {"2": -100},
            }
            try:
                with httpx.stream(
                    "POST", server.base_url + "/v1/completions", json=body, timeout=30
                ) as r:
                    for line in r.iter_lines():
                        seen[i].append(line)
            except httpx.HTTPError as exc:
                seen[i].append(f"transport error: {exc!r}")
            ended[i].set()

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while min(len(lines) for lines in seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert min(len(lines) for lines in seen) >= 5
        assert json.loads(server.get("/api/status")[1])["models"][0]["running_sequences"] == 4
        took = server.terminate(timeout=10)
        assert took < 5, f"exit took {took:.1f}s"
        assert server.process.returncode is not None
        for i in range(4):
            assert ended[i].wait(5), f"client {i} hung after the server exited"
        for t in threads:
            t.join(5)


@pytest.mark.gemma
def test_idle_unload_for_real_gives_memory_back(gemma_model_path):
    config = {
        "unload": {"idle_ttl": 2, "max_loaded": 2},
        "models": [
            {"name": "g", "path": str(gemma_model_path), "n_ctx": 1024},
            {"name": "kept", "path": str(gemma_model_path), "n_ctx": 1024},
        ],
    }
    with running_server(config) as server:
        pid = server.process.pid
        r = chat(server, "g")
        assert r.status_code == 200
        finished = time.monotonic()
        loaded_rss = tree_rss(pid)  # the model runs in a process of its own
        assert state(server, "g")["state"] == "loaded"
        while state(server, "g")["state"] != "unloaded" and time.monotonic() - finished < 5:
            time.sleep(0.05)
        unloaded_after = time.monotonic() - finished
        assert unloaded_after <= 3.0, f"unloaded after {unloaded_after:.2f}s"
        time.sleep(0.3)
        after_rss = tree_rss(pid)
        model_bytes = state(server, "g")["file_bytes"]
        assert loaded_rss - after_rss > 0.8 * model_bytes, (loaded_rss, after_rss, model_bytes)

        assert chat(server, "kept", keep_alive=-1).status_code == 200
        time.sleep(3.5)
        kept = state(server, "kept")
        assert kept["state"] == "loaded" and kept["unload_in_seconds"] == -1


def _context_switches(pid: int) -> dict[str, int]:
    counts = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                counts[task] = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except OSError:
            pass
    return counts


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_idle_means_idle(tiny_model_path):
    """Nothing loaded until asked; no thread of an idle server wakes more than once a second;
    after an unload the resident set is back near where it was before the load (what stays
    is within 5 MB: the model ran in a process of its own, which took llama.cpp with it)."""
    config = {"models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 512}]}
    with running_server(config) as server:
        pid = server.process.pid
        assert state(server, "tiny")["state"] == "unloaded"
        time.sleep(1.0)
        before = _context_switches(pid)
        time.sleep(4.0)
        after = _context_switches(pid)
        busiest = max((after[t] - n) / 4.0 for t, n in before.items() if t in after)
        assert busiest <= 1.5, (before, after)
        baseline = server_rss(pid)
        assert chat(server, "tiny").status_code == 200
        httpx.post(server.base_url + "/api/models/tiny/unload", timeout=30).raise_for_status()
        time.sleep(0.5)
        assert server_rss(pid) - baseline < 5 * 2**20, server_rss(pid) - baseline
        assert state(server, "tiny")["state"] == "unloaded"
