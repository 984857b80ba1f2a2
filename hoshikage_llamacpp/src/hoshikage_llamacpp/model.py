"""A GGUF model loaded in llama.cpp: :class:`LlamaCppModel` implements the core's
:class:`~hoshikage_core.protocol.LoadedModel`.

Generation drives llama.cpp token by token: decode, sample with a native sampler chain,
turn the token's bytes into text, send what is safe to send, check the cancel signal, and
decode the token. The KV cache is kept between requests: a new prompt re-evaluates only
what differs from the tokens already in it, so a multi-turn chat pays for the new turn only.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from hoshikage_core.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError
from hoshikage_core.gguf_info import GGUFError, read_info
from hoshikage_core.protocol import CancelToken, Chunk, Embeddings, GenerationRequest

from .chat import (
    TOOL_CALL_MARKERS,
    ChatRenderer,
    choose_template,
    forced_tool_schema,
    parse_tool_calls,
    tool_names,
)
from .options import KV_CACHE_TYPE_BYTES, KV_CACHE_TYPES, LlamaOptions, rpc_server_list
from .sampling import LogprobReader, SamplerChain, grammar_for
from .text_stream import TextStream

#: How often a generation waiting for the model's lock looks at its cancel signal.
LOCK_POLL_SECONDS = 0.05

_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
_POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


class LlamaCppModel:
    """One GGUF model in llama.cpp. Build it with :meth:`load`.

    Generations are serialised by a per-model lock: a ``Llama`` object is not thread-safe.
    """

    def __init__(
        self,
        name: str,
        path: str,
        llama,
        options: LlamaOptions,
        metadata: dict[str, Any],
        context_bytes: int | None = None,
    ):
        import llama_cpp

        self._lib = llama_cpp
        self.name = name
        self.path = path
        self.options = options
        self.metadata = metadata
        self._llama = llama
        self._lock = threading.Lock()
        self._vocab = llama._model.vocab
        self._ctx = llama._ctx.ctx
        self.n_ctx: int = llama.n_ctx()
        self.n_vocab: int = llama.n_vocab()
        self._piece_buf = ctypes.create_string_buffer(256)
        self._memory = _memory_bytes(llama, options, metadata, self.n_ctx, context_bytes)
        self.embedding = options.embedding
        self.chat = None
        if not options.embedding:
            choice = choose_template(options, metadata)
            self.chat = ChatRenderer(choice, _token_text(llama, llama.token_bos()), _token_text(llama, llama.token_eos()))
        #: Prompt tokens the last generation found already in the KV cache.
        self.last_reused_tokens = 0

    # ----------------------------------------------------------------- loading

    @classmethod
    def load(cls, name: str, path: str, options: LlamaOptions) -> LlamaCppModel:
        """Check the file, then load it; every failure is a :class:`ModelLoadError` naming
        ``path`` and the reason."""
        path = os.path.expanduser(path)
        try:
            info = read_info(path)
        except GGUFError as exc:
            raise ModelLoadError(name, f"{path}: {exc}") from None

        from llama_cpp import Llama

        from . import logging_bridge
        from .rpc import RPCUnavailable, register_rpc_servers

        logging_bridge.install()
        servers = rpc_server_list(options.rpc_servers)
        if servers:
            try:
                register_rpc_servers(servers)
            except RPCUnavailable as exc:
                raise ModelLoadError(name, f"{path}: {exc}") from None
        try:
            with logging_bridge.capture() as log:
                llama = Llama(model_path=path, **llama_kwargs(options, info.metadata))
        except (ValueError, RuntimeError, OSError, MemoryError) as exc:
            errors = [line.strip() for line in log if "error" in line.lower() or "failed" in line.lower()]
            detail = f" ({errors[-1]})" if errors else ""
            raise ModelLoadError(name, f"{path}: llama.cpp could not load it: {exc}{detail}") from None
        try:
            return cls(name, path, llama, options, info.metadata, context_buffer_bytes(log))
        except Exception as exc:
            llama.close()
            raise ModelLoadError(name, f"{path}: {exc}") from None

    # ----------------------------------------------------------------- tokens

    def tokenize(self, text: str) -> list[int]:
        """The tokens of ``text`` itself: no BOS, special tokens read as plain text."""
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _prompt_tokens(self, text: str) -> list[int]:
        """Tokens of a rendered prompt: BOS when the model wants one (once, even if the
        template wrote it too), special tokens such as ``<start_of_turn>`` recognised."""
        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        bos = self._llama.token_bos()
        if self._llama._model.add_bos_token() and bos >= 0 and tokens[:1] != [bos]:
            tokens.insert(0, bos)
        return tokens

    def _piece(self, token: int) -> bytes:
        """The bytes a token stands for; control tokens (``</s>``) stand for nothing."""
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    # ----------------------------------------------------------------- generation

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Chunk]:
        """Check the request now (errors come before any chunk), then return the stream."""
        if self.chat is None:
            raise InvalidRequest(
                f"The model '{self.name}' is loaded for embeddings (embedding = true) and cannot generate text",
                "model",
            )
        plan = self._plan(request)
        return self._stream(plan, request, cancel)

    def _plan(self, request: GenerationRequest) -> _Plan:
        tools = request.tools if request.tool_choice != "none" else None
        names = tool_names(tools)
        forced = None
        if tools and (request.tool_choice == "required" or isinstance(request.tool_choice, dict)):
            forced = forced_tool_schema(tools, request.tool_choice)
        if request.is_chat:
            prompt = self.chat.render(request.messages, tools)
            stops = (*request.stop, *self.chat.stops)
        elif request.prompt is not None:
            prompt = request.prompt
            stops = tuple(request.stop)
        else:
            raise InvalidRequest("A request needs messages or a prompt", "messages")
        tokens = self._prompt_tokens(prompt)
        if not tokens:
            raise InvalidRequest("The prompt is empty", "prompt")
        if len(tokens) >= self.n_ctx:
            raise ContextLengthExceeded(len(tokens), self.n_ctx)
        grammar = grammar_for(request.response_format, forced)
        seed = request.seed if request.seed is not None else self.options.seed
        sampler = SamplerChain(self._vocab, self.n_vocab, request, seed, grammar)
        budget = self.n_ctx - len(tokens)
        if request.max_tokens is not None:
            budget = min(budget, max(request.max_tokens, 0))
        return _Plan(tokens=tokens, stops=stops, sampler=sampler, budget=budget, tool_names=names)

    def _stream(self, plan: _Plan, request: GenerationRequest, cancel: CancelToken) -> Iterator[Chunk]:
        n_prompt = len(plan.tokens)
        try:
            while not self._lock.acquire(timeout=LOCK_POLL_SECONDS):
                if cancel.cancelled:
                    yield Chunk(finish_reason="cancelled", prompt_tokens=n_prompt, completion_tokens=0)
                    return
            try:
                yield from self._run(plan, request, cancel)
            finally:
                self._lock.release()
        finally:
            plan.sampler.close()

    def _run(self, plan: _Plan, request: GenerationRequest, cancel: CancelToken) -> Iterator[Chunk]:
        llama, lib = self._llama, self._lib
        stream = TextStream(
            stops=plan.stops,
            capture=TOOL_CALL_MARKERS if plan.tool_names else (),
            capture_leading_json=bool(plan.tool_names),
        )
        logprobs = LogprobReader(self._ctx, self.n_vocab, self._piece, request.top_logprobs) if request.logprobs else None
        pending: deque = deque()  # (start, end, TokenLogprob) waiting for their text to go out
        sent_chars = 0
        n_gen = 0
        finish = "length"

        if not self._load_prompt(plan.tokens, cancel):
            finish = "cancelled"
        else:
            while True:
                if cancel.cancelled:
                    finish = "cancelled"
                    break
                if n_gen >= plan.budget:
                    finish = "length"
                    break
                token = plan.sampler.sample(self._ctx)
                entry = logprobs.read(token) if logprobs else None
                if lib.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                n_gen += 1
                start = stream.decoded_chars
                text = stream.feed(self._piece(token))
                if entry is not None:
                    pending.append((start, stream.decoded_chars, entry))
                sent_chars += len(text)
                released = _release(pending, sent_chars, final=False)
                if text or released:
                    yield Chunk(text=text, logprobs=released or None)
                if stream.stopped:
                    finish = "stop"
                    break
                if n_gen < plan.budget:
                    llama.eval([token])

        text = stream.finish()
        sent_chars += len(text)
        tool_calls = None
        if stream.captured:
            tool_calls = parse_tool_calls(stream.captured, plan.tool_names)
            if tool_calls is None:
                text += stream.captured
                sent_chars += len(stream.captured)
            elif finish != "cancelled":
                finish = "tool_calls"
        released = _release(pending, sent_chars, final=True) if logprobs else ()
        yield Chunk(
            text=text,
            finish_reason=finish,
            logprobs=released or None,
            tool_calls=tuple(tool_calls) if tool_calls else None,
            prompt_tokens=len(plan.tokens),
            completion_tokens=n_gen,
        )

    def _load_prompt(self, tokens: list[int], cancel: CancelToken) -> bool:
        """Put ``tokens`` in the KV cache, keeping the prefix it already holds.

        The last prompt token is always decoded again so its logits are fresh. Returns
        False when cancelled between batches.
        """
        import numpy as np

        llama = self._llama
        cached = llama.input_ids[: llama.n_tokens]
        n = min(len(cached), len(tokens))
        diff = np.nonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))[0]
        common = int(diff[0]) if len(diff) else n
        common = min(common, len(tokens) - 1)
        if common > 0 and llama._ctx.kv_cache_seq_rm(-1, common, -1):
            llama.n_tokens = common
        else:
            common = 0
            llama.reset()
        self.last_reused_tokens = common
        rest = tokens[common:]
        for i in range(0, len(rest), llama.n_batch):
            if cancel.cancelled:
                return False
            llama.eval(rest[i : i + llama.n_batch])
        return True

    # ----------------------------------------------------------------- embeddings

    def embed(self, inputs: list[str]) -> Embeddings:
        """L2-normalised vectors, one per input. An input longer than ``n_batch`` tokens is
        :class:`ContextLengthExceeded`, not silently cut."""
        if not self.embedding:
            raise InvalidRequest(
                f"The model '{self.name}' was not loaded for embeddings; set embedding = true in its config",
                "model",
            )
        if not inputs:
            raise InvalidRequest("input must not be empty", "input")
        limit = self._llama.n_batch
        for text in inputs:
            count = len(self._llama.tokenize(text.encode("utf-8")))
            if count > limit:
                raise ContextLengthExceeded(count, limit)
        with self._lock:
            vectors, total = self._llama.embed(list(inputs), normalize=True, truncate=False, return_count=True)
        return Embeddings(vectors=[list(map(float, v)) for v in vectors], prompt_tokens=total)

    # ----------------------------------------------------------------- lifecycle

    def memory_bytes(self) -> int:
        """Weights plus the KV cache, logits and compute buffers (see :func:`_memory_bytes`)."""
        return self._memory

    def close(self) -> None:
        """Free the context, the KV cache and the weights (waits for a running generation)."""
        with self._lock:
            llama, self._llama = self._llama, None
            self.chat = None
            if llama is not None:
                llama.close()
                del llama
        gc.collect()
        _trim_heap()


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so the process RSS
    really drops after an unload. A no-op where malloc_trim does not exist."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


class _Plan:
    """What :meth:`LlamaCppModel._plan` worked out before the first chunk."""

    __slots__ = ("tokens", "stops", "sampler", "budget", "tool_names")

    def __init__(self, *, tokens, stops, sampler, budget, tool_names):
        self.tokens = tokens
        self.stops = stops
        self.sampler = sampler
        self.budget = budget
        self.tool_names = tool_names


def _release(pending: deque, sent_chars: int, final: bool) -> tuple:
    """Log-probs of the tokens whose text has gone out. At the end, tokens whose text was
    never sent (a stop string, a captured tool call) are dropped."""
    out = []
    while pending and pending[0][1] <= sent_chars:
        out.append(pending.popleft()[2])
    if final:
        while pending:
            start, _end, entry = pending.popleft()
            if start < sent_chars:
                out.append(entry)
    return tuple(out)


def _token_text(llama, token: int) -> str:
    return llama._model.token_get_text(token) if token >= 0 else ""


def llama_kwargs(options: LlamaOptions, metadata: dict[str, Any]) -> dict[str, Any]:
    """``Llama(...)`` arguments for ``options``. Logging stays quiet (``verbose=False``)."""
    import llama_cpp

    n_batch = options.n_batch
    kwargs: dict[str, Any] = dict(
        n_ctx=options.n_ctx,
        n_batch=n_batch,
        # Embeddings need a whole input in one micro-batch.
        n_ubatch=n_batch if options.embedding else min(options.n_ubatch, n_batch),
        n_threads=options.threads(),
        n_threads_batch=options.threads_batch(),
        n_gpu_layers=options.n_gpu_layers,
        split_mode=_SPLIT_MODES[options.split_mode],
        main_gpu=options.main_gpu,
        tensor_split=options.tensor_split,
        # llama-cpp-python 0.3.36 takes on/off only: "auto" is on, and llama.cpp itself
        # turns it off for architectures that cannot use it.
        flash_attn=options.flash_attn is not False,
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


_BUFFER_LINE = re.compile(r"\b(?:KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")


def context_buffer_bytes(log_lines: list[str]) -> int | None:
    """Bytes of the KV-cache, output and compute buffers llama.cpp reported allocating while
    it created the context, or None when it reported none."""
    sizes = [float(m.group(1)) for line in log_lines if (m := _BUFFER_LINE.search(line))]
    return int(sum(sizes) * 1024 * 1024) if sizes else None


def _memory_bytes(llama, options: LlamaOptions, metadata: dict[str, Any], n_ctx: int, context_bytes: int | None) -> int:
    """Weights (``llama_model_size``: the bytes of every tensor, host or device) plus what the
    context allocated: the KV cache, the logits buffer and the compute buffer, as llama.cpp
    reports them at load. Without that report, the KV cache is computed instead:
    ``n_layer × n_ctx × n_head_kv × (key_length × bytes(type_k) + value_length × bytes(type_v))``.
    """
    import llama_cpp

    weights = int(llama_cpp.llama_model_size(llama._model.model))
    if context_bytes is not None:
        return weights + context_bytes
    arch = metadata.get("general.architecture", "")

    def meta(key: str, default: int) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        return value if isinstance(value, int) else default

    n_layer = meta("block_count", 0)
    n_embd = meta("embedding_length", 0)
    n_head = meta("attention.head_count", 1) or 1
    n_head_kv = meta("attention.head_count_kv", n_head)
    key_len = meta("attention.key_length", n_embd // n_head)
    value_len = meta("attention.value_length", n_embd // n_head)
    per_token = n_head_kv * (
        key_len * KV_CACHE_TYPE_BYTES[options.type_k] + value_len * KV_CACHE_TYPE_BYTES[options.type_v]
    )
    return weights + int(n_layer * n_ctx * per_token)
