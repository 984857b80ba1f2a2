"""The batched engine on the real Gemma 3 270M: sequences decoded together keep to their own
prompts, a cancel leaves the others alone, grammar holds inside a mixed batch, and ``n``
choices read the prompt once. Real llama.cpp, no stand-in."""

from __future__ import annotations

import json
import re
import threading

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.protocol import (  # noqa: E402
    BlockingStream,
    CancelToken,
    GenerationRequest,
    ResponseFormat,
    stream,
)
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

pytestmark = pytest.mark.gemma

DAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}


@pytest.fixture(scope="module")
def gemma(gemma_model_path):
    model = LlamaCppModel.load("gemma", str(gemma_model_path), LlamaOptions(n_ctx=1024, parallel=4))
    yield model
    model.close()


def start(model, request, cancel=None):
    sink = BlockingStream()
    model.generate(request, cancel or CancelToken(), sink)
    return sink


def text_of(sink) -> tuple[str, object]:
    chunks = [chunk for _index, chunk in sink]
    return "".join(c.text for c in chunks), chunks[-1]


def test_four_streams_each_continue_their_own_prompt(gemma):
    prompts = ["1, 2, 3,", "Monday, Tuesday,", "10, 20, 30,", "January, February,"]
    sinks = [
        start(gemma, GenerationRequest(prompt=p, max_tokens=16, temperature=0)) for p in prompts
    ]
    texts = [text_of(s)[0] for s in sinks]
    numbers, days, tens, months = texts
    assert re.match(r"\s*4,\s*5,\s*6", numbers), numbers
    assert {w.strip(" ,.").lower() for w in days.split(",")[:3]} <= DAYS | {""}, days
    assert re.match(r"\s*40,\s*50", tens), tens
    assert "march" in months.lower(), months
    # the same start as each prompt alone: nothing leaked between the sequences (llama.cpp
    # does not promise bit-identical logits across batch shapes, so only the start is compared)
    for prompt, text in zip(prompts, texts, strict=True):
        alone, _ = text_of(
            start(gemma, GenerationRequest(prompt=prompt, max_tokens=16, temperature=0))
        )
        assert alone[:8] == text[:8]


def test_cancelling_one_of_four_frees_its_slot_and_the_others_finish(gemma):
    prompts = ["1, 2, 3,", "Monday, Tuesday,", "A, B, C,", "10, 20, 30,"]
    cancels = [CancelToken() for _ in prompts]
    requests = [
        GenerationRequest(prompt=p, max_tokens=48, temperature=0, logit_bias={1: -100, 106: -100})
        for p in prompts
    ]
    sinks = [start(gemma, r, c) for r, c in zip(requests, cancels, strict=True)]
    first = next(iter(sinks[1]))  # the day stream has started
    assert first[1].text
    cancels[1].cancel()
    rest = [chunk for _i, chunk in sinks[1]]
    assert rest[-1].finish_reason == "cancelled"
    assert rest[-1].completion_tokens < 48
    for i in (0, 2, 3):
        text, last = text_of(sinks[i])
        assert last.finish_reason == "length" and last.completion_tokens == 48
        alone, _ = text_of(start(gemma, requests[i]))
        assert text[:8] == alone[:8]
    assert gemma.stats().running == 0


def test_json_schema_holds_while_others_run_unconstrained(gemma):
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
    plain = [
        start(
            gemma,
            GenerationRequest(
                prompt=f"Story {i}: once upon a time", max_tokens=40, temperature=0.7, seed=i
            ),
        )
        for i in range(2)
    ]
    constrained = [
        start(
            gemma,
            GenerationRequest(
                messages=({"role": "user", "content": f"Name a capital city, as JSON ({i})."},),
                max_tokens=60,
                temperature=t,
                seed=i,
                response_format=fmt,
            ),
        )
        for i, t in enumerate((0.0, 1.0))
    ]
    for sink in constrained:
        text, last = text_of(sink)
        assert last.finish_reason == "stop", (text, last)
        jsonschema.validate(json.loads(text), schema)
    for sink in plain:
        text, last = text_of(sink)
        assert last.completion_tokens > 0


def test_n_choices_share_one_prefill(gemma):
    before = gemma.stats()
    request = GenerationRequest(
        prompt="My favourite animal is", max_tokens=12, temperature=1.0, seed=7
    )
    finals, texts = {}, {}
    for index, chunk in stream(gemma, request, n=4):
        texts[index] = texts.get(index, "") + chunk.text
        if chunk.finish_reason:
            finals[index] = chunk
    after = gemma.stats()
    assert sorted(finals) == [0, 1, 2, 3]
    assert len(set(texts.values())) == 4, texts
    n_prompt = finals[0].prompt_tokens
    assert all(f.prompt_tokens == n_prompt for f in finals.values())
    assert after.prompt_tokens - before.prompt_tokens == n_prompt  # read once, not four times


def test_concurrent_threads_see_the_same_answers_as_serial(gemma):
    prompts = [f"Fact {i}: the sun is" for i in range(6)]  # more than the four slots
    serial = [
        text_of(start(gemma, GenerationRequest(prompt=p, max_tokens=10, temperature=0)))[0]
        for p in prompts
    ]
    results: dict[int, str] = {}

    def work(i):
        results[i] = text_of(
            start(gemma, GenerationRequest(prompt=prompts[i], max_tokens=10, temperature=0))
        )[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i][:8] for i in range(len(prompts))] == [s[:8] for s in serial]
