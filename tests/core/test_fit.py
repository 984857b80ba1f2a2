"""What a model needs in memory from its GGUF header (``hoshikage_core.fit``): the plan
before a download and admission under ``max_memory`` before a load use it."""

from __future__ import annotations

import threading

import pytest
from hoshikage_core.fit import Shape
from hoshikage_core.gguf_info import read_info
from hoshikage_core.registry import ModelEntry

from tests.core.gguf_writer import write_minimal_gguf

#: 2 layers, 2 KV heads of 16: 2 × (16 × 2 + 16 × 2) = 128 bytes a layer, 256 a token (f16).
LLAMA = {
    "block_count": 2,
    "embedding_length": 64,
    "attention.head_count": 4,
    "attention.head_count_kv": 2,
}


def model(tmp_path, name="m", **kwargs):
    path = tmp_path / f"{name}.gguf"
    write_minimal_gguf(path, **kwargs)
    return path


def test_kv_cache_for_the_default_and_given_options(tmp_path):
    path = model(tmp_path, context_length=8192, meta=LLAMA)
    size = path.stat().st_size
    entry = ModelEntry(name="m", path=str(path))
    assert entry.expected_bytes() == size + 4 * 4096 * 256  # n_ctx 4096 in 4 slots
    small = ModelEntry(name="m", path=str(path), options={"n_ctx": 1024, "parallel": 1})
    assert small.expected_bytes() == size + 1024 * 256
    q8 = ModelEntry(name="m", path=str(path), options={"parallel": 1, "type_k": "q8_0"})
    assert q8.expected_bytes() == size + 4096 * 2 * 2 * (16 * 34 / 32 + 16 * 2)


def test_the_trained_context_caps_it_and_a_plain_file_is_its_size(tmp_path):
    path = model(tmp_path, context_length=1024, meta=LLAMA)
    entry = ModelEntry(name="m", path=str(path), options={"n_ctx": 4096, "parallel": 1})
    assert entry.expected_bytes() == path.stat().st_size + 1024 * 256
    other = tmp_path / "x.gguf"
    other.write_bytes(b"\0" * 1000)
    assert ModelEntry(name="x", path=str(other)).expected_bytes() == 1000
    assert ModelEntry(name="y", path=str(tmp_path / "none.gguf")).expected_bytes() is None


def test_sliding_window_layers_hold_only_their_window(tmp_path):
    gemma = {**LLAMA, "block_count": 12, "attention.sliding_window": 512}
    path = model(tmp_path, arch="gemma3", context_length=32768, meta=gemma)
    shape = Shape.of(read_info(path), {"n_ctx": 8192, "parallel": 1, "n_ubatch": 512})
    assert (shape.full_layers, shape.swa_layers) == (2, 10)  # every 6th layer is global
    assert shape.per_token == 2 * 128
    assert shape.kv_bytes(8192) == 128 * (2 * 8192 + 10 * (512 + 512))
    full = Shape.of(read_info(path), {"n_ctx": 8192, "parallel": 1, "swa_full": True})
    assert full.kv_bytes(8192) == 128 * 12 * 8192


def test_largest_context_fits_the_room(tmp_path):
    shape = Shape.of(read_info(model(tmp_path, context_length=8192, meta=LLAMA)), {"parallel": 2})
    assert shape.largest_context(2 * 256 * 1000) == 768  # 1000 tokens a slot, down to 256s
    assert shape.largest_context(10**12) == 8192  # the trained context
    assert shape.largest_context(100) == 0


@pytest.mark.asyncio
async def test_a_load_reads_the_header_off_the_event_loop_once(make_runtime, monkeypatch, tmp_path):
    """The pool's look at an incoming model's size reads its GGUF header (a large
    vocabulary takes tens of ms to skip): on a worker thread, once per file."""
    from hoshikage_core.gguf_info import _parse

    from tests.core.test_scheduler import run

    threads = []
    monkeypatch.setattr(
        "hoshikage_core.gguf_info._parse",
        lambda buf, size: threads.append(threading.current_thread()) or _parse(buf, size),
    )
    path = model(tmp_path, "a", context_length=8192, meta=LLAMA)
    rt = await make_runtime({"a": {"path": str(path)}}, unload={"max_loaded": 1})
    try:
        await run(rt, "a")
        await rt.pool.unload("a")
        await run(rt, "a")
    finally:
        await rt.stop()
    assert len(threads) == 1 and threads[0] is not threading.current_thread()


@pytest.mark.asyncio
async def test_admission_under_max_memory_counts_the_kv_cache(make_runtime, fake, tmp_path):
    """Two models of 1 KB files whose KV cache at n_ctx is 4 MiB each: under a 6 MB budget
    the second evicts the first (their file sizes alone would have fit both)."""
    from tests.core.test_scheduler import run, state

    models = {}
    for name in ("a", "b"):
        path = model(tmp_path, name, context_length=8192, meta=LLAMA)
        options = {"n_ctx": 4096, "parallel": 4}
        need = ModelEntry(name=name, path=str(path), options=options).expected_bytes()
        assert need > 4_000_000
        models[name] = {"memory": need, "path": str(path), **options}
    rt = await make_runtime(models, unload={"max_loaded": 3, "max_memory": 6_000_000})
    try:
        await run(rt, "a")
        await run(rt, "b")
        assert (state(rt, "a"), state(rt, "b")) == ("unloaded", "loaded")
    finally:
        await rt.stop()
