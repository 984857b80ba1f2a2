"""The options of a llama.cpp model: every extra key of its ``[[models]]`` table.

The core structures those keys into :class:`LlamaOptions` with cattrs and forbids unknown
keys, so a misspelled option is a config error naming it. Validators raise
:class:`~hoshikage_core.config.FieldError`, so a bad value reads ``models[0].n_ctx: must be > 0``.
This module imports neither llama_cpp nor numpy.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any

import attrs
from hoshikage_core.config import FieldError

from .dialects.chat_formats import CHAT_FORMATS

#: The names of tool_families.FORMATS (repeated here: this module imports no parser code).
TOOL_FORMATS = (
    "hermes",
    "qwen3-coder",
    "llama3",
    "mistral",
    "harmony",
    "deepseek",
    "glm",
    "kimi",
    "command-r",
    "functionary",
    "granite",
    "firefunction",
    "minimax",
    "seed",
    "gemma4",
    "dsml",
    "pythonic",
    "tool-calls",
    "apertus",
    "command-r-plus",
)

#: KV-cache element types llama.cpp accepts, by name, with their ggml type ids.
KV_CACHE_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}

#: Bytes per element of each KV-cache type (block bytes / block elements).
KV_CACHE_TYPE_BYTES: dict[str, float] = {
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

SPLIT_MODES = ("none", "layer", "row")
#: Where a model runs: "process" (a child process of its own), "none" (in the server).
ISOLATION_MODES = ("process", "none")
POOLING_TYPES = ("none", "mean", "cls", "last", "rank")
#: Speculative decoding: "auto" (n-gram lookup, and the draft model when one is given),
#: "ngram" (n-gram lookup only), "draft" (the draft model only), "off".
SPECULATIVE_MODES = ("auto", "ngram", "draft", "off")
#: Most tokens a sequence drafts per step. llama-server's ``--draft-max`` default is 16;
#: the planner prices each draft length against the measured step cost, and on a CPU a
#: verbatim copy gains from more: a step of 32 tokens of one sequence costs about 7.6
#: one-token steps where 17 cost about 5.2 (Gemma 3 270M, 2 threads), so a copy accepted
#: whole yields about 30 % more tokens per unit of step time at 31 drafts than at 16.
DRAFT_MAX = 32
_RPC_SERVER = re.compile(r"^[^\s:]+:\d{1,5}$")


def _positive(_inst, attr, value):
    if value is not None and value <= 0:
        raise FieldError(attr.name, "must be > 0")


#: llama.cpp's LLAMA_MAX_SEQ.
MAX_PARALLEL = 256


def _parallel(_inst, attr, value):
    if not 1 <= value <= MAX_PARALLEL:
        raise FieldError(attr.name, f"must be between 1 and {MAX_PARALLEL}")


def _non_negative(_inst, attr, value):
    if value < 0:
        raise FieldError(attr.name, "must be >= 0")


def _non_negative_or_none(_inst, attr, value):
    if value is not None and value < 0:
        raise FieldError(attr.name, "must be >= 0")


def _between_or_none(low, high):
    def check(_inst, attr, value):
        if value is not None and not low <= value <= high:
            raise FieldError(attr.name, f"must be between {low} and {high}")

    return check


def _one_of(choices):
    def check(_inst, attr, value):
        if value is not None and value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise FieldError(attr.name, f"must be one of {listed}, not {value!r}")

    return check


def _auto_or_bool(_inst, attr, value):
    if value not in ("auto", True, False):
        raise FieldError(attr.name, f'must be "auto", true or false, not {value!r}')


def _gpu_layers(_inst, attr, value):
    if value < -1:
        raise FieldError(attr.name, "must be -1 (all layers), 0 (none) or a layer count")


def _tensor_split(_inst, attr, value):
    if value is None:
        return
    if not value or any(part < 0 for part in value) or sum(value) <= 0:
        raise FieldError(attr.name, "must be a non-empty list of proportions >= 0, not all 0")


def _not_blank(_inst, attr, value):
    if value is not None and not value.strip():
        raise FieldError(attr.name, "must not be empty")


def _rpc_servers(_inst, attr, value):
    if value is None:
        return
    servers = rpc_server_list(value)
    if not servers:
        raise FieldError(attr.name, 'must name at least one "host:port"')
    for server in servers:
        if not _RPC_SERVER.match(server):
            raise FieldError(attr.name, f'expected "host:port", got {server!r}')


def rpc_server_list(value: str | list[str] | None) -> list[str]:
    """``"a:50052,b:50052"`` or ``["a:50052", "b:50052"]`` as a list of endpoints."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else value
    return [part.strip() for part in parts if part.strip()]


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once).

    Reads the CPU topology from sysfs; falls back to the logical CPU count elsewhere.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/core_id") as core, open(f"{base}/physical_package_id") as pkg:
                cores.add((pkg.read().strip(), core.read().strip()))
        except OSError:
            return len(cpus) or 1
    return len(cores) or len(cpus) or 1


def logical_cpus() -> int:
    """Logical CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


#: Renamed options: old name -> new name. The old one is accepted for one release.
RENAMED = {"rpc_load_timeout": "load_timeout", "rpc_call_timeout": "call_timeout"}

#: The per-model sampling defaults (``LlamaOptions`` fields named like the request's).
SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")


@attrs.frozen(kw_only=True)
class LlamaOptions:
    """Per-model options of the ``llamacpp`` backend; ``docs/backend-llamacpp.md`` has the
    full table. ``None`` means "decided at load time" as each field's comment says."""

    #: Context window of one sequence in tokens (prompt plus completion), allocated at load
    #: for each of the ``parallel`` slots (llama.cpp rounds it up to a multiple of 256).
    n_ctx: int = attrs.field(default=4096, validator=_positive)
    #: Sequences decoded together in one batch: concurrent requests (and the choices of
    #: ``n > 1``) share each step. Each slot has its own ``n_ctx`` of KV cache.
    parallel: int = attrs.field(default=4, validator=_parallel)
    #: MiB of host RAM for slot states saved when a slot is given to another conversation,
    #: restored when that conversation comes back (llama-server's ``--cache-ram``). 0: off.
    cache_ram: int = attrs.field(default=256, validator=_non_negative)
    #: MiB of disk, under the user's cache directory, for the prompt states of the most
    #: recently used slots and of the RAM cache, written when the model unloads and read
    #: back by the next load (see :mod:`.disk_cache`). 0: off.
    cache_disk: int = attrs.field(default=512, validator=_non_negative)
    #: One KV pool shared by every slot (llama-server's default) instead of a stream of
    #: ``n_ctx`` cells per slot. A request may then grow into what idle slots do not use,
    #: up to ``n_ctx × parallel``; attention scans the whole pool's used cells.
    kv_unified: bool = False
    #: Keep the sliding-window layers (Gemma 3 and others) at full size. Off (the default),
    #: they hold only the window, and cached prefixes are reused through checkpoints of
    #: those layers' state taken when a prompt has been read (as llama-server does).
    swa_full: bool = False
    #: Largest number of prompt tokens submitted to llama.cpp in one decode call.
    n_batch: int = attrs.field(default=512, validator=_positive)
    #: Physical micro-batch size inside one decode call. None: 512, but 128 for a text model
    #: whose context computes attention without flash attention, where a prefill's
    #: attention scores are ``n_ubatch × n_kv × n_head`` floats (``loader.micro_batch``).
    n_ubatch: int | None = attrs.field(default=None, validator=_positive)
    #: Threads for generation; None: the physical cores available to the process.
    n_threads: int | None = attrs.field(default=None, validator=_positive)
    #: Threads for prompt processing; None: the logical CPUs available to the process.
    n_threads_batch: int | None = attrs.field(default=None, validator=_positive)
    #: Layers offloaded to the GPU: -1 all, 0 none. Harmless on a CPU-only build.
    n_gpu_layers: int = attrs.field(default=-1, validator=_gpu_layers)
    #: GPU used for the whole model (split_mode "none") or for intermediate results.
    main_gpu: int = attrs.field(default=0, validator=_non_negative)
    #: How a model is spread over several GPUs: "none", "layer" or "row".
    split_mode: str = attrs.field(default="layer", validator=_one_of(SPLIT_MODES))
    #: Proportion of the model per GPU, e.g. [3, 1]. None: by free memory.
    tensor_split: list[float] | None = attrs.field(default=None, validator=_tensor_split)
    #: Flash attention: "auto" (on a GPU; on the CPU for a generation model with key heads
    #: 128 wide or more: see loader.flash_attention), true or false.
    flash_attn: bool | str = attrs.field(default="auto", validator=_auto_or_bool)
    #: KV-cache element type for keys, e.g. "f16", "q8_0", "q4_0".
    type_k: str = attrs.field(default="f16", validator=_one_of(tuple(KV_CACHE_TYPES)))
    #: KV-cache element type for values; a quantized type needs flash attention.
    type_v: str = attrs.field(default="f16", validator=_one_of(tuple(KV_CACHE_TYPES)))
    #: llama.cpp's extra weight buffer types (repacked weights: AMX, CPU_REPACK):
    #: "auto" (on, unless this CPU and build are known to crash with them), true or false
    #: (llama-server's ``--no-repack``). See :mod:`.safe_mode`.
    extra_buffers: bool | str = attrs.field(default="auto", validator=_auto_or_bool)
    #: Map the file instead of reading it into memory.
    use_mmap: bool = True
    #: Lock the weights in RAM so the OS cannot swap them out.
    use_mlock: bool = False
    #: Tokens generated for a request that gives no ``max_tokens`` (or ``num_predict``);
    #: None: the server's ``[server].max_tokens``; 0: no default, up to the context. A
    #: request may still ask for more, up to the context.
    max_tokens: int | None = attrs.field(default=None, validator=_non_negative_or_none)
    #: Sampling seed for requests that give none; None: a fresh random seed per request.
    seed: int | None = None
    #: Sampling defaults for requests that give none (as an Ollama Modelfile's PARAMETER or
    #: llama-server's ``--temp``, ``--repeat-penalty``); None: the backend's defaults
    #: (temperature 0.8, top_p 0.95, top_k 40, min_p 0.05, repeat_penalty 1.0).
    temperature: float | None = attrs.field(default=None, validator=_between_or_none(0, 2))
    top_p: float | None = attrs.field(default=None, validator=_between_or_none(0, 1))
    top_k: int | None = attrs.field(default=None, validator=_between_or_none(0, 1_000_000))
    min_p: float | None = attrs.field(default=None, validator=_between_or_none(0, 1))
    repeat_penalty: float | None = attrs.field(default=None, validator=_between_or_none(0, 10))
    #: A built-in prompt format (see chat_formats.CHAT_FORMATS); overrides the GGUF template.
    chat_format: str | None = attrs.field(default=None, validator=_one_of(tuple(CHAT_FORMATS)))
    #: A Jinja chat template; overrides both chat_format and the GGUF template.
    chat_template: str | None = attrs.field(default=None, validator=_not_blank)
    #: Extra variables for the chat template, e.g. ``{enable_thinking = false}``; a request's
    #: ``chat_template_kwargs`` go over these.
    chat_template_kwargs: dict[str, Any] | None = None
    #: A system message for the chats that bring none (no ``system`` or ``developer``
    #: message): an Ollama Modelfile's SYSTEM. None: none.
    system: str | None = attrs.field(default=None, validator=_not_blank)
    #: "auto": reasoning is told apart from the answer in the form the chat template
    #: writes (``<think>``, harmony's analysis channel, ...); "off": the raw text passes.
    reasoning: str = attrs.field(default="auto", validator=_one_of(("auto", "off")))
    #: Most tokens of reasoning before the engine closes the think block itself; None: no
    #: limit. A request's budget (Anthropic's ``budget_tokens``) goes under it.
    reasoning_budget: int | None = attrs.field(default=None, validator=_non_negative_or_none)
    #: The tool-call form whose parser reads calls (see tool_families.FORMATS); None: detected
    #: from the chat template.
    tool_format: str | None = attrs.field(default=None, validator=_one_of(TOOL_FORMATS))
    #: Load for embeddings (/v1/embeddings) instead of text generation.
    embedding: bool = False
    #: Pooling of token vectors for embeddings; None: the model's own, else "mean".
    pooling: str | None = attrs.field(default=None, validator=_one_of(POOLING_TYPES))
    #: RoPE base frequency; None: the model's.
    rope_freq_base: float | None = attrs.field(default=None, validator=_positive)
    #: RoPE frequency scale (context extension); None: the model's.
    rope_freq_scale: float | None = attrs.field(default=None, validator=_positive)
    #: llama.cpp RPC servers to offload to: "host:port" or a list of them.
    rpc_servers: str | list[str] | None = attrs.field(default=None, validator=_rpc_servers)
    #: "process" (the default): run the model in a process of its own, so a native crash
    #: (a CPU kernel, an assert, an RPC host lost mid-generation) ends only that model's
    #: requests and the server stays up; "none": inside the server process.
    isolation: str = attrs.field(default="process", validator=_one_of(ISOLATION_MODES))
    #: Seconds a model in a process of its own (isolation = "process") may take to load; then
    #: the process is killed and the load fails (a busy rpc-server, for one, never answers).
    load_timeout: float = attrs.field(default=300.0, validator=_positive)
    #: Seconds the model process may leave a call (tokenize, embed, a request's submission),
    #: or its running streams, without an answer; then it is killed and reported as dead.
    call_timeout: float = attrs.field(default=120.0, validator=_positive)
    #: The old names of ``load_timeout`` and ``call_timeout`` (from when only models with RPC
    #: servers ran in a process of their own): still accepted for one release, with a
    #: DeprecationWarning, and moved to the new name (see :data:`RENAMED`).
    rpc_load_timeout: float | None = attrs.field(default=None, validator=_positive)
    rpc_call_timeout: float | None = attrs.field(default=None, validator=_positive)
    #: Speculative decoding: "auto" (n-gram lookup in the sequence's own prompt and output,
    #: plus ``draft_model`` when given), "ngram", "draft" (``draft_model`` only) or "off".
    #: The output is the same either way; only the speed differs.
    speculative: str = attrs.field(default="auto", validator=_one_of(SPECULATIVE_MODES))
    #: Most tokens drafted per sequence and step; each sequence drafts fewer (down to none)
    #: when its drafts keep failing or the batch is full. 0 turns speculation off.
    draft_max: int = attrs.field(default=DRAFT_MAX, validator=_between_or_none(0, 64))
    #: n-gram drafts also from what the model's earlier sequences wrote (the engine's
    #: ``NgramPool``, as llama-server's ``ngram-mod``): a question asked again drafts its
    #: answer from the first one's. Off by default: its drafted steps are wider than the
    #: first answer's were, and llama.cpp's logits differ in the last bits between step
    #: widths, so a greedy answer asked again could part from the first at a near tie.
    ngram_pool: bool = False
    #: A second, smaller GGUF with the same vocabulary that drafts for this one.
    draft_model: str | None = attrs.field(default=None, validator=_not_blank)
    #: The multimodal projector GGUF (``mmproj-*.gguf``) that lets the model take images or
    #: audio, loaded with it in its process (llama-server's ``--mmproj``). ``models_dir``
    #: finds the one beside the model file itself.
    mmproj: str | None = attrs.field(default=None, validator=_not_blank)

    def __attrs_post_init__(self) -> None:
        for old, new in RENAMED.items():
            if (value := getattr(self, old)) is not None:
                message = f"option {old!r} is now {new!r}; the old name goes in the next release"
                warnings.warn(message, DeprecationWarning, stacklevel=3)
                # Python hides a DeprecationWarning by default: a config file's reader sees
                # this in the server's log.
                logging.getLogger(__name__).warning(message)
                object.__setattr__(self, new, value)  # frozen: the one place it is set
                object.__setattr__(self, old, None)
        if self.type_v not in ("f16", "f32", "bf16") and self.flash_attn is False:
            raise FieldError("type_v", 'a quantized V cache needs flash_attn = true or "auto"')
        if self.speculative == "draft" and self.draft_model is None:
            raise FieldError("speculative", '"draft" needs a draft_model')

    def ngram_drafts(self) -> bool:
        """Whether sequences draft by n-gram lookup."""
        return self.speculative in ("auto", "ngram") and self.draft_max > 0

    def draft_model_used(self) -> str | None:
        """The draft model's path when it drafts, else None."""
        if self.speculative in ("auto", "draft") and self.draft_max > 0:
            return self.draft_model
        return None

    def sampling_defaults(self) -> dict[str, float]:
        """The sampling options this model sets, for requests that leave them out."""
        return {
            name: value for name in SAMPLING_DEFAULTS if (value := getattr(self, name)) is not None
        }

    def isolated(self) -> bool:
        """Whether this model runs in a child process of its own (see :mod:`.isolation`)."""
        return self.isolation == "process"

    def threads(self) -> int:
        return self.n_threads or physical_cores()

    def threads_batch(self) -> int:
        return self.n_threads_batch or logical_cpus()
