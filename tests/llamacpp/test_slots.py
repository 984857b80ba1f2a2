"""Where the engine places a prompt among its slots, on real llama.cpp (the tiny model).

With a KV stream per slot, llama.cpp decodes a batch in one pass only over consecutive KV
sequences, so a new stream with no cache to reuse goes beside the streams already running."""

from __future__ import annotations

import time

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.protocol import BlockingStream, CancelToken, GenerationRequest  # noqa: E402
from hoshikage_llamacpp.engine.slots import runs  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

EOS = 2
PROMPTS = [f"{word} " * 12 for word in ("cat", "mat", "red", "blue", "green", "data")]


def test_runs_counts_the_passes_of_a_step():
    assert [runs(set()), runs({0}), runs({0, 1, 2}), runs({0, 2}), runs({0, 2, 3, 5})] == [
        0,
        1,
        1,
        2,
        3,
    ]


def start(model, prompt, max_tokens):
    sink, cancel = BlockingStream(), CancelToken()
    req = GenerationRequest(
        prompt=prompt, max_tokens=max_tokens, temperature=0, logit_bias={EOS: -100}
    )
    model.generate(req, cancel, sink, 1)
    return sink, cancel


def busy(model) -> set[int]:
    return {slot.id for slot in model._engine.pool.slots if slot.owner is not None}


@pytest.fixture
def model(tiny_model_path):
    m = LlamaCppModel.load(
        "tiny", str(tiny_model_path), LlamaOptions(n_ctx=512, parallel=4, cache_ram=0)
    )
    yield m
    m.close()


def test_a_new_stream_goes_beside_the_running_ones(model):
    for prompt in PROMPTS[:4]:  # slots 0..3 in turn, each left holding its prompt
        list(start(model, prompt, 2)[0])
    list(start(model, PROMPTS[1] + "cat", 2)[0])  # continues slot 1: now the most recent
    # The least recently used slots are 0, 2, 3, 1: A takes 0, and B the next of them (2)
    # would leave a gap; it takes 1, beside A, though 1 was used last.
    a = start(model, PROMPTS[4], 400)
    b = start(model, PROMPTS[5], 400)
    deadline = time.monotonic() + 30
    while len(busy(model)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert busy(model) == {0, 1}
    finally:
        for sink, cancel in (a, b):
            cancel.cancel()
            list(sink)
