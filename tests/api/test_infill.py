"""Fill in the middle on real llama.cpp: ``/infill`` (llama-server), ``suffix`` on
``/v1/completions`` and on Ollama's ``/api/generate``, with a tiny model whose metadata names
FIM tokens; a clear 400 for a model without them."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from tests.api.helpers import assert_openai_error  # noqa: E402

pytestmark = pytest.mark.timeout(120)

PREFIX = "the cat sat on"
SUFFIX = " mat hello world"


@pytest.fixture
async def fim_client(make_client, tiny_fim_model_path, tiny_model_path):
    return await make_client(
        {
            "models": [
                {"name": "coder", "path": str(tiny_fim_model_path), "n_ctx": 512},
                {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 512},
            ]
        }
    )


def layout(prefix: str, suffix: str) -> str:
    """The FIM prompt as text: BOS, FIM_PRE, the code before, FIM_SUF, after, FIM_MID."""
    return f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"


async def test_infill_reads_the_fim_layout(fim_client):
    r = await fim_client.post(
        "/infill",
        json={
            "model": "coder",
            "input_prefix": PREFIX,
            "input_suffix": SUFFIX,
            "n_predict": 8,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stop"] is True and body["model"] == "coder" and body["tokens_predicted"] >= 1
    tokenize = await fim_client.post(
        "/tokenize", json={"model": "coder", "content": layout(PREFIX, SUFFIX), "add_special": True}
    )
    expected = tokenize.json()["tokens"]
    assert body["tokens_evaluated"] == len(expected)
    # The same prompt given as text with the FIM tokens written out generates the same.
    plain = await fim_client.post(
        "/v1/completions",
        json={
            "model": "coder",
            "prompt": layout(PREFIX, SUFFIX),
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert plain.json()["choices"][0]["text"] == body["content"]
    assert plain.json()["usage"]["prompt_tokens"] == len(expected)


async def test_suffix_on_completions_and_ollama_generate(fim_client):
    infill = await fim_client.post(
        "/infill",
        json={
            "model": "coder",
            "input_prefix": PREFIX,
            "input_suffix": SUFFIX,
            "n_predict": 6,
            "temperature": 0,
        },
    )
    completion = await fim_client.post(
        "/v1/completions",
        json={
            "model": "coder",
            "prompt": PREFIX,
            "suffix": SUFFIX,
            "max_tokens": 6,
            "temperature": 0,
        },
    )
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["text"] == infill.json()["content"]
    ollama = await fim_client.post(
        "/api/generate",
        json={
            "model": "coder",
            "prompt": PREFIX,
            "suffix": SUFFIX,
            "stream": False,
            "options": {"num_predict": 6, "temperature": 0},
        },
    )
    assert ollama.status_code == 200, ollama.text
    assert ollama.json()["response"] == infill.json()["content"]


async def test_input_extra_and_prompt(fim_client):
    body = {
        "model": "coder",
        "input_prefix": PREFIX,
        "input_suffix": SUFFIX,
        "input_extra": [{"filename": "a.txt", "text": "hello world"}],
        "prompt": " the",
        "n_predict": 4,
        "temperature": 0,
    }
    r = await fim_client.post("/infill", json=body)
    assert r.status_code == 200, r.text
    # Without FIM_SEP the extra file comes as a snippet before the FIM prefix; prompt follows the prefix.
    extra = []
    for text in (
        "\n\n--- snippet ---\n\n",
        "hello world",
    ):  # each tokenized alone, as llama-server does
        r2 = await fim_client.post(
            "/tokenize", json={"model": "coder", "content": text, "parse_special": False}
        )
        extra += r2.json()["tokens"]
    main = (
        await fim_client.post(
            "/tokenize",
            json={
                "model": "coder",
                "content": layout(PREFIX + " the", SUFFIX),
                "add_special": True,
            },
        )
    ).json()["tokens"]
    assert r.json()["tokens_evaluated"] == len(extra) + len(main)


async def test_infill_streams(fim_client):
    r = await fim_client.post(
        "/infill",
        json={
            "model": "coder",
            "input_prefix": PREFIX,
            "input_suffix": SUFFIX,
            "n_predict": 5,
            "temperature": 0,
            "stream": True,
        },
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(block[len("data: ") :]) for block in r.text.strip().split("\n\n")]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    whole = await fim_client.post(
        "/infill",
        json={
            "model": "coder",
            "input_prefix": PREFIX,
            "input_suffix": SUFFIX,
            "n_predict": 5,
            "temperature": 0,
        },
    )
    assert "".join(e["content"] for e in events) == whole.json()["content"]


async def test_a_model_without_fim_tokens_is_a_clear_400(fim_client):
    for path, body in [
        ("/infill", {"model": "tiny", "input_prefix": "a", "input_suffix": "b"}),
        ("/v1/completions", {"model": "tiny", "prompt": "a", "suffix": "b"}),
    ]:
        error = assert_openai_error(await fim_client.post(path, json=body), 400, param="suffix")
        assert "does not support insert (fill-in-the-middle)" in error["message"]
    r = await fim_client.post(
        "/api/generate", json={"model": "tiny", "prompt": "a", "suffix": "b", "stream": False}
    )
    assert r.status_code == 400 and "does not support insert" in r.json()["error"]
    assert_openai_error(
        await fim_client.post("/infill", json={"model": "coder", "input_prefix": "a"}), 400
    )
