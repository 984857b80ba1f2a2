"""The core's contracts hold for its own pieces: the built-in scheduler is a ``Scheduler``,
leases are ``Lease``s, and the registry is plain data that imports neither the folder scan
nor the catalog that composes them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hoshikage_core.protocol import Lease, Scheduler
from hoshikage_core.scheduler import FairScheduler

import hoshikage_core

CORE = Path(hoshikage_core.__file__).parent


def _imports(module: str) -> set[str]:
    tree = ast.parse((CORE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


async def test_the_built_in_scheduler_and_its_leases_meet_the_protocol(make_runtime):
    rt = await make_runtime({"a": {}})
    assert isinstance(rt.scheduler, FairScheduler)
    assert isinstance(rt.scheduler, Scheduler)
    lease = await rt.scheduler.acquire("a", 1)
    try:
        assert isinstance(lease, Lease) and lease.model == "a" and lease.sequences == 1
    finally:
        rt.scheduler.release(lease)
    assert lease.released


def test_registry_and_discovery_do_not_import_each_other():
    assert not {"discovery", "catalog"} & _imports("registry")
    assert "catalog" not in _imports("discovery")


async def test_status_readers_get_a_frozen_view_not_the_pools_record(make_runtime):
    import attrs

    rt = await make_runtime({"a": {}})
    view = rt.view("a")
    assert view.name == "a" and view.state == "unloaded" and not view.is_loaded
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        view.in_use = 5
    assert rt.view("a").in_use == 0
