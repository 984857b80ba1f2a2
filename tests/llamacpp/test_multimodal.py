"""Images through llama.cpp's real ``mtmd`` with the tiny model and a tiny random projector
of clip.cpp's LLaVA type (tests/support/projectors.py): each image becomes 4 embeddings,
encoded by the projector and decoded into the slot's sequence by the batched engine."""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.errors import InvalidRequest, ModelLoadError  # noqa: E402
from hoshikage_core.protocol import MEDIA_MARKER, GenerationRequest, stream  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

from tests.support.projectors import build_clip_projector, image_media  # noqa: E402

RED, BLUE = (200, 40, 40), (30, 60, 220)
#: Embeddings per image of the tiny projector (28-pixel images, 14-pixel patches).
PER_IMAGE = 4


@pytest.fixture(scope="module")
def model(tiny_vision_dir):
    m = LlamaCppModel.load(
        "tiny-vision",
        str(tiny_vision_dir / "tiny-vision.gguf"),
        LlamaOptions(
            n_ctx=512, parallel=2, mmproj=str(tiny_vision_dir / "mmproj-tiny-vision.gguf")
        ),
    )
    yield m
    m.close()


def ask(model, content, media, n=1, **fields):
    request = GenerationRequest(
        messages=({"role": "user", "content": content},),
        media=tuple(media),
        **{"max_tokens": 6, "temperature": 0, **fields},
    )
    chunks = {}
    for index, chunk in stream(model, request, None, n=n):
        chunks.setdefault(index, []).append(chunk)
    return [("".join(c.text for c in cs), cs[-1]) for _, cs in sorted(chunks.items())]


def test_the_projector_loads_beside_the_model(model, tiny_vision_dir):
    assert model.modalities == ("vision",)
    projector = tiny_vision_dir / "mmproj-tiny-vision.gguf"
    assert model.projector.memory_bytes >= projector.stat().st_size
    bare = LlamaCppModel.load(
        "bare", str(tiny_vision_dir / "tiny-vision.gguf"), LlamaOptions(n_ctx=512, parallel=2)
    )
    try:
        assert bare.modalities == ()
        # its memory figure counts the projector's beside the weights
        weights = (tiny_vision_dir / "tiny-vision.gguf").stat().st_size
        assert model.memory_bytes() >= weights + model.projector.memory_bytes
    finally:
        bare.close()


def test_an_image_grows_the_context_by_its_chunk(model):
    text_only = model.prompt_tokens(model.chat.render([{"role": "user", "content": "hello "}]))
    tokens, spans = model.media_prompt_tokens(
        model.chat.render([{"role": "user", "content": f"hello {MEDIA_MARKER}"}]),
        (image_media(RED),),
        "messages",
    )
    model.projector.free(spans)
    assert len(spans) == 1
    assert spans[0].end - spans[0].start == PER_IMAGE
    assert len(tokens) == len(text_only) + PER_IMAGE
    before = model._engine.media_chunks
    [(text, last)] = ask(model, f"hello {MEDIA_MARKER}", [image_media(RED)])
    assert last.finish_reason in ("stop", "length")
    assert last.prompt_tokens == len(text_only) + PER_IMAGE
    assert model._engine.media_chunks == before + 1


def test_the_same_image_again_hits_the_cache_and_another_does_not(model):
    content = f"the cat {MEDIA_MARKER} sat"
    before = model._engine.media_chunks
    [(first, read)] = ask(model, content, [image_media(RED)])
    assert model._engine.media_chunks == before + 1
    assert read.cached_tokens < read.prompt_tokens - 1
    [(again, last)] = ask(model, content, [image_media(RED)])
    # everything but the last prompt token came from the slot's cache, the image included
    assert last.cached_tokens == last.prompt_tokens - 1
    assert model._engine.media_chunks == before + 1  # not read again
    assert again == first
    [(_, other)] = ask(model, content, [image_media(BLUE)])
    # a different image: the cache ends where the image starts
    assert other.cached_tokens < other.prompt_tokens - 1 - PER_IMAGE + 1
    assert model._engine.media_chunks == before + 2


def test_an_image_changes_what_the_model_says(model):
    red = ask(model, f"hello {MEDIA_MARKER}", [image_media(RED)], max_tokens=12)[0][0]
    blue = ask(model, f"hello {MEDIA_MARKER}", [image_media(BLUE)], max_tokens=12)[0][0]
    plain = ask(model, "hello", [], max_tokens=12)[0][0]
    assert len({red, blue, plain}) > 1


def test_two_images_in_one_message_and_one_in_a_later_turn(model):
    content = f"{MEDIA_MARKER} the red cat {MEDIA_MARKER}"
    media = (image_media(RED), image_media(BLUE))
    tokens, spans = model.media_prompt_tokens(
        model.chat.render([{"role": "user", "content": content}]), media, "messages"
    )
    model.projector.free(spans)
    assert [s.end - s.start for s in spans] == [PER_IMAGE, PER_IMAGE]
    before = model._engine.media_chunks
    [(text, last)] = ask(model, content, media)
    assert last.prompt_tokens == len(tokens)
    assert model._engine.media_chunks == before + 2
    request = GenerationRequest(
        messages=(
            {"role": "user", "content": f"hello {MEDIA_MARKER}"},
            {"role": "assistant", "content": "red"},
            {"role": "user", "content": f"and {MEDIA_MARKER}"},
        ),
        media=(image_media(RED), image_media(BLUE)),
        max_tokens=4,
        temperature=0,
    )
    chunks = [c for _, c in stream(model, request, None)]
    assert chunks[-1].finish_reason in ("stop", "length")


def test_n_choices_with_an_image_agree_at_temperature_zero(model):
    choices = ask(model, f"two {MEDIA_MARKER}", [image_media(BLUE)], n=3)
    assert len(choices) == 3
    assert len({text for text, _ in choices}) == 1
    assert {last.prompt_tokens for _, last in choices} == {choices[0][1].prompt_tokens}


def test_speculation_off_gives_the_same_answer(model):
    on = ask(model, f"one {MEDIA_MARKER} one", [image_media(RED)], max_tokens=16)[0][0]
    off = ask(
        model, f"one {MEDIA_MARKER} one", [image_media(RED)], max_tokens=16, speculative=False
    )[0][0]
    assert on == off


def test_an_image_for_a_text_only_model_names_the_field(tiny_vision_dir):
    bare = LlamaCppModel.load(
        "bare", str(tiny_vision_dir / "tiny-vision.gguf"), LlamaOptions(n_ctx=512)
    )
    try:
        with pytest.raises(InvalidRequest) as err:
            ask(bare, f"hi {MEDIA_MARKER}", [image_media(RED, field="messages[0].content[1]")])
        assert err.value.param == "messages[0].content[1]"
        assert "no image input" in str(err.value) or "projector" in str(err.value)
    finally:
        bare.close()


def test_markers_and_images_must_agree(model):
    with pytest.raises(InvalidRequest) as err:
        ask(model, "no marker here", [image_media(RED)])
    assert err.value.param == "messages"
    with pytest.raises(InvalidRequest):
        ask(model, f"{MEDIA_MARKER}{MEDIA_MARKER}", [image_media(RED)])


def test_more_images_than_the_context_holds(tiny_vision_dir):
    small = LlamaCppModel.load(
        "small",
        str(tiny_vision_dir / "tiny-vision.gguf"),
        LlamaOptions(
            n_ctx=256, parallel=1, mmproj=str(tiny_vision_dir / "mmproj-tiny-vision.gguf")
        ),
    )
    try:
        count = small.n_ctx // PER_IMAGE + 1
        media = [image_media((i % 250, i // 250, 0), field=f"images[{i}]") for i in range(count)]
        with pytest.raises(InvalidRequest) as err:
            ask(small, MEDIA_MARKER * count, media)
        assert "context" in str(err.value)
        # the first image that does not fit
        assert err.value.param.startswith("images[") and err.value.param != "images[0]"
    finally:
        small.close()


def test_a_projector_of_another_width_is_a_load_error_naming_both(tiny_vision_dir, tmp_path):
    wide = build_clip_projector(tmp_path / "mmproj-wide.gguf", n_embd_text=640)
    with pytest.raises(ModelLoadError) as err:
        LlamaCppModel.load(
            "mismatch",
            str(tiny_vision_dir / "tiny-vision.gguf"),
            LlamaOptions(n_ctx=512, mmproj=str(wide)),
        )
    assert "640" in str(err.value) and "64" in str(err.value)
    assert "width" in str(err.value)


@pytest.mark.gemma
def test_a_projector_for_gemma_reads_an_image_into_its_context(gemma_model_path, tmp_path):
    projector = build_clip_projector(tmp_path / "mmproj-gemma.gguf", n_embd_text=640)
    gemma = LlamaCppModel.load(
        "gemma", str(gemma_model_path), LlamaOptions(n_ctx=512, mmproj=str(projector))
    )
    try:
        assert gemma.modalities == ("vision",)
        request = GenerationRequest(
            prompt=f"Look: {MEDIA_MARKER} It shows",
            media=(image_media(RED),),
            max_tokens=4,
            temperature=0,
        )
        chunks = [c for _, c in stream(gemma, request, None)]
        plain = len(gemma.prompt_tokens("Look:  It shows"))
        assert chunks[-1].prompt_tokens in (plain + PER_IMAGE, plain + PER_IMAGE + 1)
        assert gemma._engine.media_chunks == 1
    finally:
        gemma.close()


#: Embeddings per 30-second chunk of the tiny audio projector (Qwen2-Audio type).
PER_CLIP = 750


def audio_media(data: bytes, field: str = "messages", max_seconds: float = 0.0):
    import hashlib

    from hoshikage_core.protocol import Media

    return Media(
        kind="audio",
        data=data,
        id=hashlib.sha256(data).hexdigest(),
        field=field,
        max_seconds=max_seconds,
    )


@pytest.fixture(scope="module")
def hearing(tiny_audio_dir):
    m = LlamaCppModel.load(
        "tiny-audio",
        str(tiny_audio_dir / "tiny-audio.gguf"),
        LlamaOptions(n_ctx=2048, parallel=1, mmproj=str(tiny_audio_dir / "mmproj-tiny-audio.gguf")),
    )
    yield m
    m.close()


def test_audio_reaches_the_context_and_is_cached(hearing):
    from tests.support.projectors import wav_bytes

    assert hearing.modalities == ("audio",)
    assert hearing.projector.sample_rate == 16000
    tone = audio_media(wav_bytes(1.0, rate=22050))  # resampled by mtmd to 16 kHz
    plain = ask(hearing, "hello", [])[0][1]
    [(_, heard)] = ask(hearing, f"hello {MEDIA_MARKER}", [tone])
    # the clip's embeddings, plus Qwen2-Audio's <|audio_bos|> and <|audio_eos|> as text
    assert heard.prompt_tokens >= plain.prompt_tokens + PER_CLIP
    [(_, again)] = ask(hearing, f"hello {MEDIA_MARKER}", [tone])
    assert again.cached_tokens == again.prompt_tokens - 1


def test_bad_audio_names_the_field(hearing, tiny_vision_dir):
    from tests.support.projectors import png_bytes, wav_bytes

    with pytest.raises(InvalidRequest) as err:
        ask(hearing, f"x {MEDIA_MARKER}", [audio_media(b"RIFF....not a wave", field="a[0]")])
    assert err.value.param == "a[0]" and "WAV, MP3" in str(err.value)
    with pytest.raises(InvalidRequest) as err:
        ask(hearing, f"x {MEDIA_MARKER}", [audio_media(png_bytes(), field="a[1]")])
    assert err.value.param == "a[1]"
    with pytest.raises(InvalidRequest) as err:
        ask(
            hearing, f"x {MEDIA_MARKER}", [audio_media(wav_bytes(3.0), field="a[2]", max_seconds=2)]
        )
    assert err.value.param == "a[2]" and "max_audio_seconds" in str(err.value)
    # an image for an audio-only projector, and audio for a vision-only one
    with pytest.raises(InvalidRequest) as err:
        ask(hearing, f"x {MEDIA_MARKER}", [image_media(RED, field="img")])
    assert err.value.param == "img"


def test_cancel_while_an_image_is_encoded(tiny_vision_dir, tmp_path):
    """A projector whose encode takes a while (672-pixel images: 2304 patches): a request
    cancelled at once ends as cancelled and its image's embeddings are never decoded."""
    from hoshikage_core.protocol import CancelToken

    big = build_clip_projector(
        tmp_path / "mmproj-big.gguf", image_size=672, width=128, n_block=4, n_ff=256
    )
    m = LlamaCppModel.load(
        "big",
        str(tiny_vision_dir / "tiny-vision.gguf"),
        LlamaOptions(n_ctx=4096, parallel=1, mmproj=str(big)),
    )
    try:
        cancel = CancelToken()
        request = GenerationRequest(
            prompt=f"a {MEDIA_MARKER} b", media=(image_media(RED),), max_tokens=4
        )
        chunks = stream(m, request, cancel)
        cancel.cancel()
        last = [c for _, c in chunks][-1]
        assert last.finish_reason == "cancelled"
        assert m._engine.media_chunks == 0
        # the model goes on serving: the same request, not cancelled, reads the image
        chunks = [c for _, c in stream(m, request)]
        assert chunks[-1].finish_reason in ("stop", "length")
        assert m._engine.media_chunks == 1
    finally:
        m.close()


@pytest.mark.gemma
def test_a_gemma3_type_projector_is_decoded_non_causally_between_gemmas_image_tokens(
    gemma_model_path, tmp_path
):
    """clip.cpp's Gemma 3 type (SigLIP, pooled, soft-embedding norm) beside the real Gemma 3
    270M: mtmd wraps the image in Gemma's own <start_of_image> and <end_of_image>, and its
    embeddings are decoded non-causally."""
    from tests.support.projectors import build_gemma3_projector

    projector = build_gemma3_projector(tmp_path / "mmproj-gemma3.gguf")
    gemma = LlamaCppModel.load(
        "gemma", str(gemma_model_path), LlamaOptions(n_ctx=1024, parallel=2, mmproj=str(projector))
    )
    try:
        prompt = f"Look: {MEDIA_MARKER} It shows"
        tokens, spans = gemma.media_prompt_tokens(prompt, (image_media(RED),), "prompt")
        gemma.projector.free(spans)
        [span] = spans
        assert span.non_causal and span.end - span.start == PER_IMAGE
        start_of_image, end_of_image = (
            gemma.special_tokens("<start_of_image>"),
            gemma.special_tokens("<end_of_image>"),
        )
        assert tokens[span.start - 1 : span.start] == start_of_image
        assert tokens[span.end : span.end + 1] == end_of_image
        request = GenerationRequest(
            prompt=prompt, media=(image_media(RED),), max_tokens=4, temperature=0
        )
        first = [c for _, c in stream(gemma, request)]
        again = [c for _, c in stream(gemma, request)]
        assert first[-1].prompt_tokens == len(tokens)
        assert again[-1].cached_tokens == len(tokens) - 1
        assert "".join(c.text for c in again) == "".join(c.text for c in first)
        assert gemma._engine.media_chunks == 1
    finally:
        gemma.close()


@pytest.mark.gemma
def test_a_non_causal_image_larger_than_n_ubatch_is_refused(gemma_model_path, tmp_path):
    from tests.support.projectors import build_gemma3_projector

    projector = build_gemma3_projector(tmp_path / "mmproj-gemma3-big.gguf", image_size=224)
    gemma = LlamaCppModel.load(
        "gemma",
        str(gemma_model_path),
        LlamaOptions(n_ctx=1024, parallel=1, n_batch=32, n_ubatch=32, mmproj=str(projector)),
    )
    try:
        request = GenerationRequest(
            prompt=f"Look: {MEDIA_MARKER} here",
            media=(image_media(RED, field="images[0]"),),
            max_tokens=2,
        )
        with pytest.raises(InvalidRequest) as err:
            list(stream(gemma, request))
        assert err.value.param == "images[0]" and "n_ubatch" in str(err.value)
    finally:
        gemma.close()


# ---- M-RoPE (Qwen2-VL type) --------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_vl_dir(tmp_path_factory):
    from tests.support.projectors import build_qwen2vl_projector, build_qwen2vl_text_model

    folder = tmp_path_factory.mktemp("qwen2vl")
    build_qwen2vl_text_model(folder / "tiny-qwen2vl.gguf")
    build_qwen2vl_projector(folder / "mmproj-tiny-qwen2vl.gguf")
    return folder


def reference_greedy(folder, prompt: str, image, n: int) -> list[int]:
    """What llama.cpp's own helper makes of ``prompt`` with ``image``: the whole prompt
    evaluated by ``mtmd_helper_eval_chunks`` (which places M-RoPE positions itself) in a
    fresh context, then ``n`` greedy tokens, each with its log-probability."""
    import ctypes

    import numpy as np
    from llama_cpp import mtmd_cpp as mtmd

    lib = llama_cpp
    model = lib.llama_model_load_from_file(
        str(folder / "tiny-qwen2vl.gguf").encode(), lib.llama_model_default_params()
    )
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 1024, 512, 512
    ctx = lib.llama_init_from_model(model, params)
    mp = mtmd.mtmd_context_params_default()
    mp.use_gpu, mp.n_threads = False, 2
    mctx = mtmd.mtmd_init_from_file(str(folder / "mmproj-tiny-qwen2vl.gguf").encode(), model, mp)
    try:
        buf = (ctypes.c_uint8 * len(image.data)).from_buffer_copy(image.data)
        bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, buf)
        text = prompt.encode()
        inp = mtmd.mtmd_input_text()
        inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), True, True
        chunks = mtmd.mtmd_input_chunks_init()
        array = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd.mtmd_tokenize(mctx, chunks, ctypes.byref(inp), array, 1) == 0
        n_past = lib.llama_pos(0)
        assert (
            mtmd.mtmd_helper_eval_chunks(mctx, ctx, chunks, 0, 0, 512, True, ctypes.byref(n_past))
            == 0
        )
        vocab = lib.llama_model_get_vocab(model)
        n_vocab = lib.llama_vocab_n_tokens(vocab)
        out, pos = [], n_past.value
        batch = lib.llama_batch_init(1, 0, 1)
        for _ in range(n):
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            token = int(np.argmax(logits))
            if lib.llama_vocab_is_eog(vocab, token):
                break
            shifted = logits.astype(np.float64) - logits.max()
            out.append((token, float(shifted[token] - np.log(np.exp(shifted).sum()))))
            batch.n_tokens = 1
            batch.token[0], batch.pos[0], batch.n_seq_id[0] = token, pos, 1
            batch.seq_id[0][0], batch.logits[0] = 0, 1
            assert lib.llama_decode(ctx, batch) == 0
            pos += 1
        lib.llama_batch_free(batch)
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        return out
    finally:
        mtmd.mtmd_free(mctx)
        lib.llama_free(ctx)
        lib.llama_model_free(model)


def test_m_rope_images_take_their_own_positions(qwen_vl_dir):
    """A Qwen2-VL-type projector: a 32-pixel image becomes 9 embeddings over 3 positions. The
    engine's answer (fresh, then from the cached prefix with more text after it, with and
    without speculation, and as one of n choices) is exactly what llama.cpp's own helper
    gives for the same prompt."""
    from tests.support.projectors import image_media as media

    model = LlamaCppModel.load(
        "qwen-vl",
        str(qwen_vl_dir / "tiny-qwen2vl.gguf"),
        LlamaOptions(n_ctx=1024, parallel=2, mmproj=str(qwen_vl_dir / "mmproj-tiny-qwen2vl.gguf")),
    )
    try:
        assert model.projector.mrope
        image = media(RED)
        prompt = f"the cat {MEDIA_MARKER} sat on the"
        tokens, spans = model.media_prompt_tokens(prompt, (image,), "prompt")
        model.projector.free(spans)
        [span] = spans
        assert (span.end - span.start, span.n_pos) == (9, 3)

        def ours(text: str, **fields) -> tuple[list, object]:
            request = GenerationRequest(
                prompt=text, media=(image,), max_tokens=8, temperature=0, logprobs=True, **fields
            )
            chunks = [c for _, c in stream(model, request)]
            return [lp.logprob for c in chunks for lp in c.logprobs or ()], chunks[-1]

        def matches(got: list, text: str) -> bool:
            # the same tokens, each as likely as in llama.cpp's own evaluation: a position
            # off by the image's saving changes them (the text after it is rotated wrongly)
            expected = reference_greedy(qwen_vl_dir, text, image, 8)
            return len(got) == len(expected) and all(
                abs(a - b) < 1e-3 for a, (_, b) in zip(got, expected, strict=True)
            )

        got, first = ours(prompt)
        assert first.prompt_tokens == len(tokens)
        assert matches(got, prompt)
        again, cached = ours(prompt, speculative=False)
        assert cached.cached_tokens == cached.prompt_tokens - 1 and matches(again, prompt)
        longer = prompt + " the mat"
        got_longer, reused = ours(longer)
        assert reused.cached_tokens >= span.end  # the image's KV was reused
        assert matches(got_longer, longer)
        # n = 2: the second choice continues from the copied KV, at the same positions
        request = GenerationRequest(
            prompt=longer, media=(image,), max_tokens=8, temperature=0, logprobs=True
        )
        choices: dict = {}
        for index, chunk in stream(model, request, None, n=2):
            choices.setdefault(index, []).extend(lp.logprob for lp in chunk.logprobs or ())
        assert all(matches(choices[i], longer) for i in (0, 1))
    finally:
        model.close()


def test_a_large_image_is_read_over_several_steps_beside_other_streams(tiny_vision_dir, tmp_path):
    """An image of 2304 embeddings with n_batch 512 goes into its slot 512 at a time, one
    batch per step, so a stream generating beside it gets a token every step; its answer is
    the same as when it runs alone."""
    import threading

    big = build_clip_projector(tmp_path / "mmproj-672.gguf", image_size=672)
    request = GenerationRequest(
        prompt=f"a {MEDIA_MARKER} b", media=(image_media(BLUE),), max_tokens=6, temperature=0
    )

    def run(beside: bool):
        m = LlamaCppModel.load(
            "big",
            str(tiny_vision_dir / "tiny-vision.gguf"),
            LlamaOptions(n_ctx=4096, parallel=2, n_batch=512, n_ubatch=512, mmproj=str(big)),
        )
        try:
            streamed: list = []
            side = None
            if beside:  # a text stream already generating when the image arrives
                text = GenerationRequest(
                    prompt="the cat", max_tokens=200, temperature=0, speculative=False
                )
                started = threading.Event()

                def consume():
                    for _, chunk in stream(m, text):
                        streamed.append(chunk)
                        started.set()

                side = threading.Thread(target=consume)
                side.start()
                assert started.wait(30)
            before = m._engine.media_batches
            chunks = [c for _, c in stream(m, request)]
            steps = m._engine.media_batches - before
            if side is not None:
                side.join(60)
                assert streamed[-1].finish_reason in ("stop", "length")
            return "".join(c.text for c in chunks), chunks[-1], steps
        finally:
            m.close()

    alone, last, steps = run(beside=False)
    assert last.prompt_tokens > 2304
    assert steps == 5  # 512 embeddings per step: 4 × 512 + 256
    beside, _, _ = run(beside=True)
    assert beside == alone


def test_an_image_stays_warm_across_an_unload_in_the_disk_cache(
    tiny_vision_dir, tmp_path, monkeypatch
):
    """The slot state written at unload keeps the image's KV under its content's
    placeholders: loaded again, the same conversation with the same image reads only its new
    turn; a projector written again (another file) is another cache."""
    import time as _time

    from hoshikage_llamacpp.engine.cache import disk as disk_cache

    monkeypatch.setenv("HOSHIKAGE_PROMPT_CACHE", str(tmp_path / "prompts"))
    projector = tmp_path / "mmproj-disk.gguf"
    build_clip_projector(projector)
    options = LlamaOptions(n_ctx=1024, parallel=2, cache_disk=64, mmproj=str(projector))
    path = str(tiny_vision_dir / "tiny-vision.gguf")
    system = {"role": "system", "content": "the cat sat on the mat " * 20}
    first = [system, {"role": "user", "content": f"hello {MEDIA_MARKER}"}]

    def run(model, messages):
        request = GenerationRequest(
            messages=tuple(messages), media=(image_media(RED),), max_tokens=4, temperature=0
        )
        chunks = [c for _, c in stream(model, request)]
        return "".join(c.text for c in chunks), chunks[-1]

    model = LlamaCppModel.load("tiny", path, options)
    answer, turn1 = run(model, first)
    folder = model.disk.folder
    model.close()
    disk_cache.wait_for_writer(folder)
    second = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "yes"}]
    again = LlamaCppModel.load("tiny", path, options)
    try:
        _, turn2 = run(again, second)
        assert turn2.cached_tokens >= turn1.prompt_tokens  # the image came back from disk
        assert again._engine.media_chunks == 0  # and was not encoded again
    finally:
        again.close()
    _time.sleep(0.01)
    build_clip_projector(projector, seed=99)  # the same path, another projector
    assert disk_cache.cache_key(path, options) != disk_cache.cache_key(
        path, LlamaOptions(n_ctx=1024, parallel=2, cache_disk=64)
    )
    fresh = LlamaCppModel.load("tiny", path, options)
    try:
        _, other = run(fresh, second)
        assert other.cached_tokens == 0
    finally:
        fresh.close()


def test_a_missing_or_wrong_projector_is_a_load_error_naming_it(tiny_vision_dir, tmp_path):
    path = str(tiny_vision_dir / "tiny-vision.gguf")
    for mmproj, words in (
        (tmp_path / "absent.gguf", "file not found"),
        (tiny_vision_dir / "tiny-vision.gguf", "not a multimodal projector"),
    ):
        with pytest.raises(ModelLoadError) as err:
            LlamaCppModel.load("wrong", path, LlamaOptions(n_ctx=512, mmproj=str(mmproj)))
        assert f"mmproj {mmproj}" in str(err.value) and words in str(err.value)
