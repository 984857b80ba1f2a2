"""Fixtures for the API tests: a Litestar test client over a runtime on the real llama.cpp
backend with the tiny generated model."""

from __future__ import annotations

import copy

import pytest


def tiny_config(tiny_model_path, **server) -> dict:
    """Two entries on the tiny model: ``tiny`` (alias ``tiny-alias``) for generation and
    ``tiny-embed`` for embeddings."""
    return {
        "server": {"max_body_size": 256 * 1024, **server},
        "unload": {"max_loaded": 2},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "aliases": ["tiny-alias"], "n_ctx": 512},
            {"name": "tiny-embed", "path": str(tiny_model_path), "n_ctx": 512, "embedding": True},
        ],
    }


@pytest.fixture
def api_config(tiny_model_path) -> dict:
    return tiny_config(tiny_model_path)


@pytest.fixture
async def make_client(monkeypatch, tmp_path):
    """``await make_client(config_dict)``: an entered AsyncTestClient (lifespan running),
    with a Responses store of its own test's (``XDG_DATA_HOME``)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    from hoshikage_api.app import create_app
    from hoshikage_core.plugins import make_plugin_manager
    from hoshikage_core.runtime import Runtime
    from litestar.testing import AsyncTestClient

    from hoshikage_core import config as config_mod

    clients = []

    async def build(config: dict):
        pm = make_plugin_manager()
        runtime = Runtime(config_mod.structure(copy.deepcopy(config), pm=pm), pm)
        # localhost: a server without a key answers only its own host names (guard.py).
        client = AsyncTestClient(create_app(runtime), base_url="http://localhost", timeout=30)
        await client.__aenter__()
        clients.append(client)
        return client

    yield build
    for client in reversed(clients):
        await client.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client, api_config):
    return await make_client(api_config)
