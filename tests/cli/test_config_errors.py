"""``hoshikage config check`` reports every error of a file in one run and exits 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")


def test_config_check_lists_every_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[server]\nport = "x"\n'
        '[[models]]\nname = "a"\npath = "/a.gguf"\nn_ctx = -5\nidle_ttl_typo = "5m"\n'
        '[[models]]\nname = "b"\npath = "/b.gguf"\nparallel = 0\n'
    )
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": "/nonexistent"}
    res = subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", "config", "check", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    for line in (
        "server.port: expected an integer",
        "models[0].n_ctx: must be > 0",
        "models[0].idle_ttl_typo: unknown key",
        "models[1].parallel: must be between 1 and 256",
    ):
        assert line in res.stderr, res.stderr
