"""Completions whose prompt is token ids (OpenAI's ``list[int]`` and ``list[list[int]]``, as
vLLM and llama-server take them), through the official ``openai`` SDK against a real server:
the same answer as the text they tokenize from, several prompts at once, and a clear 400 for
ids outside the vocabulary, ``echo`` and an empty prompt."""

from __future__ import annotations

import httpx
import pytest

openai = pytest.importorskip("openai")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {"models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 512}]}
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def ids_of(server, text: str) -> list[int]:
    r = httpx.post(
        server.base_url + "/tokenize",
        json={"model": "tiny", "content": text, "add_special": True},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_token_ids_answer_as_their_text_does(server, oai):
    greedy = {"model": "tiny", "max_tokens": 6, "temperature": 0}
    as_text = oai.completions.create(prompt="the cat sat on", **greedy)
    ids = ids_of(server, "the cat sat on")
    as_ids = oai.completions.create(prompt=ids, **greedy)
    assert as_ids.choices[0].text == as_text.choices[0].text
    assert as_ids.usage.prompt_tokens == as_text.usage.prompt_tokens == len(ids)
    # Several prompts: one set of choices each, in order; texts and ids may be mixed.
    other = ids_of(server, "hello")
    both = oai.completions.create(prompt=[ids, other], n=2, **greedy)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    assert both.choices[0].text == both.choices[1].text == as_text.choices[0].text
    mixed = oai.completions.create(prompt=["hello", ids], **greedy)
    assert mixed.choices[1].text == as_text.choices[0].text
    streamed = oai.completions.create(prompt=ids, stream=True, **greedy)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == as_text.choices[0].text


def test_bad_token_prompts_are_400(oai):
    cases = [
        ({"prompt": [1, 10_000_000]}, "prompt", "not in the vocabulary"),
        ({"prompt": [[1, 2], []]}, "prompt[1]", "empty list of token ids"),
        ({"prompt": [[1, 2]], "echo": True}, "echo", "send the prompt as text"),
        ({"prompt": [5] * 600}, "prompt", None),  # longer than the context
    ]
    for body, param, words in cases:
        with pytest.raises(openai.BadRequestError) as info:
            oai.completions.create(model="tiny", max_tokens=2, **body)
        assert info.value.param == param, (body, info.value)
        if words:
            assert words in info.value.message, info.value.message
    assert info.value.code == "context_length_exceeded"
    assert oai.models.list().data  # the server is still up
