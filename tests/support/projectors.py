"""Test projectors: tiny random multimodal projector GGUFs that the pinned ``mtmd`` loads.

No real vision model with its projector is installable here, so the tests write one with the
``gguf`` package, as llama.cpp's ``tools/mtmd/clip.cpp`` reads it: clip.cpp's LLaVA type
(``clip.projector_type = "mlp"``), a ViT tower of ``n_block`` blocks ``width`` wide over a
``image_size``-pixel square cut into ``patch_size`` patches, then the two-layer MLP
(``mm.0``, GELU, ``mm.2``) whose output width is the text model's embedding width. With the
defaults (28-pixel images, 14-pixel patches) every image becomes 4 embeddings.

The weights are random, so what the model "sees" is noise; the path is real: mtmd decodes
the bitmap, preprocesses it, runs the tower, and the embeddings go into the text model.
"""

from __future__ import annotations

import os
from pathlib import Path


def build_clip_projector(
    path: str | os.PathLike,
    *,
    n_embd_text: int = 64,
    image_size: int = 28,
    patch_size: int = 14,
    width: int = 32,
    n_block: int = 2,
    n_head: int = 4,
    n_ff: int = 64,
    seed: int = 4321,
) -> Path:
    """Write a LLaVA-type CLIP projector GGUF whose projection width is ``n_embd_text``.

    ``n_embd_text`` must equal the text model's ``embedding_length`` (64 for the tiny
    fixtures, 640 for Gemma 3 270M); a different width is what mtmd rejects as a mismatch.
    """
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    n_patches = (image_size // patch_size) ** 2
    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "clip")
    writer.add_name("hoshikage-tiny-projector")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.block_count", n_block)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    # numpy shapes are ggml's ne reversed: the patch kernel is ne [p, p, 3, width].
    writer.add_tensor("v.patch_embd.weight", weights(width, 3, patch_size, patch_size))
    writer.add_tensor("v.position_embd.weight", weights(n_patches, width))
    writer.add_tensor("v.pre_ln.weight", ones(width))
    writer.add_tensor("v.pre_ln.bias", zeros(width))
    for i in range(n_block):
        block = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{block}.{name}.weight", weights(width, width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{block}.{name}.weight", ones(width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, width))
        writer.add_tensor(f"{block}.ffn_up.bias", zeros(n_ff))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(width, n_ff))
        writer.add_tensor(f"{block}.ffn_down.bias", zeros(width))
    writer.add_tensor("mm.0.weight", weights(n_embd_text, width, scale=0.2))
    writer.add_tensor("mm.0.bias", zeros(n_embd_text))
    writer.add_tensor("mm.2.weight", weights(n_embd_text, n_embd_text, scale=0.2))
    writer.add_tensor("mm.2.bias", zeros(n_embd_text))

    return _written(writer, tmp, path)


def build_gemma3_projector(
    path: str | os.PathLike,
    *,
    n_embd_text: int = 640,
    image_size: int = 56,
    patch_size: int = 14,
    merge: int = 2,
    width: int = 32,
    n_block: int = 2,
    n_head: int = 4,
    n_ff: int = 64,
    seed: int = 2468,
) -> Path:
    """Write a Gemma 3-type projector GGUF (``clip.projector_type = "gemma3"``): a SigLIP
    tower, an average pool of ``merge`` × ``merge`` patches, a soft-embedding norm and the
    input projection to the text model's width (640 for Gemma 3 270M). With the defaults each
    image is 4 × 4 patches pooled to 2 × 2: 4 embeddings, which mtmd wraps in Gemma's
    ``<start_of_image>`` and ``<end_of_image>`` and which are decoded non-causally."""
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    n_patches = (image_size // patch_size) ** 2
    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "clip")
    writer.add_name("hoshikage-tiny-gemma3-projector")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.block_count", n_block)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.projector.scale_factor", merge)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    writer.add_tensor("v.patch_embd.weight", weights(width, 3, patch_size, patch_size))
    writer.add_tensor("v.patch_embd.bias", zeros(width))
    writer.add_tensor("v.position_embd.weight", weights(n_patches, width))
    for i in range(n_block):
        block = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{block}.{name}.weight", weights(width, width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{block}.{name}.weight", ones(width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, width))
        writer.add_tensor(f"{block}.ffn_up.bias", zeros(n_ff))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(width, n_ff))
        writer.add_tensor(f"{block}.ffn_down.bias", zeros(width))
    writer.add_tensor("v.post_ln.weight", ones(width))
    writer.add_tensor("v.post_ln.bias", zeros(width))
    writer.add_tensor("mm.soft_emb_norm.weight", ones(width))
    # used transposed: ne [n_embd_text, width]
    writer.add_tensor("mm.input_projection.weight", weights(width, n_embd_text, scale=0.2))

    return _written(writer, tmp, path)


def build_qwen2vl_text_model(path: str | os.PathLike, *, n_embd: int = 64, seed: int = 97) -> Path:
    """A tiny ``qwen2vl`` text model (M-RoPE: ``rope.dimension_sections``) with the tiny
    SPM vocabulary and chat template of tests/support/models.py, for
    :func:`build_qwen2vl_projector`."""
    import gguf
    import numpy as np

    from tests.support.models import TINY_CHAT_TEMPLATE, tiny_vocab

    path = Path(path)
    vocab = tiny_vocab()
    n_vocab, n_head, n_ff, n_layers = len(vocab), 4, 128, 2
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "qwen2vl")
    writer.add_name("hoshikage-tiny-qwen2vl")
    writer.add_context_length(4096)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    head = n_embd // n_head
    writer.add_array(
        "qwen2vl.rope.dimension_sections",
        [head // 8, head // 8 + head // 16, head // 8 + head // 16, 0],
    )
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab)
    writer.add_token_scores([0.0] * 259 + [-float(len(p)) for p in vocab[259:]])
    writer.add_token_types(
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * 256
        + [gguf.TokenType.NORMAL] * (n_vocab - 259)
    )
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(TINY_CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd, scale=1.0))
    for i in range(n_layers):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"{block}.{name}.weight", weights(n_embd, n_embd))
            writer.add_tensor(f"{block}.{name}.bias", np.zeros(n_embd, dtype=np.float32))
        writer.add_tensor(f"{block}.attn_output.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weights(n_vocab, n_embd, scale=0.6))
    return _written(writer, tmp, path)


def build_qwen2vl_projector(
    path: str | os.PathLike,
    *,
    n_embd_text: int = 64,
    patch_size: int = 14,
    width: int = 32,
    n_block: int = 2,
    n_head: int = 4,
    n_ff: int = 64,
    seed: int = 1357,
) -> Path:
    """Write a Qwen2-VL-type projector GGUF (``clip.projector_type = "qwen2vl_merger"``):
    dynamic resolution, two temporal patch kernels, a tower with 2-D M-RoPE, and the merger
    of 2 × 2 patches to the text model's width. Its images' embeddings take M-RoPE positions:
    an image of ``w × h`` merged patches advances the text position by ``max(w, h)``, not by
    its number of embeddings."""
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    hidden = 4 * width
    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "clip")
    writer.add_name("hoshikage-tiny-qwen2vl-projector")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_string("clip.projector_type", "qwen2vl_merger")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_uint32("clip.vision.image_size", 560)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.block_count", n_block)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_tensor("v.patch_embd.weight", weights(width, 3, patch_size, patch_size))
    writer.add_tensor("v.patch_embd.weight.1", weights(width, 3, patch_size, patch_size))
    for i in range(n_block):
        block = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{block}.{name}.weight", weights(width, width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{block}.{name}.weight", ones(width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, width))
        writer.add_tensor(f"{block}.ffn_up.bias", zeros(n_ff))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(width, n_ff))
        writer.add_tensor(f"{block}.ffn_down.bias", zeros(width))
    writer.add_tensor("mm.0.weight", weights(hidden, 4 * width, scale=0.1))
    writer.add_tensor("mm.0.bias", zeros(hidden))
    writer.add_tensor("mm.2.weight", weights(n_embd_text, hidden, scale=0.2))
    writer.add_tensor("mm.2.bias", zeros(n_embd_text))
    return _written(writer, tmp, path)


def build_audio_projector(
    path: str | os.PathLike,
    *,
    n_embd_text: int = 64,
    n_mel: int = 80,
    width: int = 32,
    n_block: int = 2,
    n_head: int = 4,
    n_ff: int = 64,
    seed: int = 8765,
) -> Path:
    """Write a Qwen2-Audio-type projector GGUF (``clip.projector_type = "qwen2a"``): a
    Whisper-style encoder (two 1-D convolutions over ``n_mel`` mel bins, a ``width``-wide
    transformer of ``n_block`` blocks) and one linear layer to the text model's width. mtmd
    cuts audio into 30-second chunks of 3000 mel frames; each becomes 750 embeddings (the
    second convolution and an average pool halve the frames twice)."""
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    n_pos = 1500  # Whisper's: 3000 mel frames, halved by the second convolution
    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "clip")
    writer.add_name("hoshikage-tiny-audio-projector")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_string("clip.projector_type", "qwen2a")
    writer.add_bool("clip.has_vision_encoder", False)
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_uint32("clip.audio.num_mel_bins", n_mel)
    writer.add_uint32("clip.audio.embedding_length", width)
    writer.add_uint32("clip.audio.feed_forward_length", n_ff)
    writer.add_uint32("clip.audio.block_count", n_block)
    writer.add_uint32("clip.audio.projection_dim", n_embd_text)
    writer.add_uint32("clip.audio.attention.head_count", n_head)
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)

    # conv kernels are ne [k, in, out]; their biases ne [1, out] (added along time)
    writer.add_tensor("a.conv1d.1.weight", weights(width, n_mel, 3))
    writer.add_tensor("a.conv1d.1.bias", zeros(width, 1))
    writer.add_tensor("a.conv1d.2.weight", weights(width, width, 3))
    writer.add_tensor("a.conv1d.2.bias", zeros(width, 1))
    writer.add_tensor("a.position_embd.weight", weights(n_pos, width))
    for i in range(n_block):
        block = f"a.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{block}.{name}.weight", weights(width, width))
            if name != "attn_k":  # Whisper's key projection has no bias
                writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{block}.{name}.weight", ones(width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, width))
        writer.add_tensor(f"{block}.ffn_up.bias", zeros(n_ff))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(width, n_ff))
        writer.add_tensor(f"{block}.ffn_down.bias", zeros(width))
    writer.add_tensor("a.post_ln.weight", ones(width))
    writer.add_tensor("a.post_ln.bias", zeros(width))
    writer.add_tensor("mm.a.fc.weight", weights(n_embd_text, width, scale=0.2))
    writer.add_tensor("mm.a.fc.bias", zeros(n_embd_text))

    return _written(writer, tmp, path)


def wav_bytes(seconds: float = 1.0, rate: int = 16000, hz: float = 440.0) -> bytes:
    """A mono 16-bit WAV of a sine tone."""
    import io
    import math
    import struct
    import wave

    n = int(seconds * rate)
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(n)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def png_bytes(
    width: int = 32, height: int = 32, color: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    """A small solid-colour PNG, written with Pillow."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def image_media(
    color: tuple[int, int, int] = (200, 40, 40), size: int = 32, field: str = "messages"
):
    """A decoded solid-colour image as the core's :class:`~hoshikage_core.protocol.Media`
    (what the API surfaces hand the backend after Pillow), its id the hash of its pixels."""
    import hashlib

    from hoshikage_core.protocol import Media

    data = bytes(color) * (size * size)
    return Media(
        kind="image",
        data=data,
        width=size,
        height=size,
        id=hashlib.sha256(data).hexdigest(),
        field=field,
    )


def _written(writer, tmp, path) -> Path:
    """Write ``writer``'s GGUF to ``tmp``, then put it at ``path`` at once."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return Path(path)
