"""Speculative decoding on the real Gemma 3 270M: at temperature 0 the token ids are the
same with and without drafts on a prompt that copies its input (drafts accepted) and on
one that does not, and a ``json_schema`` answer still validates."""

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


def test_a_free_answer_is_the_same_token_ids(gemma, chains):  # noqa: F811
    (ids0, text0, _), (ids1, text1, _) = ids_with_and_without(
        gemma, chains, prompt="The three most important ideas in physics are", max_tokens=48
    )
    assert ids1 == ids0 and text1 == text0


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
