"""Speculative decoding on the real Gemma 3 270M: at temperature 0 the token ids are the
same with and without drafts on a prompt that copies its input (drafts accepted) and on
one that does not (but where a near tie falls the other way: a draft's rows go through
other matrix kernels than one token's, and round otherwise), and a ``json_schema`` answer
still validates."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from hoshikage_core.protocol import GenerationRequest, ResponseFormat  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

from tests.llamacpp.test_speculative import chains, collect, start  # noqa: E402, F401

pytestmark = pytest.mark.gemma

TEXT = (
    "The lighthouse stood on a rock at the mouth of the harbour. Every evening the keeper "
    "climbed the one hundred and twelve steps, trimmed the wick, wound the clockwork that "
    "turned the lens, and wrote the weather in a book that nobody ever read."
)
COPY = f"Repeat the following text exactly.\n\nText:\n{TEXT}\n\nRepeated text:\n"


@pytest.fixture(scope="module")
def gemma(gemma_model_path):
    model = LlamaCppModel.load("gemma", str(gemma_model_path), LlamaOptions(n_ctx=1024, parallel=2))
    yield model
    model.close()


def ids_with_and_without(model, chains, **fields):  # noqa: F811
    out = []
    for speculative in (False, True):
        del chains[:]
        req = GenerationRequest(temperature=0, speculative=speculative, **fields)
        texts, last = collect(start(model, req))
        out.append((list(chains[0].drawn), texts[0], last[0]))
    return out


def test_a_copying_answer_is_the_same_token_ids_and_accepts_drafts(gemma, chains):  # noqa: F811
    (ids0, text0, _), (ids1, text1, last) = ids_with_and_without(
        gemma, chains, prompt=COPY, max_tokens=48
    )
    assert ids1 == ids0 and text1 == text0
    assert text1.strip().startswith("The lighthouse stood")
    assert last.draft_accepted > 0.6 * last.draft_tokens > 10


def test_a_free_answer_is_the_same_token_ids_up_to_a_near_tie(gemma, chains):  # noqa: F811
    prompt = "The three most important ideas in physics are"
    (ids0, text0, _), (ids1, text1, _) = ids_with_and_without(
        gemma, chains, prompt=prompt, max_tokens=48
    )
    if ids1 == ids0:
        assert text1 == text0
        return
    # Where they part, the two tokens are within rounding of each other (0.02 nats apart
    # in a fresh model, 0.08 the other way round read again here from the prefix cache, on
    # the machine it was written on, with flash attention); a draft verified wrongly parts
    # at a token nats away, or its ids differ before.
    k = next(i for i, (a, b) in enumerate(zip(ids0, ids1, strict=False)) if a != b)
    sink = start(
        gemma,
        GenerationRequest(
            prompt=prompt,
            max_tokens=k + 1,
            temperature=0,
            speculative=False,
            logprobs=True,
            top_logprobs=5,
        ),
    )
    entries = [e for _i, chunk in sink for e in chunk.logprobs or ()]
    assert [bytes(e.bytes) for e in entries[:k]] == [gemma.token_bytes(t) for t in ids0[:k]]
    top = {bytes(t.bytes): t.logprob for t in entries[k].top_logprobs}
    first, drafted = gemma.token_bytes(ids0[k]), gemma.token_bytes(ids1[k])
    assert drafted in top and abs(top[first] - top[drafted]) < 0.15, (k, top)


def test_json_schema_still_validates_with_drafts(gemma):
    schema = {
        "type": "object",
        "properties": {"keeper": {"type": "string"}, "steps": {"type": "integer"}},
        "required": ["keeper", "steps"],
    }
    req = GenerationRequest(
        prompt=f"{TEXT}\n\nAs JSON with the keeper's job and the number of steps:\n",
        temperature=0,
        max_tokens=60,
        response_format=ResponseFormat(type="json_schema", schema=schema),
    )
    texts, last = collect(start(gemma, req))
    value = json.loads(texts[0])
    assert isinstance(value["keeper"], str) and isinstance(value["steps"], int)
    assert last[0].draft_tokens is not None
