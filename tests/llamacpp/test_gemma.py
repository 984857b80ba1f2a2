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


# ---- sampled draws over the best tokens only (sampling.SamplerChain._draw_top) ------------
#
# Gemma 3's vocabulary is 262,144 tokens: a sampled chain with a top-k (or a greedy one with
# penalties) draws over the tokens that reach a bound found in one pass over the row,
# and the biased and recently drawn ones, not over a candidate array of the whole
# vocabulary. Seed for seed, it must draw what llama.cpp's whole chain draws. Drawing 200
# times on one row, the penalties push later draws down the row: the window must be kept.


@pytest.mark.parametrize("n_vocab, width", [(262144, 2048), (49152, 416), (1000, 97)])
def test_the_best_ids_hold_every_token_of_the_top_k_and_few_others(n_vocab, width):
    import numpy as np
    from hoshikage_llamacpp.engine.sampling import best_ids

    rng = np.random.default_rng(n_vocab)
    need, extra = width // 4, np.array([7, 3, 7])
    tail = n_vocab % width or 1  # the logits after the last whole piece (or the last one)
    for trial in range(20):
        logits = (rng.standard_normal(n_vocab) * 3).astype(np.float32)
        if trial % 2:  # the best tokens where no whole piece reaches
            logits[-tail:] += 40
        given = extra if trial % 4 < 2 else None
        ids = best_ids(logits, need, width, given).tolist()
        best = np.argsort(-logits, kind="stable")[:need].tolist()
        assert set(best) <= set(ids), trial
        assert given is None or {3, 7} <= set(ids)
        assert ids == sorted(set(ids))  # ascending, each once: the whole row's order
        assert len(ids) < 3 * need + 2  # the bound is tight: not a strided look's hundreds
    # The best tokens each at a position of its own: the bound is the need-th of them.
    logits[:] = -10.0
    spread = rng.permutation(width)[:need] + width * rng.integers(0, n_vocab // width, need)
    logits[spread] = np.arange(need, dtype=np.float32)
    assert best_ids(logits, need, width).tolist() == sorted(spread.tolist())
    logits[:] = np.nan  # no bound: fewer than need, and the caller lets llama.cpp draw
    assert len(best_ids(logits, need, width)) < need


SAMPLED = {
    "defaults": {"temperature": 0.8},
    "wide top-k, hot": {"temperature": 1.6, "top_k": 200, "top_p": 1.0, "min_p": 0.0},
    "top-k 1": {"temperature": 0.7, "top_k": 1},
    "a bias and a ban": {"temperature": 1.0, "logit_bias": {236764: 6.0, 1: -100, 506: 3.0}},
    # Biases that only lower: none of these tokens is added to the best ones (they cannot
    # climb into the top-k), and the bound still leaves 8 others above it.
    "lowering biases": {
        "temperature": 1.0,
        "top_k": 8,
        "logit_bias": {236764: -3.0, 506: -40.0, 1: -100, 236761: -1.5},
    },
    "a grammar": {"temperature": 1.2, "grammar": 'root ::= ("sun" | "moon" | " and " | "star")+'},
    "penalties": {"temperature": 0.9, "repeat_penalty": 1.3, "presence_penalty": 0.4},
    "a negative penalty": {"temperature": 1.0, "frequency_penalty": -0.5, "top_k": 20},
    "greedy, a penalty": {"temperature": 0, "repeat_penalty": 1.5},
    "greedy, a penalty and a bias": {
        "temperature": 0,
        "frequency_penalty": 0.7,
        "logit_bias": {236764: 2.0, 1: -100},
    },
}


def sampled_run(gemma, monkeypatch, fast: bool, fields: dict):
    """Text and token ids of a seeded sampled request, with the fast draw on or off, and how
    many draws went through it."""
    from hoshikage_llamacpp.engine import sampling

    monkeypatch.setattr(sampling, "FAST_TOP_K", fast)
    drawn, fast_draws = [], []
    sample, draw_top = sampling.SamplerChain.sample, sampling.SamplerChain._draw_top

    def recording(self, ctx, index=-1, drawn_already=None):
        token = sample(self, ctx, index, drawn_already)
        drawn.append(token)
        return token

    def counted(self, ctx, index):
        fast_draws.append(index)
        return draw_top(self, ctx, index)

    monkeypatch.setattr(sampling.SamplerChain, "sample", recording)
    monkeypatch.setattr(sampling.SamplerChain, "_draw_top", counted)
    # Without drafts: a draft's rows are read in a wider step, whose logits differ a little.
    text, _ = run(
        gemma,
        prompt="The night sky over the old harbour was",
        max_tokens=48,
        seed=5,
        speculative=False,
        **fields,
    )
    return text, list(drawn), len(fast_draws)  # copies: a later call wraps these wrappers


@pytest.fixture(scope="module")
def gemma_rows(gemma_model_path):
    """A raw llama.cpp context on Gemma 3 with 12 rows of logits decoded, and its vocab."""
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = False  # the sampler does not care; AMX machines do
    model = llama_cpp.llama_model_load_from_file(str(gemma_model_path).encode(), params)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 256, 2, 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    vocab = llama_cpp.llama_model_get_vocab(model)
    tokens = [2, 818, 1890, 236789, 563, 496, 1214, 1003, 532, 506, 3768, 236761]
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    for i, token in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, 1
        batch.seq_id[i][0] = 0
    batch.n_tokens = len(tokens)
    assert llama_cpp.llama_decode(ctx, batch) == 0
    yield ctx, vocab, llama_cpp.llama_vocab_n_tokens(vocab), len(tokens)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


def test_the_kept_views_read_the_rows_llama_cpp_holds_now(gemma_rows):
    import ctypes

    import numpy as np
    from hoshikage_llamacpp.llama import logits

    ctx, _vocab, n_vocab, rows = gemma_rows
    fresh = [
        np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,)).copy()
        for row in range(rows)
    ]
    for row in range(rows):
        view = logits.row_logits(ctx, row, n_vocab)
        assert view.dtype == np.float32 and view.shape == (n_vocab,)
        assert np.array_equal(view, fresh[row])
    first = ctypes.cast(llama_cpp.llama_get_logits_ith(ctx, 0), ctypes.c_void_p).value
    whole = logits.rows_at(first, rows, n_vocab)
    assert np.array_equal(whole, np.stack(fresh))
    assert logits.rows_at(first, rows, n_vocab) is whole  # found again, not made again
    # A view is llama.cpp's memory, never a copy: what is written there later is what it reads.
    buffer = (ctypes.c_float * 512)(*range(8))
    view = logits.rows_at(ctypes.addressof(buffer), 2, 4)
    buffer[5] = -1.0
    assert logits.rows_at(ctypes.addressof(buffer), 2, 4) is view and view[1, 1] == -1.0
    with pytest.raises(ValueError, match="no logits"):
        logits.rows_at(None, 1, n_vocab)  # llama.cpp's NULL for a row without logits
    for width in range(1, logits.VIEWS + 2):  # the views kept are bounded
        logits.rows_at(ctypes.addressof(buffer), 1, width)
    assert len(logits._views) <= logits.VIEWS


@pytest.mark.parametrize("case", SAMPLED)
def test_a_sampled_draw_over_the_best_tokens_is_the_whole_chains_draw(
    gemma_rows, monkeypatch, case
):
    from hoshikage_llamacpp.engine import sampling

    ctx, vocab, n_vocab, rows = gemma_rows
    # A grammar checks the drawn token after the chain: these rows are drawn without it
    # (the request test below has it).
    fields = {k: v for k, v in SAMPLED[case].items() if k != "grammar"}
    request = GenerationRequest(prompt="-", **fields)
    seen = set()
    for row in range(rows):
        draws = []
        for fast in (True, False):
            monkeypatch.setattr(sampling, "FAST_TOP_K", fast)
            chain = sampling.SamplerChain(vocab, n_vocab, request, 1000 + row, None)
            try:
                assert chain.top_only == fast
                draws.append([chain.sample(ctx, row) for _ in range(200)])
            finally:
                chain.close()
        assert draws[0] == draws[1], (case, row)  # seed for seed, the same 200 draws
        seen.update((row, token) for token in draws[0])
    if case == "top-k 1":
        assert len(seen) == rows  # one token a row: the best one
    else:
        assert len(seen) > 3 * rows  # really sampled: several tokens a row


@pytest.mark.parametrize("case", SAMPLED)
def test_a_sampled_request_draws_over_the_best_tokens(gemma, monkeypatch, case):
    # Read once first, so both runs find the prompt in the cache alike (the last prompt
    # token is read again alone each time, and its logits do not depend on the run).
    run(gemma, prompt="The night sky over the old harbour was", max_tokens=1, temperature=0)
    text1, ids1, fast1 = sampled_run(gemma, monkeypatch, True, SAMPLED[case])
    text0, ids0, fast0 = sampled_run(gemma, monkeypatch, False, SAMPLED[case])
    assert fast0 == 0 and fast1 == len(ids1) > 0  # every draw took the fast path
    assert ids1 == ids0 and text1 == text0
    if case != "top-k 1":
        assert len(set(ids1)) > 3  # really sampled: the draws are not one greedy line


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.8, "top_k": 0},
        {"temperature": 0.8, "repeat_penalty": 1.2, "grammar": 'root ::= ("sun" | " moon")+'},
    ],
    ids=["no top-k", "a penalty and a grammar"],
)
def test_no_top_k_or_a_grammar_in_the_chain_keeps_the_whole_chain(gemma, monkeypatch, fields):
    text1, ids1, fast1 = sampled_run(gemma, monkeypatch, True, fields)
    assert fast1 == 0 and len(ids1) > 0


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
