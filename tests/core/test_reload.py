"""Config reload in the core (``Runtime.reload``), driven by the deterministic fake backend:
what is added, removed and changed, that no request in flight is dropped, and that a bad
config is refused as a whole. The server-level tests (CLI, ``POST /api/reload``, SIGHUP, the
real llama.cpp backend) are in ``tests/api/test_reload.py``."""

from __future__ import annotations

import asyncio

import pytest
from hoshikage_core.cli.server_commands import render_status
from hoshikage_core.errors import ConfigError, ModelNotFound
from hoshikage_core.hookspecs import hookimpl
from rich.console import Console

from hoshikage_core import config as config_mod
from tests.core.test_scheduler import REQ, run, state, wait_for


def fake_models(**models) -> list[dict]:
    return [
        {"name": n, "path": f"/fake/{n}.gguf", "backend": "fake", **o} for n, o in models.items()
    ]


def reload_to(rt, **sections):
    """Make ``rt``'s next reload read ``sections`` instead of a file."""
    rt.load_config = lambda: config_mod.structure(sections, pm=rt.pm)


class Unloads:
    def __init__(self):
        self.reasons: list[tuple[str, str]] = []

    @hookimpl
    def model_unloaded(self, name, reason, seconds):
        self.reasons.append((name, reason))


async def test_added_removed_and_changed_models(make_runtime, fake):
    rt = await make_runtime(
        {"keep": {}, "gone": {}, "edit": {"tokens": 3}}, unload={"max_loaded": 3}
    )
    reload_to(rt, unload={"max_loaded": 3}, models=fake_models(keep={}, edit={"tokens": 6}, new={}))
    result = await rt.reload()
    assert (result.added, result.removed, result.changed) == (["new"], ["gone"], ["edit"])
    assert result.needs_restart == []
    with pytest.raises(ModelNotFound):
        rt.resolve("gone")
    assert [c.completion_tokens for c in await run(rt, "new") if c.finish_reason] == [5]
    assert [c.completion_tokens for c in await run(rt, "edit") if c.finish_reason] == [6]
    assert [m["name"] for m in rt.status()["models"]] == ["keep", "edit", "new"]
    await rt.stop()


async def test_a_changed_model_finishes_its_request_then_loads_again_with_the_new_options(
    make_runtime, fake
):
    unloads = Unloads()
    rt = await make_runtime({"a": {"tokens": 4}}, server={"concurrency": 4})
    rt.pm.register(unloads)
    gate = fake.rec.gate("a")
    gate.clear()
    first = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    reload_to(rt, server={"concurrency": 4}, models=fake_models(a={"tokens": 7, "parallel": 2}))
    result = await rt.reload()
    assert result.changed == ["a"]
    status = rt.status()["models"][0]
    assert status["reload_pending"] and status["state"] == "busy"
    console = Console(record=True, width=200)
    console.print(render_status(rt.status()))
    assert "busy (reload pending)" in console.export_text()
    second = asyncio.create_task(run(rt, "a"))  # waits: the old instance admits no new request
    await asyncio.sleep(0.05)
    assert rt.scheduler.snapshot().queued == 1 and fake.rec.active["a"] == 1
    gate.set()
    old, new = await asyncio.gather(first, second)
    assert [c.completion_tokens for c in old if c.finish_reason] == [4]  # finished as it began
    assert [c.completion_tokens for c in new if c.finish_reason] == [7]
    assert fake.rec.loads["a"] == 2 and ("a", "reload") in unloads.reasons
    assert rt.pool.capacity("a") == 2
    assert not rt.status()["models"][0]["reload_pending"]
    await rt.stop()


async def test_a_loaded_idle_model_that_changed_loads_again_at_once(make_runtime, fake):
    unloads = Unloads()
    rt = await make_runtime({"a": {}, "b": {}})
    rt.pm.register(unloads)
    await run(rt, "a")
    reload_to(rt, models=fake_models(a={"parallel": 3}, b={"parallel": 2}))
    assert (await rt.reload()).changed == ["a", "b"]
    await wait_for(lambda: fake.rec.loads["a"] == 2 and state(rt, "a") == "loaded")
    assert unloads.reasons == [("a", "reload")] and rt.pool.capacity("a") == 3
    assert "b" not in fake.rec.loads  # not loaded before: it just takes its new options
    await rt.stop()


async def test_a_removed_model_answers_not_found_at_once_and_unloads_after_its_request(
    make_runtime, fake
):
    unloads = Unloads()
    rt = await make_runtime({"a": {}, "b": {}}, server={"concurrency": 4}, unload={"max_loaded": 2})
    rt.pm.register(unloads)
    gate = fake.rec.gate("b")
    gate.clear()
    running = asyncio.create_task(run(rt, "b"))
    await wait_for(lambda: fake.rec.active.get("b") == 1)
    reload_to(rt, server={"concurrency": 4}, unload={"max_loaded": 2}, models=fake_models(a={}))
    assert (await rt.reload()).removed == ["b"]
    with pytest.raises(ModelNotFound):
        await run(rt, "b")
    # Still serving its last request: listed as draining until it has gone (issue 21).
    assert {m["name"]: m["state"] for m in rt.status()["models"]}["b"] == "draining"
    gate.set()
    chunks = await running
    assert chunks[-1].finish_reason == "length"  # the request in flight finished
    await wait_for(lambda: ("b", "removed") in unloads.reasons)
    await wait_for(lambda: "b" not in rt.pool.names())
    await rt.stop()


async def test_requests_queued_for_a_removed_model_are_still_served(make_runtime, fake):
    rt = await make_runtime({"a": {}, "b": {}}, server={"concurrency": 1}, unload={"max_loaded": 2})
    gate = fake.rec.gate("a")
    gate.clear()
    holder = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    queued = asyncio.create_task(run(rt, "b"))
    await wait_for(lambda: rt.scheduler.snapshot().queued == 1)
    reload_to(rt, server={"concurrency": 1}, unload={"max_loaded": 2}, models=fake_models(a={}))
    await rt.reload()
    gate.set()
    await holder
    assert (await queued)[-1].finish_reason == "length"
    await wait_for(lambda: "b" not in rt.pool.names())
    await rt.stop()


async def test_alias_and_idle_ttl_changes_apply_without_a_new_load(make_runtime, fake):
    rt = await make_runtime({"a": {}})
    await run(rt, "a")
    reload_to(rt, models=fake_models(a={"aliases": ["first"], "idle_ttl": -1}))
    result = await rt.reload()
    assert result.changed == [] and result.added == []
    await run(rt, "first")
    assert fake.rec.loads == {"a": 1}
    assert rt.status()["models"][0]["unload_in_seconds"] == -1.0
    await rt.stop()


async def test_a_broken_config_is_refused_whole_and_the_old_one_keeps_serving(make_runtime, fake):
    rt = await make_runtime({"a": {}})
    reload_to(
        rt, server={"port": -1, "concurrency": 0}, models=fake_models(a={}, b={"tokens": "x"})
    )
    with pytest.raises(ConfigError) as caught:
        await rt.reload()
    assert caught.value.problems == [
        "server.port: must be between 0 and 65535",
        "server.concurrency: must be > 0",
        "models[1].tokens: expected an integer, got str 'x'",
    ]
    assert [e.name for e in rt.registry] == ["a"]
    assert (await run(rt, "a"))[-1].finish_reason == "length"
    await rt.stop()


async def test_server_keys_live_and_needing_a_restart(make_runtime, fake):
    rt = await make_runtime({"a": {}}, server={"concurrency": 1, "port": 8000})
    reload_to(
        rt,
        server={"concurrency": 3, "max_queue": 5, "port": 9000, "api_key": "k"},
        models=fake_models(a={}),
    )
    result = await rt.reload()
    assert result.needs_restart == ["server.port", "server.api_key"]
    assert (rt.config.server.port, rt.config.server.api_key) == (8000, "")  # kept until a restart
    assert (rt.scheduler.concurrency, rt.scheduler.max_queue) == (3, 5)
    await rt.stop()


async def test_plugins_register_models_again_on_reload(make_runtime, fake):
    from hoshikage_core.registry import ModelEntry

    class Contributor:
        calls = 0

        @hookimpl
        def register_models(self, register, config):
            Contributor.calls += 1
            register(
                ModelEntry(
                    name=f"plugin-{Contributor.calls}",
                    path="/fake/p.gguf",
                    backend="fake",
                    options={},
                )
            )

    rt = await make_runtime({"a": {}})
    rt.pm.register(Contributor())
    reload_to(rt, models=fake_models(a={}))
    result = await rt.reload()
    assert result.added == ["plugin-1"]
    assert (await run(rt, "plugin-1"))[-1].finish_reason == "length"
    result = await rt.reload()
    assert (result.added, result.removed) == (["plugin-2"], ["plugin-1"])
    await rt.stop()


async def test_concurrent_reloads_run_one_at_a_time(make_runtime, fake):
    rt = await make_runtime({"a": {}})
    reload_to(rt, models=fake_models(a={}, b={}))
    first, second = await asyncio.gather(rt.reload(), rt.reload())
    assert first.added == ["b"] and second.added == []
    assert REQ.prompt and (await run(rt, "b"))[-1].finish_reason == "length"
    await rt.stop()
