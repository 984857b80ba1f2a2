"""Reload without restart, on a real ``hoshikage serve`` with the tiny model, through each of
the three ways: ``POST /api/reload``, ``hoshikage reload`` and SIGHUP.

While a long stream runs on one model, the config is rewritten: that model's options change,
one model is removed and one added. The stream finishes; the removed model answers 404 at
once; the added one serves at once; the changed one loads again with its new options when
next used. Then a config with two errors is refused as a whole, both errors reported, and the
running config keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.server import running_server, to_toml

pytestmark = pytest.mark.timeout(180)

BROKEN = """
[unload]
idle_ttl_typo = 5

[[models]]
name = "keep"
path = "{path}"
n_ctx = -5
"""
BROKEN_PROBLEMS = ["unload.idle_ttl_typo: unknown key", "models[0].n_ctx: must be > 0"]


def configs(path) -> tuple[dict, dict]:
    before = {
        "server": {"concurrency": 4},
        "unload": {"max_loaded": 3},
        "models": [
            {"name": "keep", "path": str(path), "n_ctx": 4096, "parallel": 4},
            {"name": "gone", "path": str(path), "n_ctx": 256},
        ],
    }
    after = {
        "server": {"concurrency": 4},
        "unload": {"max_loaded": 3},
        "models": [
            {"name": "keep", "path": str(path), "n_ctx": 4096, "parallel": 2},
            {"name": "added", "path": str(path), "n_ctx": 256},
        ],
    }
    return before, after


def cli(server, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hoshikage_core.cli",
            "--config",
            str(server.config_path),
            "reload",
            "--url",
            server.base_url,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


async def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def reload(
    way: str, server, client: httpx.AsyncClient, expect_models: list[str]
) -> dict | None:
    """Reload through ``way``; the answer (None for SIGHUP, which answers in the log)."""
    if way == "api":
        r = await client.post("/api/reload")
        assert r.status_code == 200, r.text
        return r.json()
    if way == "cli":
        done = await asyncio.to_thread(cli, server, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    server.process.send_signal(signal.SIGHUP)
    await wait_for(
        lambda: [m["name"] for m in server.status()["models"]] == expect_models, "the SIGHUP reload"
    )
    return None


async def refused(way: str, server, client: httpx.AsyncClient) -> None:
    """Reload a broken config through ``way``; every error is reported."""
    if way == "api":
        r = await client.post("/api/reload")
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "config_error" and error["type"] == "invalid_request_error"
        assert error["problems"] == BROKEN_PROBLEMS
        assert all(p in error["message"] for p in BROKEN_PROBLEMS)
    elif way == "cli":
        done = await asyncio.to_thread(cli, server)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "reload refused" in done.stderr
        assert all(p in done.stderr for p in BROKEN_PROBLEMS), done.stderr
        as_json = await asyncio.to_thread(cli, server, "--json")
        assert as_json.returncode == 1 and json.loads(as_json.stdout) == {
            "ok": False,
            "problems": BROKEN_PROBLEMS,
        }
    else:
        server.process.send_signal(signal.SIGHUP)
        await wait_for(lambda: "reload refused" in server.log(), "the refusal in the log")
        await wait_for(
            lambda: all(p in server.log() for p in BROKEN_PROBLEMS), "every error in the log"
        )


@pytest.mark.parametrize("way", ["api", "cli", "sighup"])
async def test_reload_while_a_stream_runs(way, tiny_model_path):
    before, after = configs(tiny_model_path)
    with running_server(before) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            warm = await client.post(
                "/v1/completions", json={"model": "gone", "prompt": "hi", "max_tokens": 2}
            )
            assert warm.status_code == 200
            body = {
                "model": "keep",
                "prompt": "the cat",
                "max_tokens": 4000,
                "stream": True,
                "logit_bias": {"2": -100},
            }  # no end of text: it runs all 4000 tokens
            async with client.stream("POST", "/v1/completions", json=body) as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                first = await anext(lines)
                assert first.startswith("data: ")
                server.config_path.write_text(to_toml(after))
                answer = await reload(way, server, client, ["keep", "added"])
                if answer is not None:
                    assert (answer["added"], answer["removed"], answer["changed"]) == (
                        ["added"],
                        ["gone"],
                        ["keep"],
                    )
                    assert answer["needs_restart"] == [] and answer["models"] == ["keep", "added"]
                    assert answer["source"] == str(server.config_path)
                keep = server.status()["models"][0]
                assert (
                    keep["name"] == "keep" and keep["state"] == "busy" and keep["reload_pending"]
                ), keep

                # the removed model is gone at once
                gone = await client.post(
                    "/v1/completions", json={"model": "gone", "prompt": "hi", "max_tokens": 2}
                )
                assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
                # the added one serves at once, beside the stream
                added = await client.post(
                    "/v1/completions", json={"model": "added", "prompt": "hi", "max_tokens": 4}
                )
                assert (
                    added.status_code == 200
                    and added.json()["choices"][0]["finish_reason"] == "length"
                )
                assert server.status()["models"][0]["state"] == "busy"  # the stream still runs

                rest = [line async for line in lines]
            events = [line[6:] for line in [first, *rest] if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert [
                c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
            ] == ["length"]
            assert not [c for c in chunks if "error" in c]

            # the changed model loads again with its new options (parallel 2) when next used
            again = await client.post(
                "/v1/completions", json={"model": "keep", "prompt": "hi", "max_tokens": 2}
            )
            assert again.status_code == 200
            keep = server.status()["models"][0]
            assert (keep["slots"], keep["reload_pending"]) == (2, False), keep
            metrics = (await client.get("/metrics")).text
            assert 'hoshikage_model_unloads_total{model="gone",reason="removed"} 1.0' in metrics
            assert 'hoshikage_model_unloads_total{model="keep",reason="reload"} 1.0' in metrics

            # a config with errors is refused whole; the running one keeps serving
            server.config_path.write_text(BROKEN.format(path=tiny_model_path))
            await refused(way, server, client)
            assert [m["name"] for m in server.status()["models"]] == ["keep", "added"]
            for name in ("keep", "added"):
                r = await client.post(
                    "/v1/completions", json={"model": name, "prompt": "hi", "max_tokens": 2}
                )
                assert r.status_code == 200
        assert server.process.poll() is None  # up all along


async def test_reload_reports_keys_that_need_a_restart(tiny_model_path):
    config = {
        "server": {"max_tokens": 100},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with running_server(config) as server:
        changed = {
            "server": {"max_tokens": 3, "api_key": "new-key", "max_body_size": "1MB"},
            "models": config["models"],
        }
        server.config_path.write_text(to_toml(changed))
        done = await asyncio.to_thread(cli, server)
        assert done.returncode == 0, done.stderr
        assert "needs a restart: server.api_key, server.max_body_size" in done.stdout
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            # the key waits for a restart; the new [server].max_tokens applies at once
            r = await client.post(
                "/v1/completions", json={"model": "tiny", "prompt": "hi", "logit_bias": {"2": -100}}
            )
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        assert "need a restart: server.api_key, server.max_body_size" in server.log()


async def test_reload_route_is_behind_the_api_key_and_takes_no_input(tiny_model_path):
    config = {
        "server": {"api_key": "k"},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with running_server(config) as server:
        auth = {"Authorization": "Bearer k"}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            r = await client.post("/api/reload")
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            r = await client.post("/api/reload", headers=auth)
            assert r.status_code == 200 and r.json()["models"] == ["tiny"]
            assert r.json()["added"] == r.json()["removed"] == r.json()["changed"] == []
            r = await client.post(
                "/api/reload",
                headers={**auth, "Content-Type": "application/json"},
                content=b"\xff{",
            )  # a body is ignored
            assert r.status_code == 200
            # ... but one not declared JSON, from a browser, is what a web page's form sends:
            # refused (guard.py); from another client it is ignored too
            r = await client.post(
                "/api/reload",
                headers={**auth, "Origin": server.base_url},
                content=b"\xff{not json",
            )
            assert r.status_code == 415
            r = await client.post("/api/reload", headers=auth, content=b"\xff{not json")
            assert r.status_code == 200
            r = await client.get("/api/reload", headers=auth)
            assert r.status_code == 405
            # the file is gone: refused, and the running config stays
            server.config_path.unlink()
            r = await client.post("/api/reload", headers=auth)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["problems"] == [f"Config file not found: {server.config_path}"]
            r = await client.post(
                "/v1/completions",
                headers=auth,
                json={"model": "tiny", "prompt": "hi", "max_tokens": 2},
            )
            assert r.status_code == 200


def test_cli_reload_with_a_broken_config_and_no_url_reports_every_error(tmp_path, tiny_model_path):
    """The server's address comes from the very file that is broken: the CLI reports its
    errors itself, and says how to reach the server anyway."""
    path = tmp_path / "config.toml"
    path.write_text(BROKEN.format(path=tiny_model_path))
    done = subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", "--config", str(path), "reload"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 1
    assert "reload refused" in done.stderr and all(p in done.stderr for p in BROKEN_PROBLEMS), (
        done.stderr
    )
    assert "--url" in done.stderr


async def test_a_removed_model_still_serving_shows_as_draining_until_it_unloads(tiny_model_path):
    """A reload removes a model in the middle of its stream: ``/api/status`` keeps showing it,
    as ``draining``, until the stream has ended and it has unloaded (it used to vanish)."""
    before, after = configs(tiny_model_path)
    before["models"][1]["n_ctx"] = 4096
    with running_server(before) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            body = {
                "model": "gone",
                "prompt": "the cat",
                "max_tokens": 400,
                "stream": True,
                "logit_bias": {"2": -100},
            }
            async with client.stream("POST", "/v1/completions", json=body) as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("data: ")
                server.config_path.write_text(to_toml(after))
                answer = await reload("api", server, client, ["keep", "added"])
                assert answer["removed"] == ["gone"]
                gone = [m for m in server.status()["models"] if m["name"] == "gone"]
                assert len(gone) == 1 and gone[0]["state"] == "draining", gone
                assert gone[0]["in_use"] == 1 and gone[0]["running_sequences"] == 1
                rest = [line async for line in lines]
            assert rest[-1] == "data: [DONE]" or "data: [DONE]" in rest
            await wait_for(
                lambda: all(m["name"] != "gone" for m in server.status()["models"]),
                "the drained model to go",
            )
