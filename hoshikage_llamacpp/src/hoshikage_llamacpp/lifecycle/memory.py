"""How much memory a loaded model holds: its weights plus what its context holds.

The context's share is the KV cache as allocated (every slot's cells; sliding-window layers
at window size unless ``swa_full``), the logits (output) buffer, and the part of the
compute buffer that is resident. llama.cpp sizes the compute buffer for the worst case
(``n_ubatch`` rows of logits over the whole vocabulary: 0.5 GiB for Gemma 3) and the engine
never asks for more than a few rows, so most of it is address space that is never touched;
on Linux the resident part is measured while the context is created. Without llama.cpp's
buffer report, the KV cache is computed from the GGUF header.
"""

from __future__ import annotations

import re
from typing import Any

from ..options import KV_CACHE_TYPE_BYTES, LlamaOptions

_BUFFER_LINE = re.compile(r"\b(?:KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")
_PLACED_LINE = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")


def context_buffer_bytes(log_lines: list[str]) -> int | None:
    """Bytes of the KV-cache, output and compute buffers llama.cpp reported allocating while
    it created the context, or None when it reported none."""
    sizes = [float(m.group(1)) for line in log_lines if (m := _BUFFER_LINE.search(line))]
    return int(sum(sizes) * 1024 * 1024) if sizes else None


def held_context_bytes(placement: dict[str, dict[str, int]], resident: int | None) -> int | None:
    """What a context holds, from its :func:`buffer_placement`: the KV and output buffers
    as allocated, device compute buffers as allocated, and of the host's compute buffer the
    resident part: ``resident`` (how much the process's resident set grew while the context
    was created) less the host's KV and output buffers. Without ``resident``, the whole
    compute buffer. None when llama.cpp reported no context buffer."""
    kinds = ("KV", "output", "compute")
    if not any(kind in placed for placed in placement.values() for kind in kinds):
        return None
    host_fixed = host_compute = other = 0
    for name, placed in placement.items():
        host = name.startswith("CPU") or name.endswith("_Host")
        for kind in kinds:
            size = placed.get(kind, 0)
            if not host:
                other += size
            elif kind == "compute":
                host_compute += size
            else:
                host_fixed += size
    if resident is not None:
        host_compute = min(host_compute, max(resident - host_fixed, 0))
    return host_fixed + host_compute + other


def buffer_placement(log_lines: list[str]) -> dict[str, dict[str, int]]:
    """Bytes per llama.cpp buffer and kind, as it reported allocating them while loading the
    weights and creating the context: ``{"CPU_Mapped": {"model": ...}, "RPC0[10.0.0.11:50052]":
    {"model": ..., "KV": ..., "compute": ...}}``. A buffer named ``RPC<n>[host:port]`` lives
    on that RPC server, ``CUDA0`` on a GPU, ``CPU*`` in this host's RAM. A tensor may be held
    twice (tied output embeddings get a copy on the device that computes the output layer),
    so the model buffers can add up to more than the file."""
    placed: dict[str, dict[str, float]] = {}
    for line in log_lines:
        if m := _PLACED_LINE.search(line):
            kinds = placed.setdefault(m.group(1), {})
            kinds[m.group(2)] = kinds.get(m.group(2), 0.0) + float(m.group(3))
    return {
        name: {kind: int(mib * 1024 * 1024) for kind, mib in kinds.items()}
        for name, kinds in placed.items()
    }


def device_bytes(placement: dict[str, dict[str, int]]) -> int:
    """Of a :func:`buffer_placement`, the bytes on this host's GPUs: every buffer but
    ``CPU*`` (host RAM), ``*_Host`` (pinned host RAM, e.g. ``CUDA_Host``) and ``RPC*``
    (another machine)."""
    return sum(
        sum(kinds.values())
        for name, kinds in placement.items()
        if not name.startswith(("CPU", "RPC")) and not name.endswith("_Host")
    )


def repacked_weights(placement: dict[str, dict[str, int]]) -> int:
    """Of a :func:`buffer_placement`, the weights llama.cpp copied into its extra host buffer
    types (``CPU_REPACK``, ``AMX``, ...), laid out for their kernels: those kernels take a
    step's rows in tiles (``CPU_REPACK``: a matrix kernel for each 4 rows, a vector kernel
    for the rest, ``ggml-cpu/repack.cpp``), so a row's result can depend on how many rows
    its step has."""
    return sum(
        kinds.get("model", 0)
        for name, kinds in placement.items()
        if name not in ("CPU", "CPU_Mapped") and name.startswith(("CPU", "AMX"))
    )


def repacked_bytes(placement: dict[str, dict[str, int]]) -> int:
    """Of a :func:`buffer_placement`, the :func:`repacked_weights` copied from a mapped file:
    the file's pages of them were read to make the copy and stay mapped, so they are held
    twice (0 without a mapping)."""
    return repacked_weights(placement) if "CPU_Mapped" in placement else 0


def _meta(metadata: dict[str, Any], key: str, default: int) -> int:
    """An integer of the model's architecture (``{arch}.{key}``) from its GGUF metadata."""
    value = metadata.get(f"{metadata.get('general.architecture', '')}.{key}", default)
    return value if isinstance(value, int) else default


def key_length(metadata: dict[str, Any]) -> int:
    """The width of the model's key heads, from its GGUF metadata (``attention.key_length``,
    else the embedding width over the heads); 0 where the metadata says neither."""
    n_head = _meta(metadata, "attention.head_count", 1) or 1
    return _meta(metadata, "attention.key_length", _meta(metadata, "embedding_length", 0) // n_head)


def memory_bytes(
    model_ptr,
    options: LlamaOptions,
    metadata: dict[str, Any],
    kv_cells: int,
    context_bytes: int | None,
) -> int:
    """Weights (``llama_model_size``: the bytes of every tensor, host or device) plus what the
    context holds (:func:`held_context_bytes`). Without llama.cpp's report, the KV cache is
    computed instead:
    ``n_layer × kv_cells × n_head_kv × (key_length × bytes(type_k) + value_length × bytes(type_v))``,
    where ``kv_cells`` is ``n_ctx`` times the slots.
    """
    import llama_cpp

    weights = int(llama_cpp.llama_model_size(model_ptr))
    if context_bytes is not None:
        return weights + context_bytes
    n_layer = _meta(metadata, "block_count", 0)
    n_embd = _meta(metadata, "embedding_length", 0)
    n_head = _meta(metadata, "attention.head_count", 1) or 1
    n_head_kv = _meta(metadata, "attention.head_count_kv", n_head)
    key_len = key_length(metadata)
    value_len = _meta(metadata, "attention.value_length", n_embd // n_head)
    per_token = n_head_kv * (
        key_len * KV_CACHE_TYPE_BYTES[options.type_k]
        + value_len * KV_CACHE_TYPE_BYTES[options.type_v]
    )
    return weights + int(n_layer * kv_cells * per_token)
