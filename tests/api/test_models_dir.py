"""``models_dir`` on a real server: discovered models are listed by ``/v1/models``,
``hoshikage models`` and ``hoshikage doctor`` and serve like configured ones; projector files
and later shards are skipped; an explicit ``[[models]]`` entry wins; a reload rescans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest

from tests.support.server import running_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def models_folder(tmp_path, tiny_model_path):
    root = tmp_path / "models"
    for rel in (
        "Tiny-Chat.gguf",
        "pinned.gguf",
        "split/Big-00001-of-00002.gguf",
        "vision/mmproj-tiny-f16.gguf",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_model_path, root / rel)
    (root / "split" / "Big-00002-of-00002.gguf").write_bytes(b"GGUF the second shard's tensors")
    return root


def cli(server, *args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", "--config", str(server.config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_discovered_models_are_listed_and_serve(models_folder):
    config = {
        "models_dir": [{"path": str(models_folder), "n_ctx": 1024}],
        "models": [
            {"name": "pinned-model", "path": str(models_folder / "pinned.gguf"), "n_ctx": 512}
        ],
    }
    with running_server(config) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            assert listed == ["pinned-model", "big", "tiny-chat"]
            for name in ("tiny-chat", "big"):
                r = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": name,
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "hello"}],
                    },
                )
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
            r = await client.post(
                "/v1/completions", json={"model": "mmproj-tiny-f16", "prompt": "hi"}
            )
            assert r.status_code == 404

            models = cli(server, "models", "--json", "--url", server.base_url)
            assert models.returncode == 0, models.stderr
            rows = {r["name"]: r for r in json.loads(models.stdout)["models"]}
            assert list(rows) == ["pinned-model", "big", "tiny-chat"]
            assert (rows["tiny-chat"]["n_ctx"], rows["tiny-chat"]["source"]) == (1024, "models_dir")
            assert rows["big"]["state"] == "loaded" and rows["tiny-chat"]["architecture"] == "llama"
            assert rows["pinned-model"]["n_ctx"] == 512  # its own options, not the folder's
            doctor = cli(server, "doctor", "--json")
            checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
            assert all(checks[f"model {n}"]["ok"] for n in rows)
            assert any(
                c["name"] == "models_dir" and "pinned-model" in c["detail"] for c in checks.values()
            )
            check = cli(server, "config", "check")
            assert check.returncode == 0 and "2 found in models_dir" in check.stdout, check.stdout

            # a reload rescans the folder: a file added serves, a file deleted is gone
            shutil.copy(models_folder / "pinned.gguf", models_folder / "split" / "Newcomer.gguf")
            (models_folder / "Tiny-Chat.gguf").unlink()
            answer = (await client.post("/api/reload")).json()
            assert (answer["added"], answer["removed"], answer["changed"]) == (
                ["newcomer"],
                ["tiny-chat"],
                [],
            )
            r = await client.post(
                "/v1/completions", json={"model": "newcomer", "prompt": "hi", "max_tokens": 2}
            )
            assert r.status_code == 200
            r = await client.post(
                "/v1/completions", json={"model": "tiny-chat", "prompt": "hi", "max_tokens": 2}
            )
            assert r.status_code == 404


def test_a_missing_models_dir_is_reported_with_the_other_errors(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f'models_dir = "{tmp_path / "nowhere"}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"models_dir[0].path: no such folder: {tmp_path / 'nowhere'}" in done.stderr.replace(
        "\n", ""
    )


def test_a_models_dir_alone_replaces_the_embedded_demo_models(models_folder):
    """As with ``[[models]]``: the folder's models are served, not the embedded defaults."""
    from hoshikage_core.catalog import build_registry
    from hoshikage_core.plugins import make_plugin_manager

    from hoshikage_core import config as config_mod

    pm = make_plugin_manager()
    registry = build_registry(config_mod.structure({"models_dir": str(models_folder)}, pm=pm), pm)
    assert [e.name for e in registry] == ["pinned", "big", "tiny-chat"]
    assert {e.source for e in registry} == {"models_dir"}
    empty = models_folder / "empty"
    empty.mkdir()
    assert len(build_registry(config_mod.structure({"models_dir": str(empty)}, pm=pm), pm)) == 0
