"""Family fixtures: tiny random-weight GGUFs that carry a REAL tokenizer and a REAL template.

The pinned llama-cpp-python sdist vendors llama.cpp's vocab-only GGUFs
(``vendor/llama.cpp/models/ggml-vocab-*.gguf``) and 70 chat templates from real models
(``models/templates/*.jinja``). :func:`build_family_gguf` copies a vocab's whole tokenizer
(tokens, types, merges, special ids) into a one-layer llama model with random weights and
writes the template as ``tokenizer.chat_template``. Special tokens such as ``<think>`` or
``<|channel|>`` are then real special tokens, and a ``grammar`` makes the model emit exactly
what a Qwen3 or gpt-oss model would, token boundaries included.

The sdist is found as ``scripts/llama-cpp.sh`` keeps it (``$HOSHIKAGE_LLAMA_CACHE``, else
``~/.cache/hoshikage/llama-cpp``, in ``sdist/``); :func:`sdist_path` downloads it with pip
when it is absent, as that script does.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"
_TOP = f"llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp"


def sdist_path() -> Path:
    base = os.environ.get("HOSHIKAGE_LLAMA_CACHE")
    root = (
        Path(base)
        if base
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "hoshikage"
        / "llama-cpp"
    )
    path = root / "sdist" / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
            + ["-d", str(path.parent), f"llama-cpp-python=={LLAMA_CPP_VERSION}"],
            check=True,
        )
    return path


@functools.cache
def _templates() -> dict[str, str]:
    """Every ``models/templates/*.jinja``, read in one pass over the sdist."""
    prefix = _TOP + "/models/templates/"
    out = {}
    with tarfile.open(sdist_path()) as tar:
        for member in tar:
            if member.name.startswith(prefix) and member.name.endswith(".jinja"):
                data = tar.extractfile(member)
                assert data is not None
                out[member.name[len(prefix) : -len(".jinja")]] = data.read().decode("utf-8")
    return out


def template_names() -> list[str]:
    """The vendored templates' names (file names without ``.jinja``), sorted."""
    return sorted(_templates())


def template(name: str) -> str:
    """The text of ``models/templates/<name>.jinja``."""
    return _templates()[name]


def vocab_path(vocab: str, into: Path) -> Path:
    """``models/ggml-vocab-<vocab>.gguf`` extracted into ``into`` (once)."""
    out = into / f"ggml-vocab-{vocab}.gguf"
    if not out.exists():
        with tarfile.open(sdist_path()) as tar:
            member = tar.extractfile(f"{_TOP}/models/ggml-vocab-{vocab}.gguf")
            assert member is not None
            tmp = out.with_suffix(".partial")
            tmp.write_bytes(member.read())
            os.replace(tmp, out)
    return out


CONTROL, USER_DEFINED = 3, 4
#: Tokens the vocab files lack but the family's real tokenizer has, written over unused
#: slots (``[PAD…]`` or reserved ids) with the real ids where they are known. The types are
#: the real ones: Qwen's ``<think>`` and ``<tool_call>`` are plain added tokens (rendered
#: as text), harmony's markers and Llama's ``<|python_tag|>`` are control tokens.
ADDED_TOKENS: dict[str, dict[int, tuple[str, int]]] = {
    # Qwen3 / Qwen3.5 (tokenizer_config.json added_tokens).
    "qwen35": {
        151657: ("<tool_call>", USER_DEFINED),
        151658: ("</tool_call>", USER_DEFINED),
        151665: ("<tool_response>", USER_DEFINED),
        151666: ("</tool_response>", USER_DEFINED),
        151667: ("<think>", USER_DEFINED),
        151668: ("</think>", USER_DEFINED),
    },
    # gpt-oss's harmony markers (o200k_harmony is not vendored: qwen2's pieces carry them).
    "qwen2": {
        151700: ("<|start|>", CONTROL),
        151701: ("<|channel|>", CONTROL),
        151702: ("<|message|>", CONTROL),
        151703: ("<|end|>", CONTROL),
        151704: ("<|return|>", CONTROL),
        151705: ("<|call|>", CONTROL),
        151706: ("<|constrain|>", CONTROL),
    },
    # Llama 3.1's (the vendored vocab is Llama 3's, which reserves these ids).
    "llama-bpe": {
        128008: ("<|eom_id|>", CONTROL),
        128010: ("<|python_tag|>", CONTROL),
    },
}


def family_model(vocab: str, chat_template: str, cache: Path | None = None) -> Path:
    """:func:`build_family_gguf`, built once per vocab and template into the test-model
    cache (it takes seconds: the writer packs 150k tokens and merges in Python)."""
    import hashlib

    from .models import model_cache_dir

    text = chat_template if "{" in chat_template else template(chat_template)
    key = hashlib.sha256(f"{vocab}\0{text}\0{sorted(ADDED_TOKENS.get(vocab, {}).items())}".encode())
    folder = cache or model_cache_dir() / "families"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{vocab}-{key.hexdigest()[:12]}.gguf"
    if not path.exists():
        build_family_gguf(path, vocab=vocab, chat_template=text)
    return path


def build_family_gguf(
    path: str | os.PathLike,
    *,
    vocab: str,
    chat_template: str,
    n_embd: int = 32,
    n_head: int = 2,
    n_ff: int = 64,
    context_length: int = 4096,
    seed: int = 7,
) -> Path:
    """A one-layer llama GGUF with random F16 weights, the tokenizer of
    ``ggml-vocab-<vocab>.gguf`` and ``chat_template`` (the text, or a vendored template's
    name). Tied embeddings keep it small: about 10 MB for a 150k vocabulary."""
    import gguf
    import numpy as np

    path = Path(path)
    if "{" not in chat_template:
        chat_template = template(chat_template)
    reader = gguf.GGUFReader(vocab_path(vocab, path.parent))
    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name(f"hoshikage-family-{vocab}")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
            for at, (text, _kind) in ADDED_TOKENS.get(vocab, {}).items():
                value[at] = text
        if key == "tokenizer.ggml.token_type":
            for at, (_text, token_type) in ADDED_TOKENS.get(vocab, {}).items():
                value[at] = token_type
        writer.add_key_value(key, value, kind, sub_type=sub)
    writer.add_chat_template(chat_template)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd, scale=1.0))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", weights(n_embd, n_embd))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", weights(n_ff, n_embd))
    writer.add_tensor("blk.0.ffn_up.weight", weights(n_ff, n_embd))
    writer.add_tensor("blk.0.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path
