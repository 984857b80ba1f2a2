"""Gemma 3 270M (sliding-window layers of 512 tokens): window-size caches that still reuse
prefixes, memory figures that match the resident set, and load progress."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.load_progress import reporting  # noqa: E402
from hoshikage_core.protocol import GenerationRequest, stream  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

pytestmark = pytest.mark.gemma


def run(model, **fields):
    chunks = [c for _i, c in stream(model, GenerationRequest(temperature=0, **fields))]
    return "".join(c.text for c in chunks), chunks[-1]


#: Loads the model in a fresh interpreter and prints its memory figures: the resident-set
#: growth of a process that loaded other models before would measure those too.
MEASURE = """
import gc, json, os, sys
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
from hoshikage_llamacpp.options import LlamaOptions

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

import llama_cpp, numpy  # their libraries are mapped before the baseline
gc.collect()
before = rss()
model = LlamaCppModel.load("gemma-mem", sys.argv[1], LlamaOptions(cache_disk=0))
grown = rss() - before
kv = sum(kinds.get("KV", 0) for kinds in model.placement.values())
print(json.dumps({"memory_bytes": model.memory_bytes(), "grown": grown, "kv": kv}))
model.close()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm")
def test_memory_bytes_is_within_15_percent_of_the_rss_growth(gemma_model_path):
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(gemma_model_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    grown, memory = figures["grown"], figures["memory_bytes"]
    assert abs(memory - grown) <= 0.15 * grown, figures
    # window-size SWA caches: 3 full layers × 16384 cells + 15 SWA layers × 4 × 1024
    assert figures["kv"] < 120 * 2**20, figures


def test_load_progress_is_reported_up_to_one(gemma_model_path):
    seen: list[float] = []
    with reporting(seen.append):
        from hoshikage_core.registry import ModelEntry

        from hoshikage_llamacpp import plugin

        entry = ModelEntry(
            name="gemma-progress", path=str(gemma_model_path), options=LlamaOptions(n_ctx=512)
        )
        model = plugin.create_backend(entry=entry, config=None)
    model.close()
    assert len(seen) > 2 and seen == sorted(seen)
    assert 0 <= seen[0] < 1 and seen[-1] == 1.0


@pytest.fixture(scope="module")
def swa_pair(gemma_model_path):
    """Window-size caches (n_ubatch 64: 768 cells per slot), and a full-size reference."""
    small = LlamaCppModel.load(
        "gemma-swa",
        str(gemma_model_path),
        LlamaOptions(n_ctx=2048, parallel=2, n_ubatch=64, cache_disk=0),
    )
    full = LlamaCppModel.load(
        "gemma-full",
        str(gemma_model_path),
        LlamaOptions(n_ctx=2048, parallel=1, swa_full=True, cache_ram=0, cache_disk=0),
    )
    yield small, full
    small.close()
    full.close()


@pytest.mark.timeout(900)
def test_an_edited_turn_keeps_the_prefix_through_a_checkpoint(swa_pair):
    small, full = swa_pair
    assert small._engine.pool.n_swa == 512
    system = {
        "role": "system",
        "content": " ".join(
            f"Line {i}: the quick brown fox jumps over the dog." for i in range(50)
        ),
    }
    turn1 = [system, {"role": "user", "content": "Hello?"}]
    answer, first = run(small, messages=turn1, max_tokens=4)
    assert first.prompt_tokens > 512
    long_question = " ".join(f"Point {i}: is the sky blue today?" for i in range(35))
    turn2 = [
        *turn1,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": long_question},
    ]
    run(small, messages=turn2, max_tokens=4)
    # The user edits turn 2: the slot's sliding-window layers have moved past the window of
    # the shared prefix, and the checkpoint taken when turn 1 was read brings it back.
    edited = [*turn2[:-1], {"role": "user", "content": "Never mind."}]
    again, last = run(small, messages=edited, max_tokens=8)
    assert last.cached_tokens >= first.prompt_tokens
    assert small._engine.pool.checkpoint_restores >= 1 and small._engine.pool.window_misses == 0
    reference, _ = run(full, messages=edited, max_tokens=8)
    assert again == reference


@pytest.mark.timeout(900)
def test_interleaved_conversations_still_reuse_their_prefixes(swa_pair):
    small, full = swa_pair
    systems = [
        " ".join(f"Rule {i}: {topic} answers stay short." for i in range(60))
        for topic in ("cats", "boats", "trees")
    ]
    history = [[{"role": "system", "content": s}] for s in systems]
    previous = [0, 0, 0]
    for turn in range(2):
        for conv in range(3):  # three conversations over two slots
            messages = [*history[conv], {"role": "user", "content": f"Question {turn}?"}]
            answer, last = run(small, messages=messages, max_tokens=8)
            if turn:
                assert last.cached_tokens >= previous[conv], (conv, last)
                if conv == 0:
                    reference, _ = run(full, messages=messages, max_tokens=8)
                    assert answer == reference
            history[conv] = [*messages, {"role": "assistant", "content": answer}]
            previous[conv] = last.prompt_tokens
    # A conversation given a slot that held another shares only its first few tokens (BOS,
    # the turn marker) with it, whose window is long gone: those are read again (a miss; a
    # checkpoint holds only the window of its own end, so it cannot bring them back). Each
    # conversation's own prefix is always reused (cached_tokens above).
    assert small._engine.pool.window_misses <= 3
