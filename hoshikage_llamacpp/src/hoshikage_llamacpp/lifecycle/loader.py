"""Loading a GGUF file into llama.cpp: checks first, then the weights and a context.

A model for text generation gets a context of its own making, through llama-cpp-python's
low-level API: ``n_seq_max = parallel`` and a KV stream of ``n_ctx`` cells per slot, or one
pool of ``n_ctx × parallel`` cells with ``kv_unified`` (see :mod:`.engine`). A model
loaded for embeddings keeps llama-cpp-python's ``Llama``, whose ``embed`` does the pooling
and batching. Every failure is a :class:`ModelLoadError` that
names the file and the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Any

import attrs
from hoshikage_core.errors import ModelLoadError
from hoshikage_core.gguf_info import GGUFError, read_info

from ..options import KV_CACHE_TYPES, LlamaOptions, rpc_server_list
from .memory import buffer_placement, context_buffer_bytes, held_context_bytes, key_length

_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
_POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


@attrs.define
class Loaded:
    """What :func:`load` hands to the model: either ``context`` (generation) or ``llama``
    (embeddings), with the model handle, the GGUF metadata and llama.cpp's buffer report."""

    path: str
    metadata: dict[str, Any]
    model: Any  # llama_cpp._internals.LlamaModel
    context: Any = None  # llama_cpp._internals.LlamaContext
    llama: Any = None  # llama_cpp.Llama
    context_bytes: int | None = None
    #: Growth of the resident set while the context was created (Linux), or None.
    context_resident: int | None = None
    #: Bytes per llama.cpp buffer (see :func:`.memory.buffer_placement`).
    placement: dict[str, dict[str, int]] = attrs.field(factory=dict)

    def close(self) -> None:
        if self.llama is not None:
            self.llama.close()
        else:
            if self.context is not None:
                self.context.close()
            self.model.close()
        self.llama = self.context = self.model = None


def load(name: str, path: str, options: LlamaOptions, progress=None) -> Loaded:
    """``progress``, if given, is called with the share of the weights loaded so far
    (0.0 to 1.0, from llama.cpp's progress callback, on the loading thread)."""
    path = os.path.expanduser(path)
    try:
        info = read_info(path)
    except GGUFError as exc:
        raise ModelLoadError(name, f"{path}: {exc}") from None

    from ..llama import logging_bridge
    from ..llama.rpc import RPCUnavailable, register_rpc_servers

    logging_bridge.install()
    servers = rpc_server_list(options.rpc_servers)
    if servers:
        try:
            register_rpc_servers(servers)
        except RPCUnavailable as exc:
            raise ModelLoadError(name, f"{path}: {exc}") from None
    try:
        with logging_bridge.capture() as log:
            loaded = (
                _load_embedding(path, options, info.metadata)
                if options.embedding
                else _load_generation(path, options, key_length(info.metadata), progress)
            )
    except (ValueError, RuntimeError, OSError, MemoryError) as exc:
        errors = [
            line.strip() for line in log if "error" in line.lower() or "failed" in line.lower()
        ]
        detail = f" ({errors[-1]})" if errors else ""
        raise ModelLoadError(name, f"{path}: llama.cpp could not load it: {exc}{detail}") from None
    loaded.metadata = info.metadata
    loaded.placement = buffer_placement(log)
    loaded.context_bytes = held_context_bytes(loaded.placement, loaded.context_resident)
    if loaded.context_bytes is None:
        loaded.context_bytes = context_buffer_bytes(log)
    return loaded


def _resident() -> int | None:
    """This process's resident bytes (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _load_generation(path: str, options: LlamaOptions, head_size: int, progress=None) -> Loaded:
    from llama_cpp import _internals

    holder = _ModelParams(options, path, progress)
    model = _internals.LlamaModel(path_model=path, params=holder.params, verbose=False)
    before = _resident()
    try:
        context = _internals.LlamaContext(
            model=model, params=context_params(options, head_size), verbose=False
        )
    except BaseException:
        model.close()
        raise
    after = _resident()
    grown = after - before if before is not None and after is not None else None
    return Loaded(path=path, metadata={}, model=model, context=context, context_resident=grown)


def _load_embedding(path: str, options: LlamaOptions, metadata: dict[str, Any]) -> Loaded:
    from llama_cpp import Llama

    with extra_buffers_for_llama(use_extra_buffers(options, path)):
        llama = Llama(model_path=path, **llama_kwargs(options, metadata))
    return Loaded(path=path, metadata={}, model=llama._model, llama=llama)


_DEFAULTS_LOCK = threading.Lock()


@contextlib.contextmanager
def extra_buffers_for_llama(enabled: bool):
    """``Llama(...)`` has no argument for ``use_extra_bufts``: while this is entered, the
    model parameters it starts from (``llama_model_default_params``) carry ``enabled``."""
    import llama_cpp.llama_cpp as lib

    with _DEFAULTS_LOCK:
        original = lib.llama_model_default_params

        def defaults():
            params = original()
            params.use_extra_bufts = enabled
            return params

        lib.llama_model_default_params = defaults
        try:
            yield
        finally:
            lib.llama_model_default_params = original


class _ModelParams:
    """``llama_model_params`` for ``options``; keeps the arrays and the progress callback
    it points to alive."""

    def __init__(self, options: LlamaOptions, path: str, progress=None):
        import llama_cpp

        params = llama_cpp.llama_model_default_params()
        self._progress = None
        if progress is not None:

            def report(fraction: float, _user_data) -> bool:
                try:
                    progress(min(max(float(fraction), 0.0), 1.0))
                except Exception:  # a broken reporter must not abort the load
                    pass
                return True

            self._progress = llama_cpp.llama_progress_callback(report)
            params.progress_callback = self._progress
        params.n_gpu_layers = 0x7FFFFFFF if options.n_gpu_layers == -1 else options.n_gpu_layers
        params.split_mode = _SPLIT_MODES[options.split_mode]
        params.use_extra_bufts = use_extra_buffers(options, path)
        params.main_gpu = options.main_gpu
        self._tensor_split = None
        if options.tensor_split is not None:
            if len(options.tensor_split) > llama_cpp.LLAMA_MAX_DEVICES:
                raise ValueError(
                    f"tensor_split: at most {llama_cpp.LLAMA_MAX_DEVICES} devices in this build"
                )
            values = list(options.tensor_split) + [0.0] * (
                llama_cpp.LLAMA_MAX_DEVICES - len(options.tensor_split)
            )
            self._tensor_split = (ctypes.c_float * llama_cpp.LLAMA_MAX_DEVICES)(*values)
            params.tensor_split = self._tensor_split
        if options.use_mmap and options.use_mlock:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK
        elif options.use_mlock:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MLOCK
        elif options.use_mmap:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        else:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        self.params = params


def use_extra_buffers(options: LlamaOptions, path: str) -> bool:
    """Whether llama.cpp may repack the weights into its extra buffer types (see
    :mod:`.safe_mode`): ``extra_buffers`` when set (a model process is handed the parent's
    decision so), else as :func:`.safe_mode.decide` says for a model in this process."""
    if options.extra_buffers != "auto":
        return bool(options.extra_buffers)
    from .safe_mode import Subject, decide

    return decide("auto", Subject.of(path), isolated=False).extra


#: Tokens of the warm-up decode: more than one, since a kernel may only run for batches
#: (llama.cpp's AMX matrix kernels crash on a batch; a single token takes the vector path).
WARM_UP_TOKENS = 8


def warm_up(loaded: Loaded) -> None:
    """Decode a few tokens once and forget them, as llama-server's "warming up the model
    with an empty run": the weights are paged in and every kernel has run once, so a kernel
    that crashes on this CPU crashes at load, not on a user's request."""
    import llama_cpp

    context = loaded.context if loaded.context is not None else loaded.llama._ctx
    ctx = context.ctx
    if llama_cpp.llama_model_has_encoder(loaded.model.model):
        return  # encoder-decoder models start with llama_encode; nothing to warm this way
    n = max(1, min(WARM_UP_TOKENS, int(llama_cpp.llama_n_batch(ctx))))
    bos = loaded.model.token_bos()
    tokens = (llama_cpp.llama_token * n)(*([bos if bos >= 0 else 0] * n))
    llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, n))
    llama_cpp.llama_synchronize(ctx)
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)


#: Key heads at least this wide get flash attention on the CPU with ``"auto"``. Below it
#: llama.cpp's CPU kernel, a dot product and a sum per cache cell and head, is the slower
#: one: raw decode over 600 cells, flash attention on ÷ off, 4 streams / 1 stream (2-core AMX
#: CPU, 2026-12-06): heads of 64 0.57 / 0.66 (SmolLM2-135M 0.57 / 0.52), of 128 1.04 /
#: 1.04, of 256 1.18 / 1.07 (Gemma 3 270M 1.07 / 1.06). docs/performance.md, "Flash
#: attention on by default".
FLASH_HEAD_SIZE = 128


def flash_attention(options: LlamaOptions, head_size: int) -> bool:
    """Whether a context of ``options`` over a model whose key heads are ``head_size`` wide
    (:func:`.memory.key_length`; 0 if unknown) uses flash attention. llama-cpp-python 0.3.36 takes
    on/off only, and llama.cpp itself still turns it off for architectures that cannot use
    it. ``"auto"`` is on where a GPU backend or RPC servers compute, or a quantized V cache
    needs it, and on the CPU for a generation model whose key heads are at least
    :data:`FLASH_HEAD_SIZE` wide (or of unknown width), with one slot or several, where it
    decodes and prefills faster (Gemma 3: +5-12 % decode); off for narrower heads, where it
    is the slower kernel (SmolLM2: half the decode speed), and for an embedding model, which
    reads several inputs as sequences of one batch. llama-server turns it on everywhere.

    On the CPU llama.cpp's kernel computes every row of a KV stream by itself, whatever the
    batch's other streams hold, but for two shapes: a lone token of a lone stream, from 512
    cells on, whose cache it splits between the threads, and 64 tokens or more of one
    stream, which it reads in tiles. The engine keeps both from depending on the load
    (:func:`pads_lone_rows`, ``engine/core``: a lone token gets a second row, prompts are
    read apart from the generations), so a token's logits do not depend on the step's other
    sequences. What it costs: the row-by-row computation sums an f16 value cache in f16,
    the tiles in f32, so a token scored one row at a time is up to ~0.1 nats off the same
    token read in a prompt's tile (Gemma 3), and a near tie at temperature 0 can fall the
    other way with speculation. With ``flash_attn = false`` a token rounds alike in any
    prompt piece of 16 tokens or more (docs/performance.md, "Flash attention on by
    default")."""
    if options.flash_attn != "auto":
        return bool(options.flash_attn)
    if options.type_v not in ("f16", "f32", "bf16") or options.rpc_servers:
        return True
    from ..llama.build import is_gpu_build

    if options.n_gpu_layers != 0 and is_gpu_build():
        return True
    return not options.embedding and (head_size == 0 or head_size >= FLASH_HEAD_SIZE)


#: ``n_ubatch`` when unset: :data:`N_UBATCH`, and :data:`N_UBATCH_SCORES` for a text model
#: whose context computes attention without flash attention. There llama.cpp writes a
#: prefill's attention scores out as a matrix of ``n_ubatch × n_kv × n_head`` floats, and
#: the compute buffer keeps the largest ever made resident: SmolLM2-135M with 4 slots of
#: 4,096 cells, every cell written, held 515 MiB of anonymous memory at 512, 458 at 256 and
#: 429 at 128 (422 with flash attention on), and its prefills were as fast or faster at 128
#: (610, 1,870 and 3,620 tokens: 2.06, 7.73, 19.3 s against 2.13, 8.31, 20.4 s at 512;
#: docs/performance.md, session 15).
N_UBATCH = 512
N_UBATCH_SCORES = 128


def micro_batch(options: LlamaOptions, head_size: int) -> int:
    """``n_ubatch`` for a context of ``options`` over key heads ``head_size`` wide: as set,
    else :data:`N_UBATCH`, or :data:`N_UBATCH_SCORES` for a text generation model without
    flash attention (:func:`flash_attention`). Not for a model with a projector: a
    non-causal image must fit one micro-batch. The callers cap it at ``n_batch``."""
    if options.n_ubatch is not None:
        return options.n_ubatch
    if options.embedding or options.mmproj or flash_attention(options, head_size):
        return N_UBATCH
    return N_UBATCH_SCORES


def pads_lone_rows(options: LlamaOptions, head_size: int, repacked: bool = False) -> bool:
    """Whether the engine gives a lone token of a lone KV stream a second row: where
    llama.cpp's CPU flash-attention kernel computes attention for several slots (over key
    heads ``head_size`` wide, as :func:`flash_attention` takes it). Alone, from 512 cells
    on, it splits that token's cache between the threads, which rounds otherwise than the
    row by row computation it makes beside other streams or with a second row (up to 1.0
    nats on Gemma 3).

    Not where weights are ``repacked`` (:func:`.memory.repacked_weights`, the default where
    a CPU has kernels for them and not AMX): their kernels take each 4 rows of a step
    through a matrix kernel and the rest through a vector kernel, which round apart (0.58
    nats on an AMD EPYC), so a token's logits depend on the step's other rows with the pad
    too, and the second row costs what it would buy nothing for (9-13 % of a one-token
    step of Gemma 3 270M there: 16.9 against 15.4 ms, docs/performance.md)."""
    if repacked:
        return False
    if options.parallel == 1 or options.embedding or options.rpc_servers:
        return False
    # The split is taken only over one f16 (or f32) cache for keys and values both.
    if options.type_k != options.type_v or options.type_k not in ("f16", "f32"):
        return False
    if not flash_attention(options, head_size):
        return False
    from ..llama.build import is_gpu_build

    return options.n_gpu_layers == 0 or not is_gpu_build()


def context_params(options: LlamaOptions, head_size: int):
    """``llama_context_params`` of a generation model with key heads ``head_size`` wide
    (:func:`.memory.key_length`): ``parallel`` slots of ``n_ctx`` tokens each, in separate KV
    streams (or one shared pool of as many cells with ``kv_unified``); sliding-window layers
    hold only their window unless ``swa_full``."""
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    parallel = options.parallel
    params.n_ctx = options.n_ctx * parallel
    params.n_seq_max = parallel
    params.kv_unified = options.kv_unified
    params.swa_full = options.swa_full
    params.n_batch = max(options.n_batch, parallel)
    params.n_ubatch = min(micro_batch(options, head_size), params.n_batch)
    params.n_threads = options.threads()
    params.n_threads_batch = options.threads_batch()
    params.flash_attn_type = (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if flash_attention(options, head_size)
        else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    params.type_k = KV_CACHE_TYPES[options.type_k]
    params.type_v = KV_CACHE_TYPES[options.type_v]
    if options.rope_freq_base is not None:
        params.rope_freq_base = options.rope_freq_base
    if options.rope_freq_scale is not None:
        params.rope_freq_scale = options.rope_freq_scale
    params.no_perf = True
    return params


def llama_kwargs(options: LlamaOptions, metadata: dict[str, Any]) -> dict[str, Any]:
    """``Llama(...)`` arguments for ``options`` (embedding models, and the benchmark's
    direct single-sequence floor). Logging stays quiet (``verbose=False``)."""
    import llama_cpp

    n_batch = options.n_batch
    kwargs: dict[str, Any] = dict(
        n_ctx=options.n_ctx,
        n_batch=n_batch,
        # Embeddings need a whole input in one micro-batch.
        n_ubatch=n_batch
        if options.embedding
        else min(micro_batch(options, key_length(metadata)), n_batch),
        n_threads=options.threads(),
        n_threads_batch=options.threads_batch(),
        n_gpu_layers=options.n_gpu_layers,
        split_mode=_SPLIT_MODES[options.split_mode],
        main_gpu=options.main_gpu,
        tensor_split=options.tensor_split,
        flash_attn=flash_attention(options, key_length(metadata)),
        type_k=KV_CACHE_TYPES[options.type_k],
        type_v=KV_CACHE_TYPES[options.type_v],
        use_mmap=options.use_mmap,
        use_mlock=options.use_mlock,
        embedding=options.embedding,
        verbose=False,
    )
    if options.seed is not None:
        kwargs["seed"] = options.seed
    if options.rope_freq_base is not None:
        kwargs["rope_freq_base"] = options.rope_freq_base
    if options.rope_freq_scale is not None:
        kwargs["rope_freq_scale"] = options.rope_freq_scale
    if options.embedding:
        arch = metadata.get("general.architecture", "")
        if options.pooling is not None:
            kwargs["pooling_type"] = _POOLING[options.pooling]
        elif f"{arch}.pooling_type" not in metadata:
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
    return kwargs
