"""Read a GGUF file's header without loading the model: architecture, context length,
quantization, parameter hints. Pure Python; reads only the metadata section.

Also the cheap validity check behind ``hoshikage doctor`` and the models listing.
"""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO

import attrs

GGUF_MAGIC = b"GGUF"

# llama_ftype values (general.file_type) to their usual names.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip

# GGUF value types: id -> struct format (scalars), 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types: id -> (elements per block, bytes per block), to find where data ends.
_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip


class GGUFError(ValueError):
    """The file is not a readable GGUF; the message says why."""


@attrs.frozen(kw_only=True)
class GGUFInfo:
    path: str
    file_bytes: int
    version: int
    tensor_count: int
    architecture: str | None
    name: str | None
    context_length: int | None
    quantization: str | None
    has_chat_template: bool
    metadata: dict[str, Any]


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFError("the file is truncated (header ends early)")
    return data


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _read(f, 8))
    if length > 1 << 30:
        raise GGUFError("corrupt header (absurd string length)")
    return _read(f, length).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int, keep: bool) -> Any:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        (item_type,) = struct.unpack("<I", _read(f, 4))
        (count,) = struct.unpack("<Q", _read(f, 8))
        if item_type in _SCALARS:
            size = struct.calcsize(_SCALARS[item_type]) * count
            if keep and count <= 64:
                return [_value(f, item_type, True) for _ in range(count)]
            f.seek(size, os.SEEK_CUR)
            return f"<array of {count}>"
        items = [_value(f, item_type, keep and count <= 64) for _ in range(count)]
        return items if keep and count <= 64 else f"<array of {count}>"
    raise GGUFError(f"corrupt header (unknown value type {vtype})")


def read_info(path: str | os.PathLike) -> GGUFInfo:
    """Parse the header; raise GGUFError (with the reason) for a non-GGUF or truncated file."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except FileNotFoundError:
        raise GGUFError(f"no such file: {path}") from None
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFError("not a GGUF file (bad magic)")
        version, tensor_count, kv_count = struct.unpack("<IQQ", _read(f, 20))
        if version not in (2, 3):
            raise GGUFError(f"unsupported GGUF version {version}")
        if kv_count > 1 << 20 or tensor_count > 1 << 24:
            raise GGUFError("corrupt header (absurd counts)")
        meta: dict[str, Any] = {}
        for _ in range(kv_count):
            key = _string(f)
            (vtype,) = struct.unpack("<I", _read(f, 4))
            keep = not key.startswith("tokenizer.ggml.")
            meta[key] = _value(f, vtype, keep)
        # Tensor infos: check the data they point to lies inside the file.
        alignment = int(meta.get("general.alignment", 32) or 32)
        end_of_data = 0
        for _ in range(tensor_count):
            _string(f)
            (n_dims,) = struct.unpack("<I", _read(f, 4))
            if n_dims > 8:
                raise GGUFError("corrupt tensor info")
            dims = struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims))
            ggml_type, offset = struct.unpack("<IQ", _read(f, 12))
            n_elements = 1
            for d in dims:
                n_elements *= d
            per_block, block_bytes = _BLOCKS.get(ggml_type, (1, 0))
            end_of_data = max(end_of_data, offset + n_elements // per_block * block_bytes)
        header_end = f.tell()
        data_start = (header_end + alignment - 1) // alignment * alignment
        if tensor_count and data_start + end_of_data > size:
            raise GGUFError(
                f"the file is truncated ({size} bytes; tensor data runs past "
                f"{data_start + end_of_data})"
            )
    arch = meta.get("general.architecture")
    ftype = meta.get("general.file_type")
    return GGUFInfo(
        path=path,
        file_bytes=size,
        version=version,
        tensor_count=tensor_count,
        architecture=arch,
        name=meta.get("general.name"),
        context_length=meta.get(f"{arch}.context_length") if arch else None,
        quantization=FILE_TYPES.get(ftype, f"type {ftype}") if ftype is not None else None,
        has_chat_template="tokenizer.chat_template" in meta,
        metadata=meta,
    )
