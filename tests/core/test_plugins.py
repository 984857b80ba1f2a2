"""The plugin framework: specs, docs, defaults registered like plugins, the CLI shell."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from hoshikage_core.plugins import make_plugin_manager

from hoshikage_core import hookspecs

ROOT = Path(__file__).resolve().parents[2]


def spec_names() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, hookspecs.PROJECT + "_spec")
    ]


def test_every_hook_is_documented():
    docs = (ROOT / "docs" / "plugin-hooks.md").read_text()
    headings = set(re.findall(r"^#{2,4} `(\w+)\(", docs, flags=re.M))
    missing = set(spec_names()) - headings
    assert not missing, f"hooks missing from docs/plugin-hooks.md: {sorted(missing)}"
    stale = headings - set(spec_names())
    assert not stale, f"docs/plugin-hooks.md documents hooks that do not exist: {sorted(stale)}"


def test_every_spec_has_a_docstring_and_signature_in_docs():
    docs = (ROOT / "docs" / "plugin-hooks.md").read_text()
    for name in spec_names():
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and fn.__doc__.strip(), name
        params = ", ".join(inspect.signature(fn).parameters)
        assert f"`{name}({params})`" in docs, f"signature of {name} differs in the docs"


def test_defaults_are_trylast_plugins():
    pm = make_plugin_manager(load_entry_points=False)
    for hook in ("create_scheduler", "choose_unload"):
        impls = getattr(pm.hook, hook).get_hookimpls()
        assert impls and all(i.trylast for i in impls if i.plugin_name == "hoshikage_core.defaults")


def run_cli(*args):
    """The core's CLI alone: no installed plugin is loaded."""
    env = {**os.environ, "HOSHIKAGE_LOAD_PLUGINS": "", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_help_does_not_import_backend_or_web_framework():
    code = textwrap.dedent("""
        import sys
        from hoshikage_core.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("llama_cpp", "litestar", "uvicorn", "numpy", "rich") if m in sys.modules]
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "usage: hoshikage" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_config_check_reports_ok_and_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[[models]]\nname = "m"\npath = "/nowhere/m.gguf"\n')
    ok = run_cli("config", "check", str(good), "--json")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["models"] == ["m"]
    assert any("file not found: /nowhere/m.gguf" in w for w in summary["warnings"])

    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nconcurrency = 0\n")
    res = run_cli("config", "check", str(bad))
    assert res.returncode == 1
    assert "server.concurrency: must be > 0" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unreadable_config_is_one_line_without_traceback(tmp_path):
    res = run_cli("--config", str(tmp_path / "missing.toml"), "models")
    assert res.returncode == 1
    assert "Config file not found" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("--debug", "--config", str(tmp_path / "missing.toml"), "models")
    assert "Traceback" in res.stderr


def test_models_lists_gguf_facts_without_a_server(tmp_path):
    from tests.core.gguf_writer import write_minimal_gguf

    path = tmp_path / "tiny.gguf"
    write_minimal_gguf(path, arch="llama", context_length=2048, file_type=15)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[server]\nport = 1\n[[models]]\nname = "tiny"\npath = "{path}"\naliases = ["t"]\n'
        f'[[models]]\nname = "junk"\npath = "{tmp_path / "junk.gguf"}"\n'
    )
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    res = run_cli("--config", str(cfg), "models", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["server"] is None
    tiny, junk = data["models"]
    assert (tiny["architecture"], tiny["quantization"], tiny["context_length"]) == (
        "llama",
        "Q4_K_M",
        2048,
    )
    assert tiny["aliases"] == ["t"] and tiny["file_bytes"] == path.stat().st_size
    assert "not a GGUF file" in junk["error"]
    table = run_cli("--config", str(cfg), "models")
    assert table.returncode == 0 and "tiny" in table.stdout and "Q4_K_M" in table.stdout
