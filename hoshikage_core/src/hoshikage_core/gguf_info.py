"""Read a GGUF file's header without loading the model, and say in words what is wrong.

llama.cpp given a file that is not GGUF, or one cut short, may print an unhelpful message or
abort the process. :func:`read_info` reads the header, the metadata and the tensor table in
pure Python (mmap, no tensor data) and raises :class:`GGUFError` naming the problem:
missing, not GGUF, an unknown version, or shorter than its tensor table says it must be.
The backend runs it before every load; ``hoshikage models`` and ``doctor`` use its facts
(architecture, context length, quantization).
"""

from __future__ import annotations

import functools
import mmap
import os
import struct

import attrs

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types -> struct format of a scalar (None: string / array).
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# llama_ftype values (general.file_type) to their usual names.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

#: ggml tensor types -> (elements per block, bytes per block), for the size check.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 40),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
    40: (64, 36),
    41: (128, 18),
}


class GGUFError(Exception):
    """The file cannot be a loadable GGUF model; the message says why."""


@attrs.frozen
class GGUFInfo:
    version: int
    tensor_count: int
    #: Scalar and string metadata; arrays (the vocabulary) are skipped.
    metadata: dict
    #: Bytes the file must have to hold every tensor of its table.
    required_size: int
    file_size: int
    #: Elements of every tensor together: the model's parameter count.
    parameter_count: int = 0
    #: The ggml type ids of its tensors (F32 = 0, F16 = 1, Q4_0 = 2, Q4_K = 12, ...).
    tensor_types: frozenset[int] = frozenset()

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def context_length(self) -> int | None:
        arch = self.architecture
        return self.metadata.get(f"{arch}.context_length") if arch else None

    @property
    def quantization(self) -> str | None:
        ftype = self.metadata.get("general.file_type")
        return None if ftype is None else FILE_TYPES.get(ftype, f"type {ftype}")


class _Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFError("truncated: the file ends inside its header")
        value = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        length = self.take("<Q")
        if self.pos + length > len(self.buf):
            raise GGUFError("truncated: the file ends inside its header")
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def _skip_strings(self, count: int) -> None:
        """Skip ``count`` length-prefixed strings (a 262k-token vocabulary in ~50 ms)."""
        unpack, buf, end, pos = _U64.unpack_from, self.buf, len(self.buf), self.pos
        for _ in range(count):
            if pos + 8 > end:
                raise GGUFError("truncated: the file ends inside its header")
            pos += 8 + unpack(buf, pos)[0]
        if pos > end:
            raise GGUFError("truncated: the file ends inside its header")
        self.pos = pos

    def value(self, kind: int):
        """A scalar or string; arrays (the vocabulary, merges) are skipped as None."""
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.take("<I"), self.take("<Q")
            if item_kind in _SCALARS:
                size = struct.calcsize(_SCALARS[item_kind]) * count
                if self.pos + size > len(self.buf):
                    raise GGUFError("truncated: the file ends inside its header")
                self.pos += size
                return None
            if item_kind == _STRING:
                self._skip_strings(count)
                return None
            for _ in range(count):
                self.value(item_kind)
            return None
        raise GGUFError(f"corrupt header: unknown metadata value type {kind}")


def read_info(path: str | os.PathLike) -> GGUFInfo:
    """Validate ``path`` as a complete GGUF file; raise :class:`GGUFError` saying why not.

    Scalar and string metadata are returned; arrays (the vocabulary) are skipped.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GGUFError("file not found")
    if os.path.isdir(path):
        raise GGUFError("is a directory, not a GGUF file")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 24:
                head = fh.read(4)
                if head != GGUF_MAGIC:
                    raise GGUFError(_not_gguf(head))
                raise GGUFError(f"truncated: {size} bytes is shorter than a GGUF header")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, size)
    except PermissionError:
        raise GGUFError("permission denied") from None
    except OSError as exc:
        raise GGUFError(f"cannot be read: {exc.strerror or exc}") from None


def cached_info(path: str | os.PathLike) -> GGUFInfo:
    """:func:`read_info`, kept per file (its real path, size and modification time): the
    pool's memory estimate and a load's safe-mode check read the same header once. The
    result is shared: treat it as read-only."""
    try:
        stat = os.stat(path)
    except OSError:
        return read_info(path)  # the error, said as read_info says it
    info = _cached_info(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if isinstance(info, GGUFError):
        raise GGUFError(str(info))
    return info


@functools.lru_cache(maxsize=64)
def _cached_info(path: str, _size: int, _mtime_ns: int) -> GGUFInfo | GGUFError:
    try:
        return read_info(path)
    except GGUFError as exc:  # a broken file is not parsed again either
        return exc


def _not_gguf(head: bytes) -> str:
    return f"not a GGUF file (it starts with {head!r}, not b'GGUF')"


def _parse(buf, size: int) -> GGUFInfo:
    reader = _Reader(buf)
    head = bytes(buf[:4])
    if head != GGUF_MAGIC:
        raise GGUFError(_not_gguf(head))
    reader.pos = 4
    version = reader.take("<I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version} (llama.cpp reads 2 and 3)")
    tensor_count, kv_count = reader.take("<Q"), reader.take("<Q")
    if tensor_count > size or kv_count > size:
        raise GGUFError("corrupt header: impossible tensor or metadata count")
    metadata: dict = {}
    for _ in range(kv_count):
        key = reader.string()
        kind = reader.take("<I")
        value = reader.value(kind)
        if value is not None:
            metadata[key] = value
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_end = 0
    parameters = 0
    types = set()
    for _ in range(tensor_count):
        name = reader.string()
        n_dims = reader.take("<I")
        if n_dims > 8:
            raise GGUFError(f"corrupt tensor table: {name} has {n_dims} dimensions")
        dims = [reader.take("<Q") for _ in range(n_dims)]
        ggml_type, offset = reader.take("<I"), reader.take("<Q")
        types.add(ggml_type)
        elements = 1
        for dim in dims:
            elements *= dim
        parameters += elements
        block = GGML_BLOCKS.get(ggml_type)
        nbytes = elements // block[0] * block[1] if block else 0
        data_end = max(data_end, offset + nbytes)
    data_start = -(-reader.pos // alignment) * alignment
    required = data_start + data_end if tensor_count else reader.pos
    if size < required:
        raise GGUFError(
            f"truncated: the file has {size} bytes but its tensors need {required}"
            " (an interrupted download or copy?)"
        )
    return GGUFInfo(
        version=version,
        tensor_count=tensor_count,
        metadata=metadata,
        required_size=required,
        file_size=size,
        parameter_count=parameters,
        tensor_types=frozenset(types),
    )


def projector_modalities(path: str | os.PathLike) -> tuple[str, ...]:
    """What a multimodal projector GGUF (``mmproj``) adds to its model: ``"vision"`` and/or
    ``"audio"``, from its ``clip.has_vision_encoder`` and ``clip.has_audio_encoder``; empty
    when the file cannot be read. Cached by path, size and modification time."""
    try:
        stat = os.stat(path)
    except OSError:
        return ()
    return _projector_modalities(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _projector_modalities(path: str, _size: int, _mtime_ns: int) -> tuple[str, ...]:
    try:
        metadata = read_info(path).metadata
    except GGUFError:
        return ()
    out = []
    if metadata.get("clip.has_vision_encoder"):
        out.append("vision")
    if metadata.get("clip.has_audio_encoder"):
        out.append("audio")
    return tuple(out)
