"""One prefill, many answers: the Decisions API and reranking against doing the same one
request at a time.

* **Decisions**: 20 choice questions (4 choices each) over a ~1,000-token input, all in one
  ``/v1/decisions`` request, from a cold cache (every rep's input starts differently);
  - ÷ one prefill of that input (a one-token completion of the same rendered prompt, cold);
  - ÷ the fastest one-request-per-question equivalent: 20 one-token completions with the
    input as a cached prefix and ``logit_bias`` on the choices' first tokens (what a
    llama-server client would do), sequential and 4 at a time, the faster of the two;
  also the same with the input already cached (a second request about it).
  Deterministic counts beside the times (they do not depend on the load): the input's
  tokens (the shared prefix every question starts with) and the questions' own tokens as
  ``usage`` counts them (the engine reads fewer: see docs/performance.md).
* **Rerank**: 32 documents of ~200 tokens in one ``/v1/rerank`` request, documents/s, ÷ 32
  separate one-document requests; and beside llama-server's ``/v1/rerank`` on the same model
  (``--reranking``, 4 slots; ``bench/run.py --llama-server PATH``). llama-server serves a
  generative GGUF that way too: with no classifier head, its rank pooling scores the last
  hidden state, so its order means nothing; only its documents/s are compared (it reads each
  document once, as Hoshikage does, plus the "yes"/"no" rows Hoshikage reads).

Usage: ``.venv/bin/python bench/run.py --decisions-only [--reps 3]`` (or ``make bench``).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

WORDS = (
    "invoice payment customer account refund card charge order delivery support billing "
    "service monthly plan upgrade password login error screen mobile app update network"
).split()

CHOICES = [
    ("billing", "technical", "sales", "spam"),
    ("low", "medium", "high", "critical"),
    ("english", "french", "german", "spanish"),
    ("angry", "neutral", "happy", "confused"),
]


def long_input(salt: int, words: int = 980) -> str:
    """About 1,000 Gemma tokens of ticket-like text, different from the first word on per
    ``salt`` (so nothing of it is cached)."""
    body = " ".join(WORDS[(i * 7 + salt) % len(WORDS)] for i in range(words))
    return f"Ticket {salt}: {body}."


def questions() -> list[dict]:
    return [
        {
            "type": "choice",
            "name": f"q{i}",
            "instructions": f"Question {i}: which fits the ticket best?",
            "choices": [{"value": v} for v in CHOICES[i % len(CHOICES)]],
        }
        for i in range(20)
    ]


#: The rerank benchmark's query, and its documents: ~200 Gemma tokens each.
RERANK_QUERY = "Which document is about a refund for a double card charge?"
RERANK_DOCUMENTS = 32


def rerank_documents(salt: str) -> list[str]:
    """32 documents of ~200 tokens, each starting with ``salt`` (nothing cached)."""
    return [
        f"{salt} Document {i}. " + long_input(i * 11 + 5, words=190)
        for i in range(RERANK_DOCUMENTS)
    ]


def rerank(http, model: str | None, documents: list[str]) -> list[dict]:
    body: dict = {"query": RERANK_QUERY, "documents": documents}
    if model is not None:
        body["model"] = model
    r = http.post("/v1/rerank", json=body)
    r.raise_for_status()
    results = r.json()["results"]
    assert len(results) == len(documents), results
    return results


def rerank_peer(base_url: str, reps: int) -> dict:
    """llama-server's ``/v1/rerank`` (started with ``--reranking``) on the same documents:
    documents/s of one 32-document request, from a cold cache each rep."""
    import httpx

    http = httpx.Client(base_url=base_url, timeout=600)
    rerank(http, None, rerank_documents("warm")[:2])
    times = []
    for rep in range(reps):
        t = time.perf_counter()
        rerank(http, None, rerank_documents(f"peer {rep}"))
        times.append(time.perf_counter() - t)
    return {"one_request_s": times, "docs_per_s": RERANK_DOCUMENTS / _median(times)}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run(base_url: str, model: str, reps: int) -> dict:
    import httpx
    import msgspec
    from hoshikage_api.decisions import schemas, translate

    http = httpx.Client(base_url=base_url, timeout=600)
    qs = questions()
    http.post(
        "/v1/decisions", json={"model": model, "input": long_input(999), "questions": qs[:1]}
    )  # load

    def prompts_for(text: str) -> list[str]:
        data = msgspec.convert(
            {"model": model, "input": text, "questions": qs}, schemas.DecisionRequest
        )
        request, _ = translate.score_request(data)
        out = []
        for p in request.prompts:
            r = http.post("/apply-template", json={"model": model, "messages": list(p.messages)})
            out.append(r.json()["prompt"])
        return out

    def first_tokens(prompt: str, labels) -> dict[str, float]:
        base = len(
            http.post("/tokenize", json={"model": model, "content": prompt}).json()["tokens"]
        )
        bias = {}
        for label in labels:
            tokens = http.post(
                "/tokenize", json={"model": model, "content": prompt + label}
            ).json()["tokens"]
            bias[str(tokens[base])] = 50
        return bias

    def one_token(prompt: str, bias: dict) -> None:
        r = http.post(
            "/v1/completions",
            json={
                "model": model,
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": 4,
                "logit_bias": bias,
            },
        )
        r.raise_for_status()

    out: dict = {
        "prefill_s": [],
        "decisions_cold_s": [],
        "decisions_warm_s": [],
        "per_question_seq_s": [],
        "per_question_par4_s": [],
        "input_tokens": None,
        "prefix_tokens": None,
    }
    for rep in range(reps):
        # One prefill of the input (cold): the first question's prompt, one token.
        text = long_input(rep * 3 + 1)
        prompt0 = prompts_for(text)[0]
        t = time.perf_counter()
        one_token(prompt0, {})
        out["prefill_s"].append(time.perf_counter() - t)

        # The Decisions request, cold, then warm.
        text = long_input(rep * 3 + 2)
        body = {"model": model, "input": text, "questions": qs}
        t = time.perf_counter()
        d = http.post("/v1/decisions", json=body)
        out["decisions_cold_s"].append(time.perf_counter() - t)
        d.raise_for_status()
        usage = d.json()["usage"]
        out["input_tokens"] = usage["input_tokens"]
        # Cold: nothing cached, so what was written is the shared prefix.
        details = usage["input_tokens_details"]
        out["prefix_tokens"] = details["cache_write_tokens"] + details["cached_tokens"]
        t = time.perf_counter()
        http.post("/v1/decisions", json=body).raise_for_status()
        out["decisions_warm_s"].append(time.perf_counter() - t)

        # One request per question: sequential (the first reads the input), then 4 at a time.
        text = long_input(rep * 3 + 3)
        prompts = prompts_for(text)
        biases = [first_tokens(p, CHOICES[i % len(CHOICES)]) for i, p in enumerate(prompts)]
        t = time.perf_counter()
        for p, b in zip(prompts, biases, strict=True):
            one_token(p, b)
        out["per_question_seq_s"].append(time.perf_counter() - t)
        text = long_input(rep * 3 + 1000)
        prompts = prompts_for(text)
        t = time.perf_counter()
        one_token(prompts[0], biases[0])  # the input goes into the cache first
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one_token, prompts[1:], biases[1:]))
        out["per_question_par4_s"].append(time.perf_counter() - t)

    # Rerank: 32 documents of ~200 tokens.
    one_s, each_s = [], []
    for rep in range(reps):
        t = time.perf_counter()
        rerank(http, model, rerank_documents(f"{rep}"))
        one_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        for doc in rerank_documents(f"{rep} b"):
            rerank(http, model, [doc])
        each_s.append(time.perf_counter() - t)
    doc_tokens = [
        len(http.post("/tokenize", json={"model": model, "content": d}).json()["tokens"])
        for d in rerank_documents("0")
    ]
    prefix = out.pop("prefix_tokens")

    med = {k: _median(v) for k, v in out.items() if isinstance(v, list)}
    fastest_each = min(med["per_question_seq_s"], med["per_question_par4_s"])
    return {
        "raw": out,
        "median_s": med,
        "input_tokens": out["input_tokens"],
        "shared_prefix_tokens": prefix,
        "beyond_prefix_tokens": out["input_tokens"] - prefix,
        "rerank_document_tokens": _median([float(n) for n in doc_tokens]),
        "decisions_over_prefill": med["decisions_cold_s"] / med["prefill_s"],
        "decisions_over_per_question": med["decisions_cold_s"] / fastest_each,
        "decisions_warm_over_per_question": med["decisions_warm_s"] / fastest_each,
        "rerank_docs_per_s": 32 / _median(one_s),
        "rerank_separate_docs_per_s": 32 / _median(each_s),
        "rerank_speedup": _median(each_s) / _median(one_s),
        "reps": reps,
    }


def report(result: dict) -> None:
    m = result["median_s"]
    print(
        f"\nDecisions: 20 choice questions x 4 choices, input {result['input_tokens']} tokens in all "
        f"(median of {result['reps']})"
    )
    print(f"  one prefill of the input (cold)        {m['prefill_s']:.2f} s")
    print(
        f"  /v1/decisions, cold                     {m['decisions_cold_s']:.2f} s   "
        f"= {result['decisions_over_prefill']:.2f}x one prefill (target <= 1.5)"
    )
    print(f"  /v1/decisions, input cached             {m['decisions_warm_s']:.2f} s")
    print(f"  20 one-token requests, sequential       {m['per_question_seq_s']:.2f} s")
    print(f"  20 one-token requests, 4 at a time      {m['per_question_par4_s']:.2f} s")
    print(
        f"  decisions / fastest per-question        {result['decisions_over_per_question']:.2f}x (target <= 0.5)"
    )
    print(
        f"  tokens: shared prefix (the input) {result['shared_prefix_tokens']}, the questions' own "
        f"{result['beyond_prefix_tokens']} ({result['beyond_prefix_tokens'] / 20:.1f} each; usage "
        "counts them all, the engine reads a start shared with the slot's last question once)"
    )
    print(
        f"Rerank: 32 documents of {result['rerank_document_tokens']:.0f} tokens: "
        f"{result['rerank_docs_per_s']:.1f} docs/s in one request, "
        f"{result['rerank_separate_docs_per_s']:.1f} docs/s in 32 requests ({result['rerank_speedup']:.2f}x)"
    )
    peer = result.get("llama_server_rerank") or {}
    if "docs_per_s" in peer:
        print(
            f"  llama-server /v1/rerank (--reranking, same GGUF, its order meaningless without a "
            f"classifier head): {peer['docs_per_s']:.1f} docs/s; Hoshikage "
            f"{result['rerank_docs_per_s'] / peer['docs_per_s']:.2f}x"
        )
    else:
        print(f"  llama-server /v1/rerank: {peer.get('error') or peer.get('skipped') or 'not run'}")
