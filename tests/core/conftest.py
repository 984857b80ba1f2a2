from __future__ import annotations

import pytest
from hoshikage_core.plugins import make_plugin_manager
from hoshikage_core.runtime import Runtime

from hoshikage_core import config as config_mod
from tests.core.fake_backend import FakeBackendPlugin


@pytest.fixture
def fake():
    return FakeBackendPlugin()


@pytest.fixture
def make_runtime(fake):
    """Build a Runtime over fake models: make_runtime(models={"a": {...opts}}, server=..., unload=...)."""
    runtimes = []

    async def build(models: dict[str, dict] | None = None, **sections) -> Runtime:
        pm = make_plugin_manager(load_entry_points=False)
        pm.register(fake, name="fake")
        data = {
            **sections,
            "models": [
                {"name": name, "path": f"/fake/{name}.gguf", "backend": "fake", **opts}
                for name, opts in (models or {"a": {}}).items()
            ],
        }
        rt = Runtime(config_mod.structure(data, pm=pm), pm)
        await rt.start()
        runtimes.append(rt)
        return rt

    yield build
    # Runtimes are stopped by the tests (they own the event loop).
