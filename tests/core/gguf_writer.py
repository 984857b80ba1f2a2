"""Write a minimal valid GGUF header (and optional tensor) with the standard library, so the
core's header reader is tested without the ``gguf`` package (core tests run core-only)."""

from __future__ import annotations

import struct


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_minimal_gguf(
    path,
    *,
    arch="llama",
    context_length=2048,
    file_type=15,
    tensor_bytes=64,
    truncate=0,
    meta: dict[str, int] | None = None,
):
    """``meta``: more uint32 keys under the architecture (``block_count``,
    ``attention.head_count``…)."""
    kvs = [
        (_str("general.architecture"), 8, _str(arch)),
        (_str(f"{arch}.context_length"), 4, struct.pack("<I", context_length)),
        (_str("general.file_type"), 4, struct.pack("<I", file_type)),
        (_str("tokenizer.ggml.tokens"), 9, struct.pack("<IQ", 8, 2) + _str("a") + _str("b")),
    ]
    for key, value in (meta or {}).items():
        kvs.append((_str(f"{arch}.{key}"), 4, struct.pack("<I", value)))
    n_floats = tensor_bytes // 4
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs))
    for key, vtype, value in kvs:
        header += key + struct.pack("<I", vtype) + value
    header += (
        _str("w") + struct.pack("<I", 1) + struct.pack("<Q", n_floats) + struct.pack("<IQ", 0, 0)
    )
    pad = (-len(header)) % 32
    data = header + b"\0" * pad + b"\0" * (n_floats * 4)
    if truncate:
        data = data[:-truncate]
    with open(path, "wb") as f:
        f.write(data)
