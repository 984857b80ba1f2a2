"""The disk prompt cache (hoshikage_llamacpp.engine.cache.disk), on the real llama.cpp with the
tiny model: a conversation stays warm across an unload, and what is stale, broken or turned
off is never loaded."""

from __future__ import annotations

import logging
import os

import pytest

pytest.importorskip("llama_cpp")

from hoshikage_core.protocol import GenerationRequest, stream  # noqa: E402
from hoshikage_llamacpp.engine.cache import disk as disk_cache  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402


@pytest.fixture(autouse=True)
def prompt_folder(tmp_path, monkeypatch):
    folder = tmp_path / "prompts"
    monkeypatch.setenv("HOSHIKAGE_PROMPT_CACHE", str(folder))
    return folder


def run(model, messages, max_tokens=6):
    chunks = [
        c
        for _i, c in stream(
            model, GenerationRequest(messages=messages, max_tokens=max_tokens, temperature=0)
        )
    ]
    return "".join(c.text for c in chunks), chunks[-1]


SYSTEM = {"role": "system", "content": "the cat sat on the mat " * 20}
OPTIONS = LlamaOptions(n_ctx=1024, parallel=2, cache_disk=64)


def unload(model):
    folder = model.disk.folder if model.disk is not None else None
    model.close()
    if folder is not None:
        disk_cache.wait_for_writer(folder)


def first_turn(path, options=OPTIONS):
    model = LlamaCppModel.load("tiny", str(path), options)
    messages = [SYSTEM, {"role": "user", "content": "hello"}]
    answer, last = run(model, messages)
    unload(model)
    return [*messages, {"role": "assistant", "content": answer}], last


def test_a_conversation_stays_warm_across_an_unload(tiny_model_path):
    history, first = first_turn(tiny_model_path)
    assert disk_cache.count("tiny", str(tiny_model_path), OPTIONS) == 1
    turn2 = [*history, {"role": "user", "content": "yes no"}]
    again = LlamaCppModel.load("tiny", str(tiny_model_path), OPTIONS)
    never = LlamaCppModel.load(
        "never", str(tiny_model_path), LlamaOptions(n_ctx=1024, parallel=2, cache_disk=0)
    )
    try:
        assert len(again.disk) == 1
        answer, last = run(again, turn2)
        # the whole earlier prefix came from disk: only the new turn was read
        assert last.cached_tokens >= first.prompt_tokens
        assert again.disk.restored_tokens == last.cached_tokens
        run(never, history[:-1])  # a server that never unloaded: turn 1, then turn 2
        same, warm = run(never, turn2)
        assert answer == same
        assert last.cached_tokens == warm.cached_tokens
    finally:
        again.close()
        never.close()


def test_a_changed_option_or_file_invalidates(tiny_model_path, tmp_path, prompt_folder):
    path = tmp_path / "copy.gguf"
    path.write_bytes(tiny_model_path.read_bytes())
    first_turn(path)
    assert disk_cache.count("tiny", str(path), OPTIONS) == 1
    changed = LlamaOptions(n_ctx=2048, parallel=2, cache_disk=64)
    assert disk_cache.count("tiny", str(path), changed) == 0
    model = LlamaCppModel.load("tiny", str(path), changed)
    try:
        assert len(model.disk) == 0
        _, last = run(model, [SYSTEM, {"role": "user", "content": "hello"}])
        assert last.cached_tokens == 0
    finally:
        unload(model)
    # the stale folder went with the load; the new one holds this load's state
    assert [p.name for p in (prompt_folder / "tiny").iterdir()] == [model.disk.folder.name]
    first_turn(path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert disk_cache.count("tiny", str(path), OPTIONS) == 0


def test_a_truncated_state_file_is_skipped(tiny_model_path, caplog):
    history, first = first_turn(tiny_model_path)
    (state,) = list((disk_cache.model_folder("tiny")).glob("*/*.state"))
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING, "hoshikage.llamacpp.disk_cache")
    model = LlamaCppModel.load("tiny", str(tiny_model_path), OPTIONS)
    try:
        assert len(model.disk) == 0
        assert "truncated" in caplog.text
        _, last = run(model, [*history, {"role": "user", "content": "yes"}])
        assert last.cached_tokens == 0  # read again in full, no crash
    finally:
        model.close()


def test_a_state_truncated_after_indexing_is_read_in_full(tiny_model_path, caplog):
    history, _ = first_turn(tiny_model_path)
    model = LlamaCppModel.load("tiny", str(tiny_model_path), OPTIONS)
    try:
        (entry,) = model.disk.entries
        data = entry.path.read_bytes()
        entry.path.write_bytes(data[:-100])
        caplog.set_level(logging.WARNING, "hoshikage.llamacpp.disk_cache")
        _, last = run(model, [*history, {"role": "user", "content": "yes"}])
        assert last.cached_tokens == 0
        assert "truncated" in caplog.text
    finally:
        model.close()


def test_cache_disk_zero_writes_nothing(tiny_model_path, prompt_folder):
    off = LlamaOptions(n_ctx=1024, parallel=2, cache_disk=0)
    first_turn(tiny_model_path, off)
    assert not prompt_folder.exists() or not list(prompt_folder.rglob("*.state"))
    assert disk_cache.count("tiny", str(tiny_model_path), off) == 0


def test_the_disk_cache_stays_within_its_size_and_evicts_the_oldest(tiny_model_path):
    options = LlamaOptions(n_ctx=1024, parallel=2, cache_disk=1)
    model = LlamaCppModel.load("tiny", str(tiny_model_path), options)
    size = None
    try:
        for word in ("red", "blue", "green"):
            run(
                model,
                [
                    {"role": "system", "content": f"{word} data " * 60},
                    {"role": "user", "content": word},
                ],
            )
    finally:
        unload(model)
    files = list(disk_cache.model_folder("tiny").glob("*/*.state"))
    size = sum(f.stat().st_size for f in files)
    assert files and size <= 1024 * 1024
