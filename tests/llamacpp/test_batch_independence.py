"""A sequence's logits do not depend on the other sequences of its step, on the real Gemma 3
270M through the contexts the loader builds (``loader.context_params``): with flash attention
off (the CPU's default) and with it on over a key cache of another type than the values
(``docs/performance.md``, "Flash attention with a key cache of another type"). llama.cpp's
CPU kernel over one f16 cache for both takes a split of the KV cache for a lone token from
512 cells on, which a test here pins, so that the others can fail. With one slot no other
sequence shares a step, and ``"auto"`` turns it on."""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")

from hoshikage_llamacpp.lifecycle.loader import context_params, flash_attention  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

pytestmark = pytest.mark.gemma

STEPS = 12


@pytest.fixture(scope="module")
def gemma(gemma_model_path):
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = False  # AMX machines: see lifecycle/safe_mode.py
    params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(gemma_model_path).encode(), params)
    vocab = llama_cpp.llama_model_get_vocab(model)

    def tokens(text: str) -> list[int]:
        buf = (llama_cpp.llama_token * 4096)()
        n = llama_cpp.llama_tokenize(
            vocab, text.encode(), len(text.encode()), buf, 4096, True, False
        )
        assert n > 0
        return list(buf[:n])

    long = tokens(
        " ".join(
            f"Line {i}: the fisherman counted {i * 7} fish and mended net {i}." for i in range(32)
        )
        + " Once upon a time"
    )
    others = [tokens(f"Other {i}: a short note about boats and the sea") for i in range(3)]
    yield model, llama_cpp.llama_vocab_n_tokens(vocab), long, others
    llama_cpp.llama_model_free(model)


def rows_of_the_first(model, n_vocab, options, prompts, path=None) -> tuple[list, list]:
    """Each prompt prefilled on its own, then ``STEPS`` greedy steps of all of them together;
    the first sequence's log-probabilities at every step and the tokens it was fed (``path``
    if given, so that a near tie drawn the other way does not send it elsewhere)."""
    ctx = llama_cpp.llama_init_from_model(model, context_params(options))
    batch = llama_cpp.llama_batch_init(256, 0, 1)

    def decode(items):
        batch.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        assert llama_cpp.llama_decode(ctx, batch) == 0

    def row(i):
        x = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
        x = x.astype(np.float64)
        return x - x.max() - np.log(np.exp(x - x.max()).sum())

    try:
        for seq, prompt in enumerate(prompts):
            for start in range(0, len(prompt) - 1, 256):  # within n_batch
                end = min(start + 256, len(prompt) - 1)
                decode([(prompt[i], i, seq, False) for i in range(start, end)])
        pos = [len(p) - 1 for p in prompts]
        current = [p[-1] for p in prompts]
        first, fed = [], []
        for step in range(STEPS):
            fed.append(current[0])
            decode([(current[s], pos[s], s, True) for s in range(len(prompts))])
            rows = [row(s) for s in range(len(prompts))]
            first.append(rows[0])
            current = [int(r.argmax()) for r in rows]
            if path is not None and step + 1 < STEPS:
                current[0] = path[step + 1]
            pos = [p + 1 for p in pos]
        return first, fed
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def alone_and_beside(gemma, options) -> float:
    """The largest difference of the first sequence's log-probabilities, over the whole
    vocabulary and every step, between decoding it alone and beside three others."""
    model, n_vocab, long, others = gemma
    alone, path = rows_of_the_first(model, n_vocab, options, [long])
    beside, fed = rows_of_the_first(model, n_vocab, options, [long, *others], path)
    assert fed == path
    return max(float(np.abs(a - b).max()) for a, b in zip(alone, beside, strict=True))


def cpu(**fields) -> LlamaOptions:
    # Two threads on any machine: llama.cpp splits a lone token's KV cache between them, and
    # with one the split is the row-by-row computation again.
    return LlamaOptions(n_ctx=1024, parallel=4, n_gpu_layers=0, n_threads=2, **fields)


@pytest.mark.parametrize(
    "fields",
    [{}, {"flash_attn": True, "type_k": "bf16"}, {"flash_attn": True, "type_k": "q8_0"}],
    ids=["default", "flash-attention-bf16-keys", "flash-attention-q8_0-keys"],
)
def test_a_sequences_logits_are_the_same_alone_and_beside_three_others(gemma, fields):
    _model, _n_vocab, long, _others = gemma
    assert len(long) > 600  # past the 512 cells from which a lone token's KV is split
    options = cpu(**fields)
    assert flash_attention(options) == bool(fields)
    # 0.0 on the machine it was written on; the margin is for a CPU whose matrix kernels for
    # one row and for several might round apart (llamafile's sgemm takes 2 rows or more).
    assert alone_and_beside(gemma, options) < 0.01


def test_flash_attention_over_one_f16_cache_depends_on_the_batch(gemma):
    # Why "auto" keeps it off on the CPU. Should this fail (no difference), llama.cpp's kernel
    # no longer splits a lone token's cache, and the default can be measured again.
    assert alone_and_beside(gemma, cpu(flash_attn=True)) > 0.1


def test_auto_is_on_only_where_no_other_sequence_shares_a_step():
    one = LlamaOptions(n_ctx=1024, parallel=1, n_gpu_layers=0)
    assert flash_attention(one)
    assert context_params(one).flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert not flash_attention(LlamaOptions(parallel=2, n_gpu_layers=0))
    assert not flash_attention(LlamaOptions(parallel=1, n_gpu_layers=0, flash_attn=False))
    # An embedding model reads several inputs as sequences of one batch.
    assert not flash_attention(LlamaOptions(parallel=1, n_gpu_layers=0, embedding=True))
