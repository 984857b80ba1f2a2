"""Integration tests on the real Gemma 3 270M Q4_K_M (a base model without a chat template,
so chats use the plain fallback)."""

from __future__ import annotations

import gc
import json
import os

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.errors import ContextLengthExceeded  # noqa: E402
from hoshikage_core.protocol import GenerationRequest, ResponseFormat, stream  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

pytestmark = pytest.mark.gemma


@pytest.fixture(scope="module")
def gemma(gemma_model_path):
    model = LlamaCppModel.load("gemma", str(gemma_model_path), LlamaOptions(n_ctx=2048))
    yield model
    model.close()


def chunks_of(model, request):
    """One choice's chunks; errors found before generation are raised by this call."""
    return (chunk for _index, chunk in stream(model, request))


def run(model, **fields):
    chunks = list(chunks_of(model, GenerationRequest(**fields)))
    return "".join(c.text for c in chunks), chunks


def test_uses_the_plain_fallback(gemma):
    assert gemma.chat.choice.origin.startswith("plain fallback")


def test_coherent_streamed_text(gemma):
    text, chunks = run(gemma, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert "Paris" in text or "capital" in text
    text, chunks = run(
        gemma,
        messages=({"role": "user", "content": "What is the capital of France?"},),
        max_tokens=30,
        temperature=0,
    )
    assert "Paris" in text
    assert len(chunks) > 3
    assert chunks[-1].finish_reason in ("stop", "length")


def test_stop_sequence(gemma):
    text, chunks = run(gemma, prompt="1, 2, 3, 4,", max_tokens=40, temperature=0, stop=("8",))
    assert text.strip().startswith("5, 6, 7,")
    assert "8" not in text
    assert chunks[-1].finish_reason == "stop"


def test_json_schema_output_validates(gemma):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "country": {"enum": ["France", "Spain", "Italy"]},
        },
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    fmt = ResponseFormat(type="json_schema", schema=schema, strict=True)
    text, chunks = run(
        gemma,
        messages=({"role": "user", "content": "Name the capital of France as JSON."},),
        max_tokens=60,
        temperature=0,
        response_format=fmt,
    )
    assert chunks[-1].finish_reason == "stop"
    jsonschema.validate(json.loads(text), schema)


def test_seeded_determinism(gemma):
    request = dict(prompt="Once upon a time,", max_tokens=25, temperature=0, seed=11)
    assert run(gemma, **request)[0] == run(gemma, **request)[0]
    warm = dict(prompt="Once upon a time,", max_tokens=25, temperature=0.9, seed=11)
    assert run(gemma, **warm)[0] == run(gemma, **warm)[0]


def test_context_overflow_reports_both_numbers(gemma):
    with pytest.raises(ContextLengthExceeded) as info:
        chunks_of(gemma, GenerationRequest(prompt="word " * 3000))
    assert info.value.n_ctx == 2048 and info.value.prompt_tokens > 2048
    assert "2048" in str(info.value) and str(info.value.prompt_tokens) in str(info.value)


def test_second_turn_reuses_the_kv_cache(gemma):
    system = {
        "role": "system",
        "content": " ".join(f"Rule {i}: answer politely and briefly." for i in range(60)),
    }
    turn1 = (system, {"role": "user", "content": "Hello, who are you?"})
    answer, chunks = run(gemma, messages=turn1, max_tokens=12, temperature=0)
    assert chunks[-1].cached_tokens < 10
    first_prompt = chunks[-1].prompt_tokens
    turn2 = (
        *turn1,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Thanks!"},
    )
    _, chunks = run(gemma, messages=turn2, max_tokens=4, temperature=0)
    # Everything up to the first answer came from the cache: only the new turn was read.
    assert chunks[-1].cached_tokens >= first_prompt
    assert chunks[-1].prompt_tokens - chunks[-1].cached_tokens < 30


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_close_gives_the_memory_back(gemma_model_path):
    gc.collect()
    before = rss_bytes()
    model = LlamaCppModel.load("gemma-rss", str(gemma_model_path), LlamaOptions(n_ctx=1024))
    run(model, prompt="Hello " * 200, max_tokens=4, temperature=0)  # touch the weights
    loaded = rss_bytes()
    assert loaded - before > 150 * 2**20
    model.close()
    del model
    gc.collect()
    after = rss_bytes()
    assert after - before < 0.2 * (loaded - before), (before, loaded, after)
