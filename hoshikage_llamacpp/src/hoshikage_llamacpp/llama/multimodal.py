"""Images and audio through llama.cpp's multimodal library (``mtmd``, llama-server's
``--mmproj``).

A :class:`Projector` is the model's ``mmproj`` GGUF, loaded with the model in its process.
:meth:`Projector.tokenize` turns a rendered prompt whose media stand as
:data:`~hoshikage_core.protocol.MEDIA_MARKER` into one token list for the engine: text
chunks as their tokens, each media chunk as *placeholders*, negative numbers derived from
the chunk's content hash (one per embedding it becomes). The engine's prefix cache compares
token lists, so the same image in the same place matches and a different one does not,
exactly as llama-server keys its cache on chunk ids. :class:`MediaSpan` keeps the chunk
itself; the engine encodes it (``mtmd_encode_chunk``) when its slot reaches it and decodes
the embeddings into that slot's sequence (see :meth:`.engine.Engine._read_media`).

M-RoPE projectors (Qwen2-VL and later): an image's embeddings take 2-D positions and
advance the text position by fewer steps than they are embeddings (``n_pos``); the plan maps
a prompt index to its position (:meth:`.planning.Plan.position`) and mtmd's helper decodes
such a chunk with its positions.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from typing import Any

import attrs
from hoshikage_core.errors import InvalidRequest, ModelLoadError
from hoshikage_core.protocol import MEDIA_MARKER, Media

_MISMATCH = re.compile(r"text model \(n_embd = (\d+)\) and mmproj \(n_embd = (\d+)\)")
_COMPUTE = re.compile(r"compute buffer size\s*=\s*([\d.]+) MiB")
#: Placeholders are ``-(1 + k)`` with ``k`` below this: never a real token id.
_PLACEHOLDER_SPACE = 1 << 30


def placeholders(media_id: str, n: int) -> list[int]:
    """The ``n`` placeholder tokens of a media chunk whose content hash is ``media_id``."""
    import hashlib

    base = int.from_bytes(hashlib.blake2b(media_id.encode("utf-8"), digest_size=8).digest())
    return [-(1 + ((base + i) % _PLACEHOLDER_SPACE)) for i in range(n)]


def text_run(tokens: list[int]) -> list[int]:
    """``tokens`` up to the first media placeholder (a negative id, see :func:`placeholders`)."""
    for i, token in enumerate(tokens):
        if token < 0:
            return tokens[:i]
    return tokens


@attrs.define(eq=False)
class MediaSpan:
    """One media chunk of a planned prompt: tokens ``start .. end`` of it are its
    placeholders. ``chunk`` is an ``mtmd_input_chunk`` copy owned here; ``embeddings``, once
    encoded, are kept for the job's other choices."""

    start: int
    end: int
    chunk: Any
    kind: str
    embeddings: Any = None
    non_causal: bool = False
    #: Positions it advances the sequence by (less than its tokens with M-RoPE).
    n_pos: int = 0

    def free(self, mtmd) -> None:
        if self.chunk is not None:
            mtmd.mtmd_input_chunk_free(self.chunk)
            self.chunk = None


class Projector:
    """The ``mtmd`` context of one model. Tokenizing (on the caller's thread) and encoding
    (on the engine's) take turns on it."""

    def __init__(self, name: str, path: str, model, n_threads: int):
        from hoshikage_core.gguf_info import GGUFError, read_info
        from llama_cpp import mtmd_cpp

        from . import logging_bridge

        self._mtmd = mtmd_cpp
        self._lock = threading.Lock()
        self.path = path
        self._ctx = None
        try:
            kind = read_info(path).architecture
        except GGUFError as exc:
            raise ModelLoadError(name, f"mmproj {path}: {exc}") from None
        if kind != "clip":
            raise ModelLoadError(
                name,
                f"mmproj {path}: not a multimodal projector (its architecture is {kind!r},"
                " a projector's is 'clip')",
            )
        logging_bridge.install_mtmd()
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = True
        params.print_timings = False
        params.n_threads = n_threads
        params.warmup = True
        params.media_marker = MEDIA_MARKER.encode("utf-8")
        with logging_bridge.capture() as log:
            ctx = mtmd_cpp.mtmd_init_from_file(path.encode("utf-8"), model, params)
        if not ctx:
            raise ModelLoadError(name, _load_problem(path, log))
        self._ctx = ctx
        self.vision = bool(mtmd_cpp.mtmd_support_vision(ctx))
        self.audio = bool(mtmd_cpp.mtmd_support_audio(ctx))
        self.sample_rate = int(mtmd_cpp.mtmd_get_audio_sample_rate(ctx)) if self.audio else 0
        #: Whether its media take M-RoPE positions (decoded by mtmd's helper).
        self.mrope = bool(mtmd_cpp.mtmd_decode_use_mrope(ctx))
        compute = sum(float(m.group(1)) for line in log if (m := _COMPUTE.search(line)))
        #: Bytes it holds: its weights (the file) and its compute buffers.
        self.memory_bytes = os.path.getsize(path) + int(compute * 1024 * 1024)

    @property
    def modalities(self) -> tuple[str, ...]:
        return (*(("vision",) if self.vision else ()), *(("audio",) if self.audio else ()))

    def tokenize(self, prompt: str, media: tuple[Media, ...], field: str):
        """``prompt``'s tokens with placeholders for each media chunk, and the spans."""
        markers = prompt.count(MEDIA_MARKER)
        if markers != len(media):
            raise InvalidRequest(
                f"The prompt holds {markers} media markers ({MEDIA_MARKER}) for {len(media)}"
                " images or audio clips; the text must not contain the marker itself",
                field,
            )
        for item in media:
            wanted = "vision" if item.kind == "image" else "audio"
            if wanted not in self.modalities:
                raise InvalidRequest(
                    f"Invalid '{item.field}': this model's projector takes no {item.kind} input",
                    item.field,
                )
        with self._lock:
            return self._tokenize(prompt, media, field)

    def _tokenize(self, prompt: str, media: tuple[Media, ...], field: str):
        mtmd = self._mtmd
        bitmaps = []
        try:
            for item in media:
                bitmaps.append(self._bitmap(item))
        except BaseException:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
            raise
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = prompt.encode("utf-8")
            inp = mtmd.mtmd_input_text()
            inp.text = text
            inp.text_len = len(text)  # without it mtmd finds no marker
            inp.add_special = False  # BOS as for text prompts: see LlamaCppModel
            inp.parse_special = True
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(inp), array, len(bitmaps))
            if status != 0:
                what = {1: "the number of markers and media differ", 2: "preprocessing failed"}
                raise InvalidRequest(
                    "llama.cpp could not read the images or audio"
                    f" ({what.get(status, f'error {status}')})",
                    media[0].field if media else field,
                )
            return self._flatten(chunks)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _bitmap(self, item: Media):
        mtmd = self._mtmd
        if item.kind == "image":
            if len(item.data) != item.width * item.height * 3:
                raise InvalidRequest("An image's pixels do not match its size", item.field)
            buf = (ctypes.c_uint8 * len(item.data)).from_buffer_copy(item.data)
            bitmap = mtmd.mtmd_bitmap_init(item.width, item.height, buf)
        else:
            bitmap = self._audio(item)
        if not bitmap:
            raise InvalidRequest(f"llama.cpp could not take this {item.kind}", item.field)
        mtmd.mtmd_bitmap_set_id(bitmap, item.id.encode("utf-8"))
        return bitmap

    def _audio(self, item: Media):
        """An audio file's bitmap: decoded by mtmd's helper (miniaudio: WAV, MP3, FLAC) and
        resampled to the projector's rate; its length checked against ``max_seconds``."""
        mtmd = self._mtmd
        buf = (ctypes.c_uint8 * len(item.data)).from_buffer_copy(item.data)
        bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._ctx, buf, len(item.data), False)
        if not bitmap or not mtmd.mtmd_bitmap_is_audio(bitmap):
            if bitmap:
                mtmd.mtmd_bitmap_free(bitmap)
            raise InvalidRequest(
                f"Invalid '{item.field}': the bytes are not audio llama.cpp can decode (WAV, MP3"
                " or FLAC)",
                item.field,
            )
        seconds = mtmd.mtmd_bitmap_get_n_bytes(bitmap) / 4 / max(1, self.sample_rate)
        if item.max_seconds and seconds > item.max_seconds:
            mtmd.mtmd_bitmap_free(bitmap)
            raise InvalidRequest(
                f"Invalid '{item.field}': the audio is {seconds:.1f} s long, more than"
                f" {item.max_seconds:g} s (server.max_audio_seconds)",
                item.field,
            )
        return bitmap

    def _flatten(self, chunks) -> tuple[list[int], list[MediaSpan]]:
        mtmd = self._mtmd
        tokens: list[int] = []
        spans: list[MediaSpan] = []
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t(0)
                ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens.extend(ptr[k] for k in range(n.value))
                continue
            n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            media_id = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode("utf-8", "replace")
            start = len(tokens)
            tokens.extend(placeholders(media_id, n_tokens))
            spans.append(
                MediaSpan(
                    start=start,
                    end=len(tokens),
                    chunk=mtmd.mtmd_input_chunk_copy(chunk),
                    kind="image" if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE else "audio",
                    non_causal=bool(mtmd.mtmd_decode_use_non_causal(self._ctx, chunk)),
                    n_pos=int(mtmd.mtmd_input_chunk_get_n_pos(chunk)),
                )
            )
        return tokens, spans

    def encode(self, span: MediaSpan, n_embd: int):
        """The span's embeddings, ``(n_tokens, n_embd)`` float32, encoded once."""
        if span.embeddings is not None:
            return span.embeddings
        import numpy as np

        mtmd = self._mtmd
        n = span.end - span.start
        with self._lock:
            status = mtmd.mtmd_encode_chunk(self._ctx, span.chunk)
            if status != 0:
                raise InvalidRequest(f"llama.cpp could not encode an {span.kind} (error {status})")
            out = mtmd.mtmd_get_output_embd(self._ctx)
            flat = np.ctypeslib.as_array(out, shape=(n * n_embd,))
            span.embeddings = flat.reshape(n, n_embd).copy()
        return span.embeddings

    def decode(self, lctx, span: MediaSpan, pos: int, seq: int, n_batch: int) -> int:
        """Decode an encoded M-RoPE span into sequence ``seq`` at text position ``pos`` with
        mtmd's helper, which gives its embeddings their 2-D positions; llama.cpp's status."""
        mtmd = self._mtmd
        embeddings = span.embeddings
        data = embeddings.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        after = ctypes.c_int32(0)
        return int(
            mtmd.mtmd_helper_decode_image_chunk(
                self._ctx,
                lctx,
                span.chunk,
                data,
                pos,
                seq,
                n_batch,
                ctypes.byref(after),
                mtmd.mtmd_helper_post_decode_callback(),  # none: a NULL function pointer
                None,
            )
        )

    def free(self, spans) -> None:
        for span in spans:
            span.free(self._mtmd)

    def close(self) -> None:
        if self._ctx:
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None


def _load_problem(path: str, log: list[str]) -> str:
    """Why ``mtmd_init_from_file`` gave nothing, from what it logged."""
    text = "".join(log)
    mismatch = _MISMATCH.search(text)
    if mismatch:
        return (
            f"{path}: the projector's embedding width {mismatch.group(2)} does not match the"
            f" model's {mismatch.group(1)} (a projector made for another model?)"
        )
    errors = [line.strip() for line in log if "error" in line.lower() or "fail" in line.lower()]
    detail = f" ({errors[-1]})" if errors else ""
    return f"{path}: llama.cpp could not load the projector{detail}"


def decode_span(lib, ctx, embeddings, pos: int, seq: int, n_batch: int, non_causal: bool) -> int:
    """Decode ``embeddings`` (one row per token) into sequence ``seq`` at ``pos..``, in
    batches of ``n_batch``; llama.cpp's status (0: done)."""
    n, n_embd = embeddings.shape
    batch = lib.llama_batch_init(min(n, n_batch), n_embd, 1)
    try:
        if non_causal:
            lib.llama_set_causal_attn(ctx, False)
        for offset in range(0, n, n_batch):
            k = min(n_batch, n - offset)
            rows = embeddings[offset : offset + k]
            ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
            for i in range(k):
                batch.pos[i] = pos + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = 0
            batch.n_tokens = k
            status = lib.llama_decode(ctx, batch)
            if status != 0:
                return status
        return 0
    finally:
        if non_causal:
            lib.llama_set_causal_attn(ctx, True)
        lib.llama_batch_free(batch)
