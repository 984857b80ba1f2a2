"""The documentation's config examples are real: each parses and validates against the
installed plugins (so backend options such as n_ctx and rpc_servers are checked too)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from hoshikage_core import config as config_mod
from hoshikage_core.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def toml_blocks():
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.S)):
            data = tomllib.loads(block)
            if data.keys() & {"server", "unload", "models"}:
                yield pytest.param(data, id=f"{doc.name}-{i}")


@pytest.mark.parametrize("data", list(toml_blocks()))
def test_config_examples_validate(data):
    pm = make_plugin_manager()
    if pm.hook.backend_options(backend="llamacpp") is None:
        pytest.skip("the llama.cpp backend is not installed")
    config_mod.structure(data, pm=pm)
