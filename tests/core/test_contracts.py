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


async def test_status_never_waits_for_the_disk_count_of_cached_prompts(make_runtime):
    """``cached_prompts`` may touch a slow disk: status shows the last count, taken on a
    worker thread, and answers at once even while the hook is stuck."""
    import asyncio
    import threading
    import time

    from hoshikage_core.hookspecs import hookimpl

    release = threading.Event()
    callers: list[str] = []

    class SlowDisk:
        @hookimpl
        def cached_prompts(self, entry, config):
            callers.append(threading.current_thread().name)
            release.wait(10)
            return 3

    rt = await make_runtime({"a": {}})
    rt.pm.register(SlowDisk(), name="slow-disk")
    try:
        started = time.monotonic()
        first = rt.status()["models"][0]["cached_prompts"]
        assert time.monotonic() - started < 0.5 and first == 0
        await asyncio.sleep(0.1)
        assert rt.status()["models"][0]["cached_prompts"] == 0  # still counting: not waited for
        release.set()
        deadline = time.monotonic() + 5
        while rt.status()["models"][0]["cached_prompts"] != 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert rt.status()["models"][0]["cached_prompts"] == 3
        assert callers and all(name.startswith("hoshikage-worker") for name in callers)
        assert threading.current_thread().name not in callers
    finally:
        release.set()
        await rt.stop()
