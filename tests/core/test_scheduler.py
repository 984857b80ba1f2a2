"""Scheduler, pool and unload semantics, driven by the deterministic fake backend."""

from __future__ import annotations

import asyncio
import time

import pytest
from hoshikage_core.errors import Cancelled, ModelLoadError, ModelNotFound, QueueFull
from hoshikage_core.hookspecs import hookimpl
from hoshikage_core.protocol import GenerationRequest

REQ = GenerationRequest(prompt="hello world")


async def run(rt, model, *, keep_alive=None, request=REQ, order=None):
    async with rt.session(model, endpoint="test", keep_alive=keep_alive) as s:
        if order is not None:
            order.append(model)
        chunks = [c async for c in s.generate(request)]
    return chunks


async def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def state(rt, name):
    return rt.pool.state(name)


async def test_concurrency_one_runs_one_generation_at_a_time(make_runtime, fake):
    rt = await make_runtime({"a": {"token_delay": 0.005}})
    await asyncio.gather(*(run(rt, "a") for _ in range(4)))
    assert fake.rec.max_active["a"] == 1
    assert fake.rec.loads == {"a": 1}
    await rt.stop()


async def test_concurrency_two_runs_two_models_at_once(make_runtime, fake):
    rt = await make_runtime({"a": {}, "b": {}}, server={"concurrency": 2}, unload={"max_loaded": 2})
    gate_a, gate_b = fake.rec.gate("a"), fake.rec.gate("b")
    gate_a.clear()
    gate_b.clear()
    tasks = [asyncio.create_task(run(rt, m)) for m in ("a", "b", "a")]
    await wait_for(lambda: fake.rec.active.get("a") == 1 and fake.rec.active.get("b") == 1)
    snap = rt.scheduler.snapshot()
    assert (snap.running, snap.queued) == (2, 1)
    gate_a.set()
    gate_b.set()
    await asyncio.gather(*tasks)
    assert rt.scheduler.snapshot().running == 0
    await rt.stop()


async def test_full_queue_is_refused_at_once(make_runtime, fake):
    rt = await make_runtime({"a": {}}, server={"max_queue": 1})
    fake.rec.gate("a").clear()
    running = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    waiting = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: rt.scheduler.snapshot().queued == 1)
    started = time.monotonic()
    with pytest.raises(QueueFull) as info:
        await run(rt, "a")
    assert time.monotonic() - started < 0.1
    assert info.value.retry_after >= 1
    assert "1 requests are already waiting" in str(info.value)
    fake.rec.gate("a").set()
    await asyncio.gather(running, waiting)
    await rt.stop()


async def test_cancelled_waiter_leaves_the_queue(make_runtime, fake):
    rt = await make_runtime({"a": {}}, server={"max_queue": 1})
    fake.rec.gate("a").clear()
    running = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    waiting = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: rt.scheduler.snapshot().queued == 1)
    waiting.cancel()
    await wait_for(lambda: rt.scheduler.snapshot().queued == 0)
    # The freed queue place is usable again.
    again = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: rt.scheduler.snapshot().queued == 1)
    fake.rec.gate("a").set()
    await asyncio.gather(running, again)
    assert fake.rec.events.count(("start", "a")) == 2
    assert rt.scheduler.snapshot().running == 0
    assert rt.pool.view("a").in_use == 0
    await rt.stop()


async def test_cancelled_running_request_stops_at_next_token_and_frees_its_slot(make_runtime, fake):
    rt = await make_runtime({"a": {"tokens": 10_000, "token_delay": 0.001}})
    seen = []

    async def consume():
        async with rt.session("a") as s:
            async for chunk in s.generate(REQ):
                seen.append(chunk)

    task = asyncio.create_task(consume())
    await wait_for(lambda: len(seen) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The backend saw the cancel and stopped; the slot is free only after that.
    assert fake.rec.active["a"] == 0
    assert fake.rec.events[-1] == ("end", "a")
    assert rt.scheduler.snapshot().running == 0
    assert rt.pool.view("a").in_use == 0
    chunks = await run(rt, "a", request=GenerationRequest(prompt="x", max_tokens=2))
    assert chunks[-1].completion_tokens == 2
    await rt.stop()


async def test_concurrent_requests_load_an_unloaded_model_once(make_runtime, fake):
    rt = await make_runtime({"a": {"load_delay": 0.2}}, server={"concurrency": 4})
    await asyncio.gather(*(run(rt, "a") for _ in range(6)))
    assert fake.rec.loads == {"a": 1}
    await rt.stop()


async def test_affinity_serves_loaded_model_first(make_runtime, fake):
    rt = await make_runtime({"a": {}, "b": {}, "c": {}})
    await run(rt, "a")  # a is loaded
    gate = fake.rec.gate("a")
    gate.clear()
    order: list[str] = []
    first = asyncio.create_task(run(rt, "a", order=order))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    queued = []
    for name in ("b", "a", "c"):
        queued.append(asyncio.create_task(run(rt, name, order=order)))
        await asyncio.sleep(0.01)
    await wait_for(lambda: rt.scheduler.snapshot().queued == 3)
    gate.set()
    await asyncio.gather(first, *queued)
    assert order == ["a", "a", "b", "c"]
    loads = [name for kind, name in fake.rec.events if kind == "load"]
    assert loads == ["a", "b", "c"]  # no swap back and forth
    await rt.stop()


async def test_affinity_does_not_starve_other_models(make_runtime, fake):
    rt = await make_runtime(
        {"a": {"token_delay": 0.01, "tokens": 3}, "b": {}},
        server={"affinity_wait": 0.3, "max_queue": 64},
    )
    await run(rt, "a")
    stop = time.monotonic() + 2.0

    async def flood():
        # Keep a request for the loaded model always waiting.
        while time.monotonic() < stop:
            await run(rt, "a")

    floods = [asyncio.create_task(flood()) for _ in range(3)]
    await asyncio.sleep(0.05)
    asked = time.monotonic()
    await run(rt, "b")
    waited = time.monotonic() - asked
    for f in floods:
        f.cancel()
    await asyncio.gather(*floods, return_exceptions=True)
    assert waited < 1.0, f"b waited {waited:.2f}s behind a flood of a"
    await rt.stop()


async def test_idle_model_unloads_after_ttl(make_runtime, fake):
    rt = await make_runtime({"a": {}}, unload={"idle_ttl": 0.3})
    await run(rt, "a")
    assert state(rt, "a") == "loaded"
    finished = time.monotonic()
    await wait_for(lambda: state(rt, "a") == "unloaded", timeout=2)
    assert time.monotonic() - finished >= 0.25
    assert ("unload", "a") in fake.rec.events
    await rt.stop()


async def test_keep_alive_overrides_ttl(make_runtime, fake):
    rt = await make_runtime({"a": {}, "b": {}}, unload={"idle_ttl": 0.2, "max_loaded": 2})
    await run(rt, "a", keep_alive=-1)
    await run(rt, "b", keep_alive=0)
    await wait_for(lambda: state(rt, "b") == "unloaded", timeout=1)
    await asyncio.sleep(0.4)
    assert state(rt, "a") == "loaded"  # -1: never
    status = {m["name"]: m for m in rt.status()["models"]}
    assert status["a"]["unload_in_seconds"] == -1
    # A later request without keep_alive returns to the configured TTL.
    await run(rt, "a")
    await wait_for(lambda: state(rt, "a") == "unloaded", timeout=1)
    await rt.stop()


async def test_lru_idle_model_is_evicted_to_make_room(make_runtime, fake):
    rt = await make_runtime({"a": {}, "b": {}, "c": {}}, unload={"max_loaded": 2})
    await run(rt, "a")
    await run(rt, "b")
    await run(rt, "a")  # b is now the least recently used
    await run(rt, "c")
    assert (state(rt, "a"), state(rt, "b"), state(rt, "c")) == ("loaded", "unloaded", "loaded")
    assert fake.rec.max_loaded_at_once == 2
    await rt.stop()


async def test_memory_budget_evicts_lru(make_runtime, fake, tmp_path):
    models = {}
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(b"\0" * 1000)  # the size estimate before load
        models[name] = {"memory": 1000, "path": str(path)}
    rt = await make_runtime(models, unload={"max_loaded": 3, "max_memory": 2500})
    await run(rt, "a")
    await run(rt, "b")
    await run(rt, "a")
    await run(rt, "c")  # 3 x 1000 > 2500: the LRU one (b) makes room
    assert (state(rt, "a"), state(rt, "b"), state(rt, "c")) == ("loaded", "unloaded", "loaded")
    await rt.stop()


async def test_busy_model_is_never_evicted(make_runtime, fake):
    rt = await make_runtime({"a": {}, "b": {}}, server={"concurrency": 2})
    gate = fake.rec.gate("a")
    gate.clear()
    a = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    b = asyncio.create_task(run(rt, "b"))
    await asyncio.sleep(0.2)
    # b would need a's place, and a is busy: b waits, a stays.
    assert state(rt, "a") == "busy"
    assert state(rt, "b") == "unloaded"
    assert rt.scheduler.snapshot().queued == 1
    gate.set()
    await asyncio.gather(a, b)
    assert fake.rec.events.index(("end", "a")) < fake.rec.events.index(("unload", "a"))
    assert fake.rec.events.index(("unload", "a")) < fake.rec.events.index(("load", "b"))
    assert fake.rec.max_loaded_at_once == 1
    await rt.stop()


async def test_loading_model_is_never_evicted(make_runtime, fake):
    rt = await make_runtime({"a": {"load_delay": 0.3}, "b": {}}, server={"concurrency": 2})
    a = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: state(rt, "a") == "loading")
    b = asyncio.create_task(run(rt, "b"))
    await asyncio.sleep(0.1)
    assert state(rt, "a") == "loading"
    await asyncio.gather(a, b)
    events = fake.rec.events
    assert events.index(("end", "a")) < events.index(("load", "b"))
    assert fake.rec.max_loaded_at_once == 1
    await rt.stop()


async def test_failed_load_is_reported_and_not_left_loading(make_runtime, fake):
    failures = []

    class Events:
        @hookimpl
        def model_load_failed(self, name, error):
            failures.append((name, error))

    rt = await make_runtime(
        {"bad": {"fail_load": True, "load_delay": 0.1}, "good": {}}, server={"concurrency": 3}
    )
    rt.pm.register(Events())
    results = await asyncio.gather(*(run(rt, "bad") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ModelLoadError) for r in results)
    assert "not a GGUF file" in str(results[0]) and "/fake/bad.gguf" in str(results[0])
    assert fake.rec.loads["bad"] == 1  # single flight, failure shared
    assert len(failures) == 1 and failures[0][0] == "bad"
    assert state(rt, "bad") == "failed"
    assert "not a GGUF file" in rt.pool.view("bad").last_error
    assert rt.scheduler.snapshot().running == 0
    # Other models keep serving.
    chunks = await run(rt, "good")
    assert chunks[-1].finish_reason
    await rt.stop()


async def test_unknown_model_lists_known_names(make_runtime):
    rt = await make_runtime({"alpha": {"aliases": ["default"]}, "beta": {}})
    with pytest.raises(ModelNotFound) as info:
        await run(rt, "gamma")
    message = str(info.value)
    assert (
        "'gamma'" in message and "alpha" in message and "beta" in message and "default" in message
    )
    assert (await run(rt, "default"))[-1].finish_reason  # alias resolves
    await rt.stop()


async def test_events_fire_once_per_load_unload_and_request(make_runtime):
    calls = []

    class Events:
        @hookimpl
        def model_loaded(self, name, seconds, memory_bytes):
            calls.append(("loaded", name, memory_bytes))

        @hookimpl
        def model_unloaded(self, name, reason, seconds):
            calls.append(("unloaded", name, reason))

        @hookimpl
        def request_finished(self, record):
            calls.append(
                (
                    "finished",
                    record.model,
                    record.status,
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.ttft is not None,
                )
            )

    rt = await make_runtime({"a": {"memory": 1234, "tokens": 3}})
    rt.pm.register(Events())
    await run(rt, "a")
    await rt.unload("a")
    assert calls == [
        ("loaded", "a", 1234),
        ("finished", "a", "ok", 2, 3, True),
        ("unloaded", "a", "request"),
    ]
    await rt.stop()


async def test_plugin_policy_overrides_builtin(make_runtime, fake):
    class NeverUnload:
        @hookimpl
        def choose_unload(self, state, now, config):
            return []

    rt = await make_runtime({"a": {}}, unload={"idle_ttl": 0.1})
    rt.pm.register(NeverUnload())
    await run(rt, "a")
    await asyncio.sleep(0.4)
    assert state(rt, "a") == "loaded"
    await rt.stop()


async def test_policy_cannot_unload_a_busy_model(make_runtime, fake):
    class UnloadEverything:
        @hookimpl
        def choose_unload(self, state, now, config):
            return [m.name for m in state.models]

    rt = await make_runtime({"a": {"tokens": 5, "token_delay": 0.05}}, unload={"idle_ttl": 60})
    rt.pm.register(UnloadEverything())
    chunks = await run(rt, "a")  # the reaper runs on every change while a is busy
    assert chunks[-1].completion_tokens == 5
    await wait_for(lambda: state(rt, "a") == "unloaded")
    assert fake.rec.events.index(("end", "a")) < fake.rec.events.index(("unload", "a"))
    await rt.stop()


async def test_admin_unload_of_busy_model_waits_for_it(make_runtime, fake):
    rt = await make_runtime({"a": {}})
    gate = fake.rec.gate("a")
    gate.clear()
    task = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    assert await rt.unload("a") == "scheduled"
    assert state(rt, "a") == "busy"
    gate.set()
    await task
    await wait_for(lambda: state(rt, "a") == "unloaded", timeout=1)
    assert await rt.unload("a") == "not_loaded"
    await rt.stop()


async def test_load_returns_its_duration_and_preload(make_runtime, fake):
    rt = await make_runtime(
        {"a": {"load_delay": 0.1}, "b": {"preload": True}}, unload={"max_loaded": 2}
    )
    await wait_for(lambda: state(rt, "b") == "loaded")
    took = await rt.load("a")
    assert took >= 0.1
    assert await rt.load("a") == 0.0
    await rt.stop()


async def test_stop_cancels_running_generation_and_unloads(make_runtime, fake):
    rt = await make_runtime(
        {"a": {"tokens": 100_000, "token_delay": 0.001}}, server={"shutdown_grace": 0.2}
    )
    task = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a") == 1)
    started = time.monotonic()
    await rt.stop()
    assert time.monotonic() - started < 2
    # The session knows why its generation ended: the shutdown, named in the error.
    with pytest.raises(Cancelled, match="server is shutting down"):
        await task
    assert state(rt, "a") == "unloaded"
    assert fake.rec.loaded == set()


# ---- per-model capacity (the backend's parallel slots) ---------------------------------------


async def test_a_model_runs_up_to_its_capacity_and_the_rest_wait(make_runtime, fake):
    rt = await make_runtime({"a": {"parallel": 2}}, server={"concurrency": 8})
    await run(rt, "a")  # loaded: its capacity is known
    gate = fake.rec.gate("a")
    gate.clear()
    tasks = [asyncio.create_task(run(rt, "a")) for _ in range(5)]
    await wait_for(lambda: fake.rec.active.get("a") == 2 and rt.scheduler.snapshot().queued == 3)
    snap = rt.scheduler.snapshot()
    assert (snap.running, snap.sequences, snap.queued) == (2, 2, 3)
    status = rt.status()["models"][0]
    assert (status["slots"], status["running_sequences"]) == (2, 2)  # admitted = really decoding
    gate.set()
    await asyncio.gather(*tasks)
    assert fake.rec.max_active["a"] == 2
    await rt.stop()


async def test_concurrency_bounds_sequences_over_all_models(make_runtime, fake):
    rt = await make_runtime(
        {"a": {"parallel": 4}, "b": {"parallel": 4}},
        server={"concurrency": 3},
        unload={"max_loaded": 2},
    )
    await asyncio.gather(run(rt, "a"), run(rt, "b"))
    fake.rec.gate("a").clear()
    fake.rec.gate("b").clear()
    tasks = [asyncio.create_task(run(rt, m)) for m in ("a", "a", "b", "b")]
    await wait_for(
        lambda: rt.scheduler.snapshot().sequences == 3 and rt.scheduler.snapshot().queued == 1
    )
    fake.rec.gate("a").set()
    fake.rec.gate("b").set()
    await asyncio.gather(*tasks)
    await rt.stop()


async def test_n_choices_hold_n_sequences_and_keep_their_place(make_runtime, fake):
    rt = await make_runtime({"a": {"parallel": 4}}, server={"concurrency": 4})
    await run(rt, "a")
    gate = fake.rec.gate("a")
    gate.clear()
    order: list[str] = []

    async def choices(n: int, tag: str):
        async with rt.session("a", sequences=n) as s:
            order.append(tag)
            return [item async for item in s.stream(REQ, n)]

    single = asyncio.create_task(choices(1, "single"))
    await wait_for(lambda: rt.scheduler.snapshot().sequences == 1)
    wide = asyncio.create_task(choices(4, "wide"))  # needs all four: waits
    await wait_for(lambda: rt.scheduler.snapshot().queued == 1)
    late = asyncio.create_task(choices(1, "late"))  # would fit now, but must not overtake
    await wait_for(lambda: rt.scheduler.snapshot().queued == 2)
    assert rt.scheduler.snapshot().sequences == 1
    gate.set()
    results = await asyncio.gather(single, wide, late)
    assert order == ["single", "wide", "late"]
    wide_items = results[1]
    assert sorted({index for index, _chunk in wide_items}) == [0, 1, 2, 3]
    assert rt.scheduler.snapshot().sequences == 0
    await rt.stop()


async def test_requests_queued_behind_a_failing_load_share_its_error(make_runtime, fake):
    rt = await make_runtime(
        {"bad": {"fail_load": True, "load_delay": 0.2, "parallel": 4}}, server={"concurrency": 4}
    )
    results = await asyncio.gather(*(run(rt, "bad") for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, ModelLoadError) for r in results), results
    assert fake.rec.loads["bad"] == 1
    await rt.stop()


async def test_a_model_that_fails_on_its_own_is_unloaded_and_loads_again(make_runtime, fake):
    from hoshikage_core.errors import ModelFailed

    rt = await make_runtime(
        {"a": {"tokens": 10_000, "token_delay": 0.005}, "b": {}}, server={"concurrency": 2}
    )
    running = asyncio.create_task(run(rt, "a"))
    await wait_for(lambda: fake.rec.active.get("a"))
    model = rt.pool.loaded_model("a")
    # From another thread, as a backend's reader thread would.
    await asyncio.to_thread(model.die, ModelFailed("a", "its process was killed by SIGKILL"))
    with pytest.raises(ModelFailed, match="SIGKILL"):
        await running
    await wait_for(lambda: state(rt, "a") == "failed")
    assert "SIGKILL" in rt.pool.view("a").last_error and model.closed
    assert rt.pool.view("a").failed_at and rt.pool.view("a").retry_in == 0  # once: no backoff
    assert (await run(rt, "b"))[-1].finish_reason  # the others keep serving
    chunks = await run(rt, "a", request=GenerationRequest(prompt="hi", max_tokens=2))
    assert chunks[-1].finish_reason == "length" and fake.rec.loads["a"] == 2
    assert state(rt, "a") == "loaded" and rt.pool.view("a").last_error is None
    model.die(ModelFailed("a", "late news from the old process"))  # stale: ignored
    await asyncio.sleep(0.05)
    assert state(rt, "a") == "loaded"
    await rt.stop()


async def test_a_model_that_keeps_crashing_is_not_loaded_again_before_a_backoff(
    make_runtime, fake, monkeypatch
):
    """One crash: the next request tries at once. Two in a row: no load before the backoff;
    a request meanwhile gets the last error and the wait (no crash loop). A refusal such as
    a missing file is no crash: it is tried again at once, every time."""
    from hoshikage_core import pool as pool_mod

    rt = await make_runtime({"bad": {"crash_load": True}, "missing": {"fail_load": True}})
    for attempt in (1, 2):
        with pytest.raises(ModelLoadError, match="SIGSEGV"):
            await run(rt, "bad")
        assert fake.rec.loads["bad"] == attempt
    view = rt.pool.view("bad")
    assert view.state == "failed" and 1.0 < view.retry_in <= pool_mod.backoff(2)
    with pytest.raises(ModelLoadError, match=r"crashed 2 times in a row; it is tried again in"):
        await run(rt, "bad")
    assert fake.rec.loads["bad"] == 2  # refused without a load
    real = time.monotonic  # the backoff passes: every clock reading moves 3 s on
    monkeypatch.setattr(time, "monotonic", lambda: real() + 3.0)
    with pytest.raises(ModelLoadError, match="SIGSEGV"):
        await run(rt, "bad")
    assert fake.rec.loads["bad"] == 3
    for attempt in (1, 2, 3):
        with pytest.raises(ModelLoadError, match="not a GGUF file"):
            await run(rt, "missing")
        assert fake.rec.loads["missing"] == attempt and rt.pool.view("missing").retry_in == 0
    assert pool_mod.backoff(1) == 0 and pool_mod.backoff(3) == 4 and pool_mod.backoff(30) == 300
    await rt.stop()
