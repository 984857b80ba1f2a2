"""The Responses store is bounded by bytes as well as entries, lives in SQLite on disk (the
server's memory does not grow with it), survives a restart and a kill -9 mid-write, and the
free strings it would keep and echo (``user``, ``safety_identifier``, item ids) are capped."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import server_rss
from tests.support.server import running_server

pytestmark = pytest.mark.timeout(300)


def _config(tiny_model_path, **server):
    return {
        "server": server,
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }


def _create(client: httpx.Client, **fields) -> httpx.Response:
    return client.post(
        "/v1/responses", json={"model": "tiny", "input": "hi", "max_output_tokens": 1, **fields}
    )


def test_a_megabyte_per_response_does_not_grow_the_server(tiny_model_path):
    """300 responses that each keep 1 MB (a JSON schema's description, echoed in
    ``text.format``): the store keeps what fits in ``responses_store_bytes``, oldest evicted
    first, on disk; the server's RSS barely moves (it grew by 257 MB when the store was a
    dict in memory)."""
    schema = {"type": "string", "description": "d" * 1_000_000}
    fmt = {"format": {"type": "json_schema", "name": "big", "schema": schema}}
    config = _config(tiny_model_path, max_schema_bytes="2MiB", responses_store_bytes="32MiB")
    with running_server(config) as server:
        client = httpx.Client(base_url=server.base_url, timeout=60)
        assert _create(client).status_code == 200  # the model is loaded, the store open
        before = server_rss(server.process.pid)
        ids = []
        for _ in range(300):
            r = _create(client, text=fmt)
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        after = server_rss(server.process.pid)
        print(f"RSS after 300 x 1 MB stored responses: {before >> 20} -> {after >> 20} MB")
        assert after - before < 100 * 2**20
        data = Path(server.log_path).parent / "data" / "hoshikage"
        db = sum(f.stat().st_size for f in data.glob("responses.sqlite3*"))
        assert db < 80 * 2**20, db  # 32 MiB of entries, plus the WAL's pages
        assert client.get(f"/v1/responses/{ids[-1]}").status_code == 200
        assert client.get(f"/v1/responses/{ids[0]}").status_code == 404  # evicted first
        kept = sum(client.get(f"/v1/responses/{i}").status_code == 200 for i in ids[-40:])
        assert 25 <= kept <= 34, kept  # 32 MiB of 1 MB entries


def test_free_strings_that_are_stored_are_capped(tiny_model_path):
    with running_server(_config(tiny_model_path)) as server:
        client = httpx.Client(base_url=server.base_url, timeout=60)
        for field in ("user", "safety_identifier"):
            r = _create(client, **{field: "u" * 1_000_000})
            assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
        item = {"type": "message", "role": "user", "content": "hi", "id": "m" * 1_000_000}
        r = _create(client, input=[item])
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"].startswith("input[0]")
        assert _create(client, user="someone").status_code == 200


def test_the_store_survives_a_restart_and_kill_9_mid_write(tiny_model_path):
    with tempfile.TemporaryDirectory() as home:
        env = {"XDG_DATA_HOME": home}
        config = _config(tiny_model_path, responses_store=100_000)
        committed: list[str] = []
        with running_server(config, env=env) as server:
            client = httpx.Client(base_url=server.base_url, timeout=30)
            first = _create(client).json()["id"]
            committed.append(first)
            stop = threading.Event()

            def writer():
                with httpx.Client(base_url=server.base_url, timeout=30) as c:
                    while not stop.is_set():
                        try:
                            r = _create(c, input="hello " * 20)
                        except httpx.HTTPError:
                            return
                        if r.status_code == 200:
                            committed.append(r.json()["id"])

            threads = [threading.Thread(target=writer) for _ in range(3)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while len(committed) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(server.process.pid, signal.SIGKILL)  # in the middle of the writes
            server.process.wait(10)
            stop.set()
            for t in threads:
                t.join(30)
        assert len(committed) > 10
        with running_server(config, env=env) as server:
            client = httpx.Client(base_url=server.base_url, timeout=30)
            missing = [i for i in committed if client.get(f"/v1/responses/{i}").status_code != 200]
            assert not missing, f"{len(missing)} of {len(committed)} committed responses lost"
            r = _create(client, previous_response_id=first)
            assert r.status_code == 200, r.text
