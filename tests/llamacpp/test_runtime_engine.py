"""The core's runtime over the real llama.cpp backend (tiny model, in process): the scheduler
holds a model to its capacity, and the engine's chunks reach the event loop with one wake
per step, without a thread per request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("llama_cpp")

from hoshikage_core.plugins import make_plugin_manager  # noqa: E402
from hoshikage_core.protocol import GenerationRequest  # noqa: E402
from hoshikage_core.runtime import Runtime  # noqa: E402

from hoshikage_core import config as config_mod  # noqa: E402
from hoshikage_llamacpp import plugin  # noqa: E402
from tests.support.messages import output_messages  # noqa: E402

EOS = 2


async def runtime_for(
    tiny_model_path, parallel: int, concurrency: int = 8, isolation: str = "process"
) -> Runtime:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="llamacpp")
    model = {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 4096, "parallel": parallel}
    data = {
        "server": {"concurrency": concurrency, "max_queue": 16},
        "models": [{**model, "isolation": isolation}],
    }
    rt = Runtime(config_mod.structure(data, pm=pm), pm)
    await rt.start()
    return rt


async def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_the_scheduler_holds_a_real_model_to_its_slots(tiny_model_path):
    rt = await runtime_for(tiny_model_path, parallel=2)
    endless = GenerationRequest(prompt="the cat", max_tokens=100_000, logit_bias={EOS: -100})
    try:
        await rt.load("tiny")

        async def one():
            async with rt.session("tiny") as s:
                return [chunk async for _i, chunk in s.stream(endless)][-1]

        tasks = [asyncio.create_task(one()) for _ in range(5)]
        # three wait in the queue, and the two admitted are really decoding (the engine may
        # take a step to start them)
        await wait_for(
            lambda: (
                rt.scheduler.snapshot().queued == 3
                and rt.status()["models"][0]["running_sequences"] == 2
            )
        )
        (model,) = rt.status()["models"]
        assert (rt.scheduler.snapshot().running, model["slots"], model["running_sequences"]) == (
            2,
            2,
            2,
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await wait_for(lambda: rt.scheduler.snapshot().running == 0)
        assert rt.status()["models"][0]["running_sequences"] == 0
    finally:
        await rt.stop()


async def test_one_loop_wake_per_step_and_no_thread_per_request(tiny_model_path):
    # In the server process, where the engine's steps can be counted (a model process
    # delivers the same one message per step, through its reader thread).
    rt = await runtime_for(tiny_model_path, parallel=4, isolation="none")
    try:
        await rt.load("tiny")
        engine = rt.pool.loaded_model("tiny")._engine
        threads_before = threading.active_count()

        async def one(i: int):
            request = GenerationRequest(
                prompt=f"the cat {i}", max_tokens=200, temperature=0, logit_bias={EOS: -100}
            )
            async with rt.session("tiny") as s:
                return [chunk async for _i, chunk in s.stream(request)]

        wakes, steps = rt.waker.wakes, engine.steps
        results = await asyncio.gather(*(one(i) for i in range(4)))
        assert all(r[-1].completion_tokens == 200 for r in results)
        woke, stepped = rt.waker.wakes - wakes, engine.steps - steps
        assert woke <= stepped + 8, (woke, stepped)
        # n = 4: four choices in lockstep, so every step carries four chunks, one wake
        request = GenerationRequest(
            prompt="the cat", max_tokens=200, temperature=1.0, seed=1, logit_bias={EOS: -100}
        )
        wakes, steps = rt.waker.wakes, engine.steps
        async with rt.session("tiny", sequences=4) as s:
            items = [item async for item in s.stream(request, 4)]
        woke, stepped = rt.waker.wakes - wakes, engine.steps - steps
        assert len(items) > 3 * stepped, (len(items), stepped)
        assert woke <= stepped + 2, (woke, stepped)
        # the runtime's bounded worker pool may have grown; nothing per request
        assert threading.active_count() <= threads_before + 8
    finally:
        await rt.stop()


async def test_a_model_process_is_read_on_the_loop_with_no_thread_and_no_wake_per_step(
    tiny_model_path,
):
    """The default (``isolation = "process"``): the event loop reads the model process's
    socket itself, delivers each step's chunks and schedules their readers there. No reader
    thread exists, and no step writes to the loop's self-pipe (``call_soon_threadsafe``):
    a token costs the server the socket's own wake-up only."""
    rt = await runtime_for(tiny_model_path, parallel=4)
    loop = asyncio.get_running_loop()
    calls = []
    try:
        await rt.load("tiny")
        assert not [t for t in threading.enumerate() if t.name.startswith("hoshikage-proxy")]
        threadsafe = loop.call_soon_threadsafe

        def counted(*args, **kwargs):
            calls.append(args[0])
            return threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = counted
        request = GenerationRequest(
            prompt="the cat", max_tokens=200, temperature=0, logit_bias={EOS: -100}
        )
        async with rt.session("tiny") as s:
            chunks = [chunk async for _i, chunk in s.stream(request)]
        assert chunks[-1].completion_tokens == 200
        # the submission's way to its worker thread and back, not one per step
        assert len(calls) <= 8, calls
    finally:
        loop.__dict__.pop("call_soon_threadsafe", None)
        await rt.stop()


async def test_a_request_not_streamed_comes_from_its_model_process_in_a_few_messages(
    tiny_model_path,
):
    """An answer given whole (``stream = False``, as the API's ``collect`` asks): the model
    process sends its first step's chunks at once and the rest with its end, not a message
    a step; every chunk arrives, the same as when streamed."""
    rt = await runtime_for(tiny_model_path, parallel=4)
    try:
        await rt.load("tiny")
        messages = output_messages(rt.pool.loaded_model("tiny"))

        async def run(stream: bool):
            request = GenerationRequest(
                prompt="the cat",
                max_tokens=200,
                temperature=0,
                logit_bias={EOS: -100},
                logprobs=True,
                stream=stream,
            )
            messages.clear()
            async with rt.session("tiny") as s:
                chunks = [chunk async for _i, chunk in s.stream(request)]
            return chunks, list(messages)

        def seen(chunks):  # the second run reads its prompt from the cache
            return [
                (c.text, c.finish_reason, c.completion_tokens, [t.token for t in c.logprobs or ()])
                for c in chunks
            ]

        streamed, per_step = await run(True)
        whole, few = await run(False)
        assert seen(whole) == seen(streamed)
        assert whole[-1].completion_tokens == 200
        assert len(per_step) > 30, per_step  # a message a step (drafts make steps of several)
        # the first step's, then the rest (a model this small decodes 200 tokens well
        # within the hold), plus at most a few on a loaded machine
        assert few[0] == 1 and sum(few) == len(whole) and len(few) <= 6, few
    finally:
        await rt.stop()
