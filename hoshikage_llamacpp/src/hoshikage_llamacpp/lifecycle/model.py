"""A GGUF model loaded in llama.cpp: :class:`LlamaCppModel` implements the core's
:class:`~hoshikage_core.protocol.LoadedModel`.

It puts the rooms together for one model: :mod:`.loader` (file checks, weights, context),
the chat template, reasoning and tool-call forms of :mod:`..dialects`,
:mod:`..frontend.planning` (a request's prompt, budget and grammar), a sampler chain per
choice, :mod:`..engine.core` (slots and the batched step loop), :mod:`.memory` (what it
holds) and, for models loaded with ``embedding = true``, llama-cpp-python's
``Llama.embed``; it renders and tokenizes what scoring, tokenizing and templating ask.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
from typing import Any

import attrs
from hoshikage_core.errors import ContextLengthExceeded, InvalidRequest
from hoshikage_core.protocol import (
    CancelToken,
    ChunkSink,
    Embeddings,
    EngineStats,
    GenerationRequest,
    Ranking,
    ScoreRequest,
)

from ..dialects.chat import ChatRenderer, choose_template
from ..dialects.reasoning import detect
from ..dialects.tools.families import FORMATS
from ..dialects.tools.families import detect as detect_tool_format
from ..engine.core import Engine, Job
from ..engine.sampling import sampler_chain
from ..engine.spec import DraftModel, Speculation, vocab_mismatch
from ..frontend.planning import plan
from ..llama.pieces import token_piece
from ..llama.threads import compute, on_own_thread
from ..options import LlamaOptions
from . import pages
from .loader import Loaded, load, pads_lone_rows, warm_up
from .memory import device_bytes, key_length, memory_bytes, repacked_bytes, repacked_weights

log = logging.getLogger("hoshikage.llamacpp.model")

#: Prompt tokens tokenized again with a continuation to find its tokens in context.
TAIL = 4


class LlamaCppModel:
    """One GGUF model in llama.cpp. Build it with :meth:`load`."""

    def __init__(
        self,
        name: str,
        loaded: Loaded,
        options: LlamaOptions,
        default_max_tokens: int | None = None,
        draft: Loaded | None = None,
    ):
        import llama_cpp

        from ..engine.cache.disk import DiskCache

        self._lib = llama_cpp
        self.name = name
        self.path = loaded.path
        self.options = options
        #: Token budget of a request that gives none; None: up to the context.
        self.default_max_tokens = default_max_tokens
        self.metadata: dict[str, Any] = loaded.metadata
        self._loaded = loaded
        self._model = loaded.model
        self._vocab = loaded.model.vocab
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._piece_lock = threading.Lock()
        self.embedding = options.embedding
        self.chat: ChatRenderer | None = None
        #: The reasoning form of the chat template (None: none, or ``reasoning = "off"``).
        self.reasoning = None
        #: The family's tool-call form (the ``tool_format`` option, else detected).
        self.tool_format = FORMATS["hermes"]
        #: Special tokens rendered as text (reasoning and tool-call markers).
        self._preserved: frozenset[int] = frozenset()
        self._engine: Engine | None = None
        self._embed_lock = threading.Lock()
        self.disk = None
        #: The draft model (``draft_model``), loaded and freed with this one.
        self._draft: DraftModel | None = None
        #: The multimodal projector (``mmproj``), loaded and freed with this one.
        self.projector = None
        if options.embedding:
            self.capacity = 1
            self.n_ctx = loaded.llama.n_ctx()
            kv_cells = self.n_ctx
        else:
            ctx = loaded.context.ctx
            self.n_ctx = int(llama_cpp.llama_n_ctx_seq(ctx))
            self.capacity = int(llama_cpp.llama_n_seq_max(ctx))
            #: The largest batch llama.cpp computes at once (a non-causal image must fit).
            self.n_ubatch = int(llama_cpp.llama_n_ubatch(ctx))
            kv_cells = int(llama_cpp.llama_n_ctx(ctx))
            #: States an earlier load left on disk, and where this one leaves its own.
            self.disk = DiskCache.open(name, loaded.path, options)
            choice = choose_template(options, self.metadata)
            self.chat = ChatRenderer(
                choice,
                self._token_text(self._model.token_bos()),
                self._token_text(self._model.token_eos()),
                options.chat_template_kwargs,
            )
            if draft is not None:
                self._draft = DraftModel(draft, self.n_vocab, int(llama_cpp.llama_n_batch(ctx)))
            trims = _can_trim(ctx)  # speculation and pad rows drop tokens again
            speculates = trims and (options.ngram_drafts() or draft is not None)
            if options.mmproj:
                from ..llama.multimodal import Projector

                self.projector = Projector(
                    name, os.path.expanduser(options.mmproj), self._model.model, options.threads()
                )
            speculation = (
                Speculation(
                    options.draft_max,
                    options.ngram_drafts(),
                    self._draft,
                    int(llama_cpp.llama_n_ubatch(ctx)),
                    pool=options.ngram_pool,
                )
                if speculates and options.draft_max > 0
                else None
            )
            if options.reasoning != "off":
                self.reasoning = detect(choice.template)
            self.tool_format = (
                FORMATS[options.tool_format]
                if options.tool_format
                else detect_tool_format(choice.template)
            )
            markers = (
                *(self.reasoning.markers if self.reasoning else ()),
                *self.tool_format.markers,
            )
            self._preserved = self._single_tokens(markers)
            self._engine = Engine(
                name=name,
                ctx=ctx,
                vocab=self._vocab,
                n_vocab=self.n_vocab,
                parallel=self.capacity,
                n_batch=int(llama_cpp.llama_n_batch(ctx)),
                piece=self._engine_piece,
                cache_bytes=options.cache_ram * 1024 * 1024,
                n_swa=0
                if options.swa_full
                else int(llama_cpp.llama_model_n_swa(self._model.model)),
                disk=self.disk,
                speculation=speculation,
                projector=self.projector,
                n_embd=int(llama_cpp.llama_model_n_embd_inp(self._model.model)),
                pads_lone_rows=trims
                and pads_lone_rows(
                    options, key_length(self.metadata), repacked_weights(loaded.placement) > 0
                ),
            )
        #: Bytes per llama.cpp buffer and kind (model, KV, compute, output): where the weights
        #: and the KV cache went.
        self.placement: dict[str, dict[str, int]] = dict(loaded.placement)
        self._memory = memory_bytes(
            loaded.model.model, options, self.metadata, kv_cells, loaded.context_bytes
        ) + repacked_bytes(self.placement)
        if self.projector is not None:
            self._memory += self.projector.memory_bytes
        if draft is not None:  # its weights and its slots' KV cache are held for this model
            self._memory += memory_bytes(
                draft.model.model, options, draft.metadata, kv_cells, draft.context_bytes
            )

    @classmethod
    def load(
        cls,
        name: str,
        path: str,
        options: LlamaOptions,
        default_max_tokens: int | None = None,
        progress=None,
        before_warm_up=None,
        alone: bool = False,
    ) -> LlamaCppModel:
        """Check the file, load it and warm it up (:func:`.loader.warm_up`); every failure is
        a :class:`ModelLoadError` naming ``path`` and the reason. ``default_max_tokens``
        bounds requests that give no ``max_tokens`` (``create_backend`` passes the model's or
        the server's default); None: ``options.max_tokens``, and without that, up to the
        context. ``progress`` is called with the share of the weights loaded (0.0 to 1.0)
        while they load; ``before_warm_up``, if given, with the buffers llama.cpp allocated (see
        :func:`.memory.buffer_placement`) just before the warm-up decode. ``alone``: this
        process runs nothing else while it loads (a model process), so the zero pages of
        what the load mapped, the KV cache's first, go back to the kernel after the warm-up
        (:mod:`.pages`).

        All of it runs on a thread of its own that has ended when this returns (see
        :mod:`..llama.threads`): the engine's thread is then the only one that computes."""
        return on_own_thread(
            cls._load, name, path, options, default_max_tokens, progress, before_warm_up, alone
        )

    @classmethod
    def _load(
        cls, name, path, options, default_max_tokens, progress, before_warm_up, alone
    ) -> LlamaCppModel:
        from hoshikage_core.errors import ModelLoadError

        mapped = pages.mapped() if alone and pages.may_give_back(options) else None
        loaded = load(name, path, options, progress)
        draft = None
        try:
            if before_warm_up is not None:
                before_warm_up(loaded.placement)
            warm_up(loaded)
            draft_path = None if options.embedding else options.draft_model_used()
            if draft_path is not None:
                draft = _load_draft(name, draft_path, options, loaded)
                warm_up(draft)
            if mapped is not None:
                try:
                    given = pages.give_back(mapped)
                except (OSError, AttributeError, ValueError):  # memory is only held longer
                    log.debug("%s: zero pages not given back", name, exc_info=True)
                else:
                    log.debug("%s: %.1f MiB of zero pages given back", name, given / 2**20)
            if default_max_tokens is None:
                default_max_tokens = options.max_tokens or None
            return cls(name, loaded, options, default_max_tokens, draft)
        except ModelLoadError:
            if draft is not None:
                draft.close()
            loaded.close()
            raise
        except Exception as exc:
            if draft is not None:
                draft.close()
            loaded.close()
            raise ModelLoadError(name, f"{loaded.path}: {exc}") from None

    # ----------------------------------------------------------------- tokens

    def tokenize(self, text: str) -> list[int]:
        """The tokens of ``text`` itself: no BOS, special tokens read as plain text."""
        return self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def prompt_tokens(self, text: str) -> list[int]:
        """Tokens of a rendered prompt: BOS when the model wants one (once, even if the
        template wrote it too), special tokens such as ``<start_of_turn>`` recognised."""
        tokens = self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        bos = self._model.token_bos()
        if self._model.add_bos_token() and bos >= 0 and tokens[:1] != [bos]:
            tokens.insert(0, bos)
        return tokens

    @property
    def vocab(self):
        """The ``llama_vocab`` pointer."""
        return self._vocab

    def bos_tokens(self) -> list[int]:
        """The BOS token when the model wants one at the start of a prompt, else none."""
        bos = self._model.token_bos()
        return [bos] if self._model.add_bos_token() and bos >= 0 else []

    @property
    def modalities(self) -> tuple[str, ...]:
        """What it takes besides text: "vision", "audio" (from its projector)."""
        return self.projector.modalities if self.projector is not None else ()

    def media_prompt_tokens(self, text: str, media, field: str):
        """Tokens of a rendered prompt whose media stand as markers, with placeholders for
        each media chunk (see :mod:`..llama.multimodal`), and the chunks' spans. BOS as in
        :meth:`prompt_tokens`."""
        if self.projector is None:
            raise InvalidRequest(
                f"Invalid '{media[0].field}': the model '{self.name}' takes no {media[0].kind}"
                " input: it has no multimodal projector (mmproj)",
                media[0].field,
            )
        tokens, spans = self.projector.tokenize(text, media, field)
        bos = self._model.token_bos()
        if self._model.add_bos_token() and bos >= 0 and tokens[:1] != [bos]:
            tokens.insert(0, bos)
            for span in spans:
                span.start += 1
                span.end += 1
        return tokens, spans

    def special_tokens(self, text: str) -> list[int]:
        """Tokens of ``text`` with special tokens recognised, no BOS."""
        return self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _single_tokens(self, markers) -> frozenset[int]:
        """The ids of the markers that are one special token each."""
        ids = set()
        for marker in markers:
            tokens = self.special_tokens(marker)
            if len(tokens) == 1:
                ids.add(tokens[0])
        return frozenset(ids)

    def _engine_piece(self, token: int) -> bytes:
        """The bytes a token stands for (engine thread only: it reuses one buffer). Control
        tokens render as nothing, except the preserved markers (llama-server's rule)."""
        return token_piece(self._vocab, token, token in self._preserved, self._piece_buf)

    def _token_text(self, token: int) -> str:
        return self._model.token_get_text(token) if token >= 0 else ""

    # ----------------------------------------------------------------- generation

    def generate(
        self, request: GenerationRequest, cancel: CancelToken, sink: ChunkSink, n: int = 1
    ) -> None:
        """Plan the request here (its errors come before anything starts), then queue its
        ``n`` choices on the engine."""
        if self._engine is None:
            raise InvalidRequest(
                f"The model '{self.name}' is loaded for embeddings (embedding = true) and cannot generate text",
                "model",
            )
        if n < 1:
            raise InvalidRequest("n must be at least 1", "n")
        defaults = {
            k: v for k, v in self.options.sampling_defaults().items() if getattr(request, k) is None
        }
        if defaults:  # the model's own sampling defaults, for what the request leaves out
            request = attrs.evolve(request, **defaults)
        if request.is_chat and self.options.system:  # the model's own system message
            request = attrs.evolve(request, messages=self._with_system(request.messages))
        planned = plan(self, request)
        samplers = []
        try:
            for index in range(n):
                samplers.append(sampler_chain(planned, self._vocab, self.n_vocab, index))
        except BaseException:
            for sampler in samplers:
                sampler.close()
            raise
        self._engine.submit(Job(planned, n, sink, cancel, samplers))

    def _with_system(self, messages):
        """``messages``, led by the model's own ``system`` message when it has one and they
        bring none (as Ollama reads a Modelfile's SYSTEM)."""
        system = self.options.system
        if not system or any(m.get("role") in ("system", "developer") for m in messages):
            return messages
        return ({"role": "system", "content": system}, *messages)

    def score(self, request: ScoreRequest, cancel: CancelToken, sink: ChunkSink) -> None:
        """Render and tokenize every prompt and continuation here (errors come before
        anything starts), then queue the whole tree on the engine (:mod:`.scoring`)."""
        from ..engine.scoring import Branch, ScoreJob

        if self._engine is None:
            raise InvalidRequest(
                f"The model '{self.name}' is loaded for embeddings (embedding = true) and cannot score text",
                "model",
            )
        if not request.prompts:
            raise InvalidRequest("Nothing to score", "prompts")
        branches, memo = [], {}
        for prompt in request.prompts:
            if prompt.messages is not None:
                text = self.chat.render(self._with_system(prompt.messages), None)
                field = "messages"
            elif prompt.prompt is not None:
                text, field = prompt.prompt, "prompt"
            else:
                raise InvalidRequest("A prompt needs messages or text", "prompt")
            tokens = self.prompt_tokens(text)
            if not tokens:
                raise InvalidRequest("The prompt is empty", field)
            if not prompt.continuations:
                raise InvalidRequest("A prompt needs at least one continuation", field)
            conts = [self._continuation(tokens, c, memo) for c in prompt.continuations]
            if prompt.end_of_turn:
                conts = [[*c, self._end_of_turn()] for c in conts]
            longest = len(tokens) + max(len(c) for c in conts)
            if longest > self.n_ctx:
                raise ContextLengthExceeded(longest, self.n_ctx, param=field)
            branches.append(Branch(tokens, conts))
        self._engine.submit_score(ScoreJob(branches, sink, cancel))

    def _continuation(self, tokens: list[int], continuation: str, memo: dict) -> list[int]:
        """The tokens of ``continuation`` after the prompt ``tokens`` as the model reads them
        together, so a label is tokenized as it would be generated: the prompt's last
        :data:`TAIL` tokens are tokenized again with it, and what follows them is the
        continuation. Where the two merge across the boundary, its tokens on their own."""
        if not continuation:
            raise InvalidRequest("A continuation must not be empty", "continuations")
        tail = tuple(tokens[-TAIL:])
        key = (tail, continuation)
        if key not in memo:
            text = b"".join(self.token_bytes(t, special=True) for t in tail)
            whole = self._model.tokenize(
                text + continuation.encode("utf-8"), add_bos=False, special=True
            )
            if tuple(whole[: len(tail)]) == tail and len(whole) > len(tail):
                memo[key] = whole[len(tail) :]
            else:
                memo[key] = self.tokenize(continuation)
        return memo[key]

    def _end_of_turn(self) -> int:
        """The token that ends the model's turn: end-of-turn where the vocabulary has one,
        else end-of-sequence."""
        token = self._lib.llama_vocab_eot(self._vocab)
        return token if token >= 0 else self._lib.llama_vocab_eos(self._vocab)

    def encode(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        """The core's :class:`~hoshikage_core.protocol.TokenCodec`: tokens as llama-server's
        ``/tokenize`` gives them."""
        return self._model.tokenize(
            text.encode("utf-8"), add_bos=add_special, special=parse_special
        )

    def apply_template(self, messages, tools=None) -> str:
        if self.chat is None:
            raise InvalidRequest(
                f"The model '{self.name}' is loaded for embeddings and has no chat", "model"
            )
        return self.chat.render(self._with_system(messages), tools)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The bytes ``token`` stands for; ``special``: control tokens as their text."""
        if not 0 <= token < self.n_vocab:
            raise InvalidRequest(
                f"Token {token} is not in the vocabulary (0..{self.n_vocab - 1})", "tokens"
            )
        return token_piece(self._vocab, token, special, ctypes.create_string_buffer(256))

    def stats(self) -> EngineStats:
        engine = self._engine
        if engine is None:
            return EngineStats(slots=self.capacity)
        return EngineStats(
            slots=self.capacity,
            running=engine.running,
            prompt_tokens=engine.prompt_tokens,
            cached_tokens=engine.cached_tokens,
            draft_tokens=engine.draft_tokens,
            draft_accepted=engine.draft_accepted,
        )

    # ----------------------------------------------------------------- embeddings

    def embed(self, inputs: list[str]) -> Embeddings:
        """L2-normalised vectors, one per input. An input longer than ``n_batch`` tokens is
        :class:`ContextLengthExceeded`, not silently cut."""
        llama = self._loaded.llama
        if llama is None:
            raise InvalidRequest(
                f"The model '{self.name}' was not loaded for embeddings; set embedding = true in its config",
                "model",
            )
        if not inputs:
            raise InvalidRequest("input must not be empty", "input")
        limit = llama.n_batch
        for text in inputs:
            count = len(llama.tokenize(text.encode("utf-8")))
            if count > limit:
                raise ContextLengthExceeded(count, limit, param="input")
        with self._embed_lock:
            vectors, total = compute(
                llama.embed, list(inputs), normalize=True, truncate=False, return_count=True
            )
        return Embeddings(vectors=[list(map(float, v)) for v in vectors], prompt_tokens=total)

    # ----------------------------------------------------------------- reranking

    @property
    def ranks(self) -> bool:
        """Whether the model has a relevance head: loaded for embeddings with rank pooling."""
        llama = self._loaded.llama if self._loaded is not None else None
        return llama is not None and llama.pooling_type() == self._lib.LLAMA_POOLING_TYPE_RANK

    def rerank(self, query: str, documents: list[str]) -> Ranking | None:
        """The relevance head's first output for each (query, document) pair, None without
        one (:mod:`.rerank`)."""
        if not self.ranks:
            return None
        from .rerank import rank

        with self._embed_lock:
            return compute(rank, self._loaded.llama, self.metadata, query, documents)

    # ----------------------------------------------------------------- lifecycle

    def memory_bytes(self) -> int:
        """Weights plus the KV cache of every slot, logits and compute buffers."""
        return self._memory

    def device_memory_bytes(self) -> int:
        """The share of :meth:`memory_bytes` on this host's GPUs, from the buffers llama.cpp
        reported allocating (:func:`.memory.device_bytes`): 0 on a CPU-only build, and RPC
        servers are not this host's GPU. Ollama's ``size_vram`` reports it."""
        return device_bytes(self.placement)

    def close(self) -> None:
        """Stop the engine, then free the context, the KV cache and the weights (the draft
        model's too). The slots' prompt states are copied out first and written to the disk
        cache afterwards, by a thread of their own, so writing never holds the memory back."""
        states = []
        if self._engine is not None:
            self._engine.close()
            if self.disk is not None:
                try:
                    states = self._engine.saved_states()
                except Exception:
                    log.exception("copying the prompt states of %s failed", self.name)
            self._engine = None
        if self._draft is not None:
            self._draft.close()
            self._draft = None
        if self.projector is not None:
            self.projector.close()
            self.projector = None
        with self._embed_lock:
            loaded, self._loaded = self._loaded, None
            self.chat = None
            if loaded is not None:
                loaded.close()
                del loaded
        self._model = None
        gc.collect()
        _trim_heap()
        if states and self.disk is not None:
            self.disk.write_later(states)


def _load_draft(name: str, path: str, options: LlamaOptions, target: Loaded) -> Loaded:
    """The draft model for ``target``, with the same slots and context length, refused with
    a :class:`ModelLoadError` when its vocabulary differs (see :func:`..engine.spec.vocab_mismatch`)."""
    from hoshikage_core.errors import ModelLoadError

    draft_options = attrs.evolve(
        options, draft_model=None, speculative="off", cache_ram=0, chat_template=None
    )
    draft = load(name, path, draft_options)
    reason = vocab_mismatch(target.model.vocab, draft.model.vocab)
    if reason is not None:
        draft.close()
        raise ModelLoadError(name, f"draft_model {path} cannot draft for {target.path}: {reason}")
    return draft


def _can_trim(ctx) -> bool:
    """Whether a sequence's last tokens can be dropped from its cache (speculation needs it):
    not for recurrent or hybrid models, whose state cannot be rolled back."""
    import llama_cpp

    model = llama_cpp.llama_get_model(ctx)
    return not (llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model))


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so the process RSS
    really drops after an unload. A no-op where malloc_trim does not exist."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass
