"""What a model needs in memory, from its GGUF header: the weights and the KV cache for the
context it is loaded with. Shared by the plan before a download (:mod:`.pull.plan`, the
header read remotely) and by admission under ``[unload].max_memory`` before a load
(:meth:`~hoshikage_core.registry.ModelEntry.expected_bytes`, the file on disk).

The KV cache is computed as the llama.cpp backend computes it: per layer and token
``n_head_kv × (key_length × bytes(type_k) + value_length × bytes(type_v))``, for ``n_ctx``
cells in each of ``parallel`` slots. In the families whose sliding-window layout is known
(Gemma 2 and 3, Cohere 2, gpt-oss), the sliding-window layers hold only their window plus a
micro-batch per slot (``swa_full`` off, the default).
"""

from __future__ import annotations

import os
from typing import Any

import attrs

#: Bytes per cached element of each KV cache type (the backend's table).
KV_TYPE_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}
#: Architectures whose sliding-window layers follow a pattern: every Nth layer is global.
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2}


def option(options: Any, key: str, default: Any) -> Any:
    value = options.get(key) if isinstance(options, dict) else getattr(options, key, None)
    return default if value is None else value


@attrs.frozen(kw_only=True)
class Shape:
    """A model's KV cache layout under some options."""

    #: Bytes one token takes in one layer.
    layer_token: float
    full_layers: int
    swa_layers: int
    window: int
    ubatch: int
    parallel: int
    n_ctx: int
    #: The context the model was trained for (its GGUF ``context_length``).
    trained: int
    n_layer: int

    @classmethod
    def of(cls, info, options: Any) -> Shape:
        arch = info.architecture or ""

        def meta(key: str, default: int) -> int:
            value = info.metadata.get(f"{arch}.{key}", default)
            return value if isinstance(value, int) and not isinstance(value, bool) else default

        n_ctx = int(option(options, "n_ctx", 4096))
        n_layer = meta("block_count", 0)
        n_embd = meta("embedding_length", 0)
        n_head = meta("attention.head_count", 1) or 1
        n_head_kv = meta("attention.head_count_kv", n_head)
        key_len = meta("attention.key_length", n_embd // n_head)
        value_len = meta("attention.value_length", n_embd // n_head)
        per_k = KV_TYPE_BYTES.get(str(option(options, "type_k", "f16")), 2.0)
        per_v = KV_TYPE_BYTES.get(str(option(options, "type_v", "f16")), 2.0)
        window = meta("attention.sliding_window", 0)
        pattern = SWA_PATTERN.get(arch)
        swa_layers = 0
        if window and pattern and not option(options, "swa_full", False):
            swa_layers = n_layer - n_layer // pattern
        return cls(
            layer_token=n_head_kv * (key_len * per_k + value_len * per_v),
            full_layers=n_layer - swa_layers,
            swa_layers=swa_layers,
            window=window,
            ubatch=int(option(options, "n_ubatch", 512)),
            parallel=int(option(options, "parallel", 4)),
            n_ctx=n_ctx,
            trained=info.context_length or n_ctx,
            n_layer=n_layer,
        )

    @property
    def per_token(self) -> float:
        """Bytes one more token of context takes in one slot."""
        return self.layer_token * self.full_layers

    def kv_bytes(self, ctx: int) -> float:
        """The KV cache of every slot at ``ctx`` tokens of context per slot."""
        swa_cells = min(ctx, self.window + self.ubatch) if self.swa_layers else 0
        return (
            self.parallel
            * self.layer_token
            * (self.full_layers * ctx + self.swa_layers * swa_cells)
        )

    def largest_context(self, room: float) -> int:
        """The largest context per slot (a multiple of 256, at most the trained one) whose KV
        cache fits in ``room`` bytes; 0 when not even 256 does."""
        if room < self.kv_bytes(256):
            return 0
        per_ctx = self.parallel * self.per_token
        if per_ctx == 0:
            return self.trained
        fixed = self.parallel * self.layer_token * self.swa_layers * (self.window + self.ubatch)
        return min(self.trained, int((room - fixed) // per_ctx)) // 256 * 256


def _info(path: str):
    from .gguf_info import GGUFError, cached_info

    try:
        return cached_info(path)
    except GGUFError:
        return None


def need_bytes(path: str, options: Any) -> int | None:
    """The weights plus the KV cache at the model's ``n_ctx`` (capped at its trained
    context), from the file's header; None when the file is missing or unreadable."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    info = _info(path)
    if info is None:
        return None
    shape = Shape.of(info, options)
    return stat.st_size + int(shape.kv_bytes(min(shape.n_ctx, shape.trained)))
