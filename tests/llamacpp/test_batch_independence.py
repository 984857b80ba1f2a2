"""A sequence's logits do not depend on the other sequences of its step, on the real Gemma 3
270M: through the engine (a request's tokens and log-probabilities alone and while three
others generate), and through the contexts the loader builds (``loader.context_params``),
with flash attention on (the default) when a lone token gets a second row as the engine
gives it, off, and on over a key cache of another type than the values.

llama.cpp's CPU flash-attention kernel splits a lone token's KV cache between the threads
from 512 cells on, and reads 64 prompt tokens or more of one stream in tiles; both round
otherwise than its row by row computation. Controls here pin both, so that the others can
fail: the engine gives a lone token a second row (``Engine._pad``) and reads prompts in a
decode apart from the generations' (``Engine._read_prompts``)."""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")

from hoshikage_core.protocol import BlockingStream, CancelToken, GenerationRequest  # noqa: E402
from hoshikage_llamacpp.engine.batch import lone_rows  # noqa: E402
from hoshikage_llamacpp.lifecycle.loader import (  # noqa: E402
    context_params,
    flash_attention,
    pads_lone_rows,
)
from hoshikage_llamacpp.lifecycle.memory import repacked_weights  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

pytestmark = pytest.mark.gemma

STEPS = 12
#: Gemma 3 270M's key heads are 256 wide: "auto" is flash attention on.
GEMMA_HEADS = 256


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


def rows_of_the_first(
    model, n_vocab, options, prompts, path=None, pad=False, chunk=256
) -> tuple[list, list]:
    """Each prompt prefilled on its own in chunks of ``chunk``, then ``STEPS`` greedy steps
    of all of them together; the first sequence's log-probabilities at every step and the
    tokens it was fed (``path`` if given, so that a near tie drawn the other way does not
    send it elsewhere). ``pad``: a lone sequence's token gets a second row, as the engine
    gives it (``Engine._pad``)."""
    ctx = llama_cpp.llama_init_from_model(model, context_params(options, GEMMA_HEADS))
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
            for start in range(0, len(prompt) - 1, chunk):  # within n_batch
                end = min(start + chunk, len(prompt) - 1)
                decode([(prompt[i], i, seq, False) for i in range(start, end)])
        pos = [len(p) - 1 for p in prompts]
        current = [p[-1] for p in prompts]
        first, fed = [], []
        for step in range(STEPS):
            fed.append(current[0])
            items = [(current[s], pos[s], s, True) for s in range(len(prompts))]
            if pad and len(prompts) == 1:
                items.append((current[0], pos[0] + 1, 0, False))
            decode(items)
            if pad and len(prompts) == 1:
                mem = llama_cpp.llama_get_memory(ctx)
                llama_cpp.llama_memory_seq_rm(mem, 0, pos[0] + 1, -1)
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


def alone_and_beside(gemma, options, pad=False) -> float:
    """The largest difference of the first sequence's log-probabilities, over the whole
    vocabulary and every step, between decoding it alone and beside three others."""
    model, n_vocab, long, others = gemma
    alone, path = rows_of_the_first(model, n_vocab, options, [long], pad=pad)
    beside, fed = rows_of_the_first(model, n_vocab, options, [long, *others], path)
    assert fed == path
    return max(float(np.abs(a - b).max()) for a, b in zip(alone, beside, strict=True))


def cpu(**fields) -> LlamaOptions:
    # Two threads on any machine: llama.cpp splits a lone token's KV cache between them, and
    # with one the split is the row-by-row computation again.
    return LlamaOptions(n_ctx=1024, parallel=4, n_gpu_layers=0, n_threads=2, **fields)


@pytest.mark.parametrize(
    ("fields", "pad"),
    [
        ({}, True),
        ({"flash_attn": False}, False),
        ({"flash_attn": True, "type_k": "bf16"}, False),
        ({"flash_attn": True, "type_k": "q8_0"}, False),
    ],
    ids=["default-lone-token-padded", "flash-attention-off", "bf16-keys", "q8_0-keys"],
)
def test_a_sequences_logits_are_the_same_alone_and_beside_three_others(gemma, fields, pad):
    _model, _n_vocab, long, _others = gemma
    assert len(long) > 600  # past the 512 cells from which a lone token's KV is split
    options = cpu(**fields)
    assert flash_attention(options, GEMMA_HEADS) == fields.get("flash_attn", True)
    assert pads_lone_rows(options, GEMMA_HEADS) == pad
    # 0.0 on the machine it was written on; the margin is for a CPU whose matrix kernels for
    # one row and for several might round apart (llamafile's sgemm takes 2 rows or more).
    assert alone_and_beside(gemma, options, pad=pad) < 0.01


def test_a_lone_token_of_a_long_stream_without_a_second_row_depends_on_the_batch(gemma):
    # Why the engine pads. Should this fail (no difference), llama.cpp's kernel no longer
    # splits a lone token's cache, and the pad can go.
    assert alone_and_beside(gemma, cpu()) > 0.1


def test_where_a_prompt_chunk_ends_changes_its_cache_with_flash_attention(gemma):
    # Why the engine reads prompts apart from the generations, whose rows moved where a
    # chunk ended: read in chunks of 256 or of 100 (the last one then under 64 tokens, one
    # row at a time), the same prompt leaves another cache. Off, chunks from 16 tokens agree.
    model, n_vocab, long, _others = gemma

    def differ(options) -> float:
        a, path = rows_of_the_first(model, n_vocab, options, [long], pad=True)
        b, _ = rows_of_the_first(model, n_vocab, options, [long], path, pad=True, chunk=100)
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    assert differ(cpu()) > 0.01
    assert differ(cpu(flash_attn=False)) < 0.01


def test_lone_rows_follow_llamas_split_of_a_batch():
    assert lone_rows({0: 1}, 512) == [0]
    assert lone_rows({0: 2}, 512) == []
    assert lone_rows({0: 1, 1: 1, 2: 1}, 512) == []
    assert lone_rows({0: 1, 1: 2}, 512) == [1]  # 1 + 1, then 1 alone
    assert lone_rows({0: 1, 1: 3}, 512) == []  # 1 + 1, then 2
    assert lone_rows({0: 4, 1: 5, 2: 4}, 512) == [1]
    assert lone_rows({0: 513}, 512) == [0]  # 512, then 1
    assert lone_rows({0: 300, 1: 301}, 512) == [1]  # 256 + 256, 44 + 44, then 1
    assert lone_rows({0: 300, 1: 302}, 512) == []
    assert lone_rows({0: 256, 1: 257}, 512) == [1]


def test_auto_is_on_for_wide_heads_and_pads_where_several_slots_share_the_cpu():
    one = LlamaOptions(n_ctx=1024, parallel=1, n_gpu_layers=0)
    assert flash_attention(one, 256) and not pads_lone_rows(one, 256)  # no other sequence
    assert context_params(one, 256).flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    four = LlamaOptions(parallel=4, n_gpu_layers=0)
    assert flash_attention(four, 256) and pads_lone_rows(four, 256)
    assert context_params(four, 128).flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    # Heads narrower than 128: llama.cpp's CPU kernel is the slower one there (SmolLM2's 64).
    for options in (one, four):
        assert not flash_attention(options, 64) and not pads_lone_rows(options, 64)
        assert context_params(options, 64).flash_attn_type == (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
    assert flash_attention(LlamaOptions(parallel=4, n_gpu_layers=0, flash_attn=True), 64)
    off = LlamaOptions(parallel=4, n_gpu_layers=0, flash_attn=False)
    assert not flash_attention(off, 256) and not pads_lone_rows(off, 256)
    assert context_params(off, 256).flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    # An embedding model reads several inputs as sequences of one batch.
    assert not flash_attention(LlamaOptions(parallel=1, n_gpu_layers=0, embedding=True), 256)
    # Lone tokens get a second row over one f16 cache only: with keys of another type every
    # row is computed by itself anyway.
    assert not pads_lone_rows(LlamaOptions(parallel=4, n_gpu_layers=0, type_k="bf16"), 256)


def test_the_width_of_key_heads_comes_from_the_metadata(gemma_model_path, tiny_model_path):
    from hoshikage_core.gguf_info import read_info
    from hoshikage_llamacpp.lifecycle.memory import key_length

    assert key_length(read_info(str(gemma_model_path)).metadata) == GEMMA_HEADS
    assert key_length(read_info(str(tiny_model_path)).metadata) == 16  # 64 wide, 4 heads
    assert key_length({}) == 0
    # Through a load: Gemma's four slots pad lone tokens (flash attention on; its weights as
    # read, see below), the tiny model's do not (its heads are narrow: flash attention off),
    # and read prompts in micro-batches of 128 (the attention scores' matrix is llama.cpp's
    # without it).
    for path, pads, ubatch in ((gemma_model_path, True, 512), (tiny_model_path, False, 128)):
        options = LlamaOptions(n_ctx=1024, parallel=4, extra_buffers=False)
        model = LlamaCppModel.load("heads", str(path), options)
        try:
            assert model._engine._pads_lone_rows is pads
            assert model.n_ubatch == ubatch
        finally:
            model.close()


def test_where_the_weights_are_repacked_a_lone_token_gets_no_second_row(gemma_model_path, gemma):
    """llama.cpp's repacked weights (``CPU_REPACK``, by default where the CPU has kernels for
    them and safe mode allows it) take each 4 rows of a step through a matrix kernel and the
    rest through a vector kernel, which round apart on some CPUs: a token's logits then
    depend on the step's other rows with the pad too, so the engine does not pay for one."""
    options = LlamaOptions(n_ctx=1024, parallel=4, n_threads=2)
    model = LlamaCppModel.load("defaults", str(gemma_model_path), options)
    try:
        repacked, pads = repacked_weights(model.placement), model._engine._pads_lone_rows
    finally:
        model.close()
    assert pads is (repacked == 0)
    assert not pads_lone_rows(cpu(), GEMMA_HEADS, repacked=True)
    if "CPU_REPACK" not in model.placement:
        pytest.skip("no CPU_REPACK weights on this CPU: the pad is tested above")
    # Why: with the weights repacked as that load had them, a padded lone token's logits are
    # not those it gets beside three others (1.78 nats on an AMD EPYC with AVX-512). Should
    # this fail, the kernels agree on this CPU, and the pad would pay for itself here.
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    raw = llama_cpp.llama_model_load_from_file(str(gemma_model_path).encode(), params)
    try:
        _model, n_vocab, long, others = gemma
        assert alone_and_beside((raw, n_vocab, long, others), cpu(), pad=True) > 0.1
    finally:
        llama_cpp.llama_model_free(raw)


def test_without_flash_attention_a_text_model_reads_in_micro_batches_of_128():
    from hoshikage_llamacpp.lifecycle.loader import micro_batch

    four = LlamaOptions(parallel=4, n_gpu_layers=0)
    assert micro_batch(four, 64) == 128 and micro_batch(four, 256) == 512
    assert context_params(four, 64).n_ubatch == 128
    assert micro_batch(LlamaOptions(parallel=4, n_gpu_layers=0, flash_attn=True), 64) == 512
    assert micro_batch(LlamaOptions(parallel=4, n_gpu_layers=0, flash_attn=False), 256) == 128
    # as set; and 512 where a whole input or image must fit one micro-batch
    assert micro_batch(LlamaOptions(parallel=4, n_gpu_layers=0, n_ubatch=384), 64) == 384
    assert micro_batch(LlamaOptions(n_gpu_layers=0, embedding=True), 64) == 512
    assert micro_batch(LlamaOptions(n_gpu_layers=0, mmproj="/p/mmproj.gguf"), 64) == 512
    assert context_params(LlamaOptions(n_batch=64, n_gpu_layers=0), 64).n_ubatch == 64


LONG_PROMPT = " ".join(
    f"Line {i}: the fisherman counted {i * 7} fish and mended net {i}." for i in range(40)
)


def generate(model, prompt: str, max_tokens: int, speculative: bool):
    request = GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
        speculative=speculative,
        logit_bias={1: -100, 106: -100},
    )
    sink = BlockingStream()
    model.generate(request, CancelToken(), sink)
    return sink


def logprobs_of(sink) -> list:
    return [
        (lp.token, lp.logprob, tuple((t.token, t.logprob) for t in lp.top_logprobs))
        for _index, chunk in sink
        for lp in chunk.logprobs or ()
    ]


@pytest.mark.parametrize("flash_attn", ["auto", False], ids=["default", "flash-attention-off"])
def test_a_requests_log_probabilities_are_the_same_alone_and_while_three_others_generate(
    gemma_model_path, flash_attn
):
    """Through the engine, speculation off: the long prompt is read while three other
    requests generate, and then decoded beside them, from 700 cells on. (With speculation a
    step's rows cross 8 with the load, from which the weights' matrix kernels round
    otherwise, attention off or on: docs/performance.md, "Below 8 rows a step".)

    With the weights as read, as the raw tests above: llama.cpp's repacked weights
    (CPU_REPACK, on by default where a CPU has their kernels and not AMX) go through a
    matrix kernel for each 4 rows of a step and a vector kernel for the rest
    (``ggml-cpu/repack.cpp``), which round apart on some CPUs: 0.58 nats here on an AMD EPYC
    with AVX-512, 4 rows a step against 2, flash attention off 0.37."""
    speculative = False
    options = LlamaOptions(
        n_ctx=2048, parallel=4, n_threads=2, flash_attn=flash_attn, extra_buffers=False
    )
    alone_model = LlamaCppModel.load("alone", str(gemma_model_path), options)
    try:
        alone = logprobs_of(generate(alone_model, LONG_PROMPT, 24, speculative))
    finally:
        alone_model.close()
    model = LlamaCppModel.load("beside", str(gemma_model_path), options)
    try:
        others = [
            generate(model, f"Story {i}: once upon a time, by the sea,", 200, speculative)
            for i in range(3)
        ]
        for sink in others:
            next(iter(sink))  # all three generate
        beside = logprobs_of(generate(model, LONG_PROMPT, 24, speculative))
        for sink in others:
            assert [chunk for _i, chunk in sink][-1].finish_reason == "length"
    finally:
        model.close()
    assert len(alone) == len(beside) == 24
    assert [t for t, _lp, _top in alone] == [t for t, _lp, _top in beside]
    # 0.0 on the machine it was written on (the margin: see above)
    worst = max(
        abs(a - b)
        for (_t, lp_a, top_a), (_u, lp_b, top_b) in zip(alone, beside, strict=True)
        for a, b in [(lp_a, lp_b), *((x[1], y[1]) for x, y in zip(top_a, top_b, strict=True))]
    )
    assert worst < 0.01, worst
