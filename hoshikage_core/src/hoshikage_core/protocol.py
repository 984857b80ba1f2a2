"""The contract between the core and a backend.

``create_backend`` returns an object implementing :class:`LoadedModel`. Its methods are
plain synchronous calls, which the core makes from a worker thread, never on the event loop.
Generation is push-based: :meth:`LoadedModel.generate` checks a request, hands it to the
model's own engine and returns; the engine then pushes each choice's chunks into a
:class:`ChunkSink`. The scheduler never gives a model more concurrent requests than its
:attr:`LoadedModel.capacity`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import attrs


class CancelToken:
    """A cancel signal shared between the event loop and a worker thread.

    Backends check :attr:`cancelled` once per token and stop within one token of it.
    """

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@attrs.frozen(kw_only=True)
class ResponseFormat:
    """``text``, ``json_object`` (any JSON) or ``json_schema`` (JSON valid against ``schema``)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool = False


#: How text given in several parts becomes one message's content. This is the one rule,
#: used by every API surface (OpenAI content parts, Anthropic text blocks, Responses items)
#: and by backends for plugin callers that pass parts: the parts are joined with a newline.
TEXT_PART_SEPARATOR = "\n"


def join_text(parts: Iterable[str]) -> str:
    """The content of a message given as several text parts (:data:`TEXT_PART_SEPARATOR`)."""
    return TEXT_PART_SEPARATOR.join(parts)


#: The text that stands for one image or audio clip in a message's content: the API surfaces
#: put it where the part was and add the part to :attr:`GenerationRequest.media`, in order.
#: It is llama.cpp's own default (``mtmd_default_marker``), so templates pass it through.
MEDIA_MARKER = "<__media__>"


@attrs.frozen(kw_only=True)
class Media:
    """One decoded image (``kind`` "image": ``width`` × ``height`` RGB pixels, 3 bytes each)
    or audio clip (``kind`` "audio": the file as sent, WAV, MP3 or FLAC, which the backend
    decodes at its projector's sample rate; ``max_seconds`` caps its length, 0: no cap).
    ``id`` is the hash of the content, which is what the prompt cache compares; ``field``
    names where it came from in the request, for errors."""

    kind: Literal["image", "audio"]
    data: bytes = attrs.field(repr=False)
    width: int = 0
    height: int = 0
    id: str = ""
    field: str = "messages"
    max_seconds: float = 0.0


@attrs.frozen(kw_only=True)
class GenerationRequest:
    """One choice's worth of generation. ``None`` sampling values mean "backend default".

    Exactly one of ``messages`` (chat), ``prompt`` and ``prompt_token_ids`` (completion) is
    set. A message's ``content`` is a string; the API surfaces join text parts with
    :func:`join_text` before it gets here.
    """

    messages: tuple[Mapping[str, Any], ...] | None = None
    prompt: str | None = None
    #: A completion's prompt as ids of the model's own vocabulary, read as they are (nothing
    #: added, no BOS): the token-array prompts of OpenAI's completions API.
    prompt_token_ids: tuple[int, ...] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: ResponseFormat | None = None
    tools: tuple[Mapping[str, Any], ...] | None = None
    tool_choice: str | Mapping[str, Any] | None = None
    #: The largest grammar the backend may compile for this request (``[server]
    #: max_grammar_bytes``, set by the session; see :mod:`hoshikage_core.limits`). None: no cap.
    max_grammar_bytes: int | None = None
    #: Whether the backend may decode speculatively (guess tokens and verify them) where
    #: the model is set up for it; the output is the same either way.
    speculative: bool = True
    #: A GBNF grammar (llama.cpp's format) that constrains the raw output, special tokens and
    #: reasoning or tool-call markers included, before anything is parsed out of it.
    grammar: str | None = None
    #: Extra variables for the chat template (``chat_template_kwargs``), over the model's own.
    template_kwargs: Mapping[str, Any] | None = None
    #: Whether the model should reason before it answers: None (the model's default), False
    #: (the template's own switch turned off, and no reasoning shown), True, or an effort
    #: level ("low", "medium", "high") for templates that take one.
    reasoning: bool | str | None = None
    #: Most tokens of reasoning before the engine ends the think block itself; None: no limit.
    reasoning_budget: int | None = None
    #: Fill in the middle: with ``prompt`` as the code before the gap, this is the code
    #: after it (the model must have FIM tokens). ``fim_files`` are other files given as
    #: context before it, ``{"filename", "text"}`` each (llama-server's ``input_extra``).
    suffix: str | None = None
    fim_files: tuple[Mapping[str, str], ...] = ()
    #: Images and audio, in the order their :data:`MEDIA_MARKER` appears in the prompt
    #: (the messages' contents, or ``prompt``).
    media: tuple[Media, ...] = ()
    #: A conversation's key (the Responses API's ``prompt_cache_key``): a hint that the
    #: backend may use to give the request the slot that served the same key last.
    cache_key: str | None = None
    #: Token ids read before the prompt, as they are (no BOS between them): Ollama's
    #: ``context``, an earlier prompt and answer of ``/api/generate``.
    prefix_token_ids: tuple[int, ...] | None = None
    #: Ask for the prompt's and the answer's token ids on the last chunk
    #: (:attr:`Chunk.token_ids`): what Ollama's ``/api/generate`` returns as ``context``.
    return_token_ids: bool = False
    #: A chat whose prompt does not fit the context may lose its oldest turns until it does
    #: (system messages and the turn being answered are kept), instead of being refused: the
    #: Responses API's ``truncation: "auto"``, Ollama's chat.
    truncate: bool = False
    #: Whether the caller reads the chunks as they come (a streamed answer). False: it reads
    #: them only once the request ends (an answer given whole), so a backend may hand them
    #: over in fewer, larger deliveries, each chunk unchanged.
    stream: bool = True

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@attrs.frozen
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@attrs.frozen
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]
    top_logprobs: tuple[TopLogprob, ...] = ()


FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


@attrs.frozen
class ToolCallDelta:
    """A piece of a tool call as it is generated (see :attr:`Chunk.tool_deltas`).

    A call's first delta names it: ``id`` and ``name`` set, ``arguments`` empty. Its later
    deltas carry only ``arguments``, pieces of the argument text in order; every prefix of
    their concatenation is a prefix of valid JSON. The call's whole ``arguments`` on the
    choice's last chunk (:attr:`Chunk.tool_calls`) equal the concatenation.
    """

    #: The call's place among the choice's calls, from 0, in the order they are written.
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen
class Chunk:
    """A piece of output as it is produced.

    Intermediate chunks carry a ``text`` delta (and its ``logprobs`` when asked); the first
    chunk of a choice may also carry ``prompt_tokens`` and ``cached_tokens``, so a surface can
    report the prompt's size before the end (Anthropic's ``message_start``). The last
    chunk of a generation carries ``finish_reason`` and the token counts, and may carry
    ``tool_calls`` (OpenAI shape: ``{"id", "type": "function", "function": {"name",
    "arguments"}}``) and ``text`` too.

    Tool calls stream as :attr:`tool_deltas` while they are generated (their name first,
    then argument text); the last chunk still carries every call whole in ``tool_calls``,
    with the same ids, each call's ``arguments`` equal to its deltas joined. Surfaces that
    send whole calls (Ollama, whole answers) read ``tool_calls`` and ignore the deltas. A
    backend that streams no deltas may set ``tool_calls`` alone: a streaming surface then
    sends each call whole at the end.
    """

    text: str = ""
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[Mapping[str, Any], ...] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Of ``prompt_tokens``, how many were found in the KV cache and not read again.
    cached_tokens: int | None = None
    #: On the last chunk of a choice that one of the request's ``stop`` strings ended
    #: (``finish_reason`` "stop"): that string. None when the model ended its turn itself.
    stop_sequence: str | None = None
    #: On the last chunk, when the backend decoded speculatively: the tokens it drafted
    #: for this choice, and how many of them the model confirmed (llama-server's
    #: ``draft_n`` and ``draft_n_accepted``). None when it did not speculate.
    draft_tokens: int | None = None
    draft_accepted: int | None = None
    #: A delta of the model's reasoning (its think block), apart from the answer's ``text``.
    reasoning: str = ""
    #: On the last chunk: of ``completion_tokens``, how many were reasoning.
    reasoning_tokens: int | None = None
    #: Tool calls as they are generated (:class:`ToolCallDelta`), in order; the last chunk
    #: may carry the rest of them alongside the whole ``tool_calls``.
    tool_deltas: tuple[ToolCallDelta, ...] | None = None
    #: On the last chunk, with :attr:`GenerationRequest.return_token_ids`: the prompt's token
    #: ids as the model read them, then the answer's.
    token_ids: tuple[int, ...] | None = None


@attrs.frozen
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@attrs.frozen
class EngineStats:
    """What a loaded model's engine reports for status and metrics (cheap to read)."""

    #: Sequences it can decode at once (its capacity).
    slots: int
    #: Sequences decoding or reading their prompt right now.
    running: int = 0
    #: Prompt tokens of every generation so far, and how many of them came from the cache.
    prompt_tokens: int = 0
    cached_tokens: int = 0
    #: Speculative decoding so far: tokens drafted, and how many the model confirmed.
    draft_tokens: int = 0
    draft_accepted: int = 0


@attrs.frozen(kw_only=True)
class ScorePrompt:
    """One prompt and the continuations to score after it.

    Exactly one of ``messages`` (rendered with the model's chat template, with the
    assistant's turn opened) and ``prompt`` (raw text) is set. Each continuation is text
    that follows the prompt directly (the assistant's reply, for ``messages``).
    """

    messages: tuple[Mapping[str, Any], ...] | None = None
    prompt: str | None = None
    continuations: tuple[str, ...] = ()
    #: Score each continuation as the whole reply: followed by the model's end-of-turn
    #: token (so a label that is the start of another is not credited with its mass).
    end_of_turn: bool = False


@attrs.frozen(kw_only=True)
class ScoreRequest:
    """Many prompts, each with continuations to score. The prompts' longest shared token
    prefix is read once; what follows it is read once per prompt."""

    prompts: tuple[ScorePrompt, ...]


@attrs.frozen
class Scores:
    """:meth:`Scorer.score`'s answer."""

    #: Per prompt, per continuation: the continuation's total log-probability under the
    #: model after its prompt, summed over every one of its tokens (natural log).
    logprobs: tuple[tuple[float, ...], ...]
    #: Per prompt, per continuation: how many tokens the continuation was.
    token_counts: tuple[tuple[int, ...], ...]
    #: Prompt tokens of the request: the shared prefix once, plus each prompt's own rest.
    prompt_tokens: int
    #: Of ``prompt_tokens``, those found in the KV cache and not read again.
    cached_tokens: int
    #: The shared prefix: read once, and kept in the model's prompt cache afterwards.
    prefix_tokens: int = 0


@runtime_checkable
class Scorer(Protocol):
    """An optional feature of a :class:`LoadedModel`: exact log-probabilities of short
    continuations, many at once, for classification (the Decisions API) and reranking."""

    def score(self, request: ScoreRequest, cancel: CancelToken, sink: ChunkSink) -> None:
        """Check ``request`` and queue it on the model's engine, like :meth:`LoadedModel.generate`;
        return at once. The engine puts one :class:`Scores` into ``sink`` (index 0), then
        closes it, or closes it with the error (:class:`~hoshikage_core.errors.Cancelled`
        when ``cancel`` fires). Errors found before anything starts are raised here."""
        ...


@attrs.frozen
class Ranking:
    """Relevance of documents to a query, from a model's relevance head."""

    #: One per document, in the documents' order.
    scores: tuple[float, ...]
    prompt_tokens: int


@runtime_checkable
class Reranker(Protocol):
    """An optional feature of a :class:`LoadedModel`: a relevance head (llama.cpp's rank
    pooling, as in bge-reranker and Qwen3-Reranker GGUFs)."""

    def rerank(self, query: str, documents: list[str]) -> Ranking | None:
        """Each document's relevance to ``query`` (blocking; the core calls it from a worker
        thread), or None when this model has no relevance head (generative models are
        scored with :class:`Scorer` instead)."""
        ...


@runtime_checkable
class TokenCodec(Protocol):
    """An optional feature of a :class:`LoadedModel`: its tokenizer and chat template as
    they are (llama-server's ``/tokenize``, ``/detokenize`` and ``/apply-template``)."""

    def encode(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        """``add_special``: the BOS token where the model wants one; ``parse_special``:
        special tokens written as text (``<|im_start|>``) are read as those tokens."""
        ...

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The bytes ``token`` stands for (``special``: control tokens as their text);
        InvalidRequest for an id outside the vocabulary."""
        ...

    def apply_template(
        self,
        messages: tuple[Mapping[str, Any], ...],
        tools: tuple[Mapping[str, Any], ...] | None = None,
    ) -> str:
        """The prompt the chat template renders, the assistant's turn opened."""
        ...


class ChunkSink(Protocol):
    """Where a backend's engine delivers one generation's output, from any thread.

    Every choice ``0 <= index < n`` ends with one chunk carrying ``finish_reason``; after
    the last choice's (or on a failure) the engine calls :meth:`close` exactly once.
    ``put`` and ``close`` only queue: the reader learns of them at the next :meth:`flush`,
    which the engine calls once it has put a step's chunks into all its sinks.
    """

    def put(self, index: int, chunk: Chunk) -> None: ...

    def close(self, error: BaseException | None = None) -> None: ...

    def flush(self) -> None: ...


@runtime_checkable
class LoadedModel(Protocol):
    """What a backend hands back from ``create_backend``: one model, loaded and ready."""

    #: The context window of one sequence, in tokens.
    n_ctx: int
    #: Sequences it decodes at once; the scheduler admits at most this many requests.
    capacity: int

    def generate(
        self, request: GenerationRequest, cancel: CancelToken, sink: ChunkSink, n: int = 1
    ) -> None:
        """Start ``n`` choices of ``request`` and return at once; chunks go to ``sink``.

        Raise :class:`~hoshikage_core.errors.ContextLengthExceeded` or
        :class:`~hoshikage_core.errors.InvalidRequest` here, before anything is started,
        when the request cannot be served. Stop within one step of ``cancel``; a cancelled
        choice ends with ``finish_reason="cancelled"``. The prompt is read once for all
        ``n`` choices; each choice's last chunk reports the same ``prompt_tokens``.
        """
        ...

    def stats(self) -> EngineStats:
        """Slots, running sequences and prompt-cache counters; never blocks."""
        ...

    def embed(self, inputs: list[str]) -> Embeddings:
        """L2-normalised vectors, one per input, with the prompt token count."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def memory_bytes(self) -> int:
        """Bytes this model holds (host plus device), for status and the memory budget."""
        ...

    def close(self) -> None:
        """Release every resource; the object is not used again."""
        ...


# ---- optional backend features --------------------------------------------------------
# A LoadedModel may offer any of these as well; the core finds them with isinstance.


@runtime_checkable
class WatchesFailure(Protocol):
    """A model that can stop working on its own (e.g. in a child process that died)."""

    def on_failure(self, callback: Callable[[BaseException], None]) -> None:
        """Call ``callback(error)``, from any thread, once, when the model stops working;
        its in-flight generations have then already ended with that error."""
        ...


@runtime_checkable
class ReportsPlacement(Protocol):
    """A model that knows where its buffers went."""

    #: Bytes per backend buffer and kind: ``{"CPU_Mapped": {"weights": n}, "CUDA0": {...}}``.
    placement: Mapping[str, Mapping[str, int]]


@runtime_checkable
class ReportsDeviceMemory(Protocol):
    """A model that can tell how much of :meth:`LoadedModel.memory_bytes` is on a GPU."""

    def device_memory_bytes(self) -> int: ...


def placement_of(model: object) -> Mapping[str, Mapping[str, int]] | None:
    return model.placement if isinstance(model, ReportsPlacement) else None


@runtime_checkable
class ReportsProcess(Protocol):
    """A model that runs in a process of its own."""

    #: The process's id while it runs, else None.
    pid: int | None


def pid_of(model: object) -> int | None:
    return model.pid if isinstance(model, ReportsProcess) else None


def device_memory_of(model: object) -> int:
    """Bytes on the GPU when the model tells (:class:`ReportsDeviceMemory`), else 0."""
    if not isinstance(model, ReportsDeviceMemory):
        return 0
    try:
        return int(model.device_memory_bytes())
    except Exception:  # a status figure must never fail a request
        return 0


# ---- the scheduler -------------------------------------------------------------------


@runtime_checkable
class Lease(Protocol):
    """One admitted request's hold, from :meth:`Scheduler.acquire` to :meth:`Scheduler.release`."""

    model: str
    #: Sequences it holds: the choices it may decode at once.
    sequences: int
    released: bool


@runtime_checkable
class Scheduler(Protocol):
    """What ``create_scheduler`` returns: admission, ordering and concurrency.

    The core calls every method on the event loop. The built-in one is
    :class:`hoshikage_core.scheduler.FairScheduler`.
    """

    async def acquire(self, model: str, sequences: int = 1) -> Lease:
        """Wait until a request for ``model`` that decodes ``sequences`` choices at once may
        start, and return its lease. Raise :class:`~hoshikage_core.errors.QueueFull` at once
        when no more may wait. A caller cancelled while waiting leaves the queue."""
        ...

    def release(self, lease: Lease) -> None:
        """The request is done; idempotent."""
        ...

    def wake(self) -> None:
        """The pool changed (a model loaded or unloaded, a request ended): dispatch again."""
        ...

    def reconfigure(self, config) -> None:
        """Take a reloaded config's ``[server]`` limits; running requests keep their hold."""
        ...

    def snapshot(self) -> SchedulerSnapshot:
        """Counts for status and metrics; never blocks."""
        ...


@attrs.frozen
class SchedulerSnapshot:
    #: Requests admitted and not yet finished.
    running: int
    queued: int
    #: Most sequences running at once over all models.
    concurrency: int
    max_queue: int
    queued_by_model: dict[str, int]
    #: Sequences held now, over all models and per model.
    sequences: int = 0
    sequences_by_model: dict[str, int] = attrs.Factory(dict)


@attrs.frozen
class TokenCounts:
    """A request's token usage as the core counts it: each prompt once, however many
    choices were decoded from it, and every choice's completion tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Of ``prompt_tokens``, those found in the model's KV cache and not read again.
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_END = object()


class BlockingStream:
    """A :class:`ChunkSink` read by a plain thread: iterate it for ``(index, chunk)``.

    For code that drives a model without an event loop (embedding apps, tests); the server
    uses the runtime's loop-side sink instead.
    """

    def __init__(self) -> None:
        self._items: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, index: int, chunk: Chunk) -> None:
        self._items.put((index, chunk))

    def close(self, error: BaseException | None = None) -> None:
        self._items.put(_END if error is None else error)

    def flush(self) -> None:
        pass  # a blocked reader wakes on each put

    def __iter__(self) -> Iterator[tuple[int, Chunk]]:
        while True:
            item = self._items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def stream(
    model: LoadedModel, request: GenerationRequest, cancel: CancelToken | None = None, n: int = 1
) -> Iterator[tuple[int, Chunk]]:
    """Run ``request`` on ``model`` from a plain thread: ``(choice index, chunk)`` pairs.

    Errors found before generation are raised by this call, not by the iteration.
    """
    sink = BlockingStream()
    model.generate(request, cancel or CancelToken(), sink, n)
    return iter(sink)


# ---- the pool's states: what ``choose_unload`` sees ---------------------------------------

#: The states a model moves through.
UNLOADED, LOADING, LOADED, BUSY, UNLOADING = "unloaded", "loading", "loaded", "busy", "unloading"
#: Not loaded because its last load failed or it crashed (``last_error`` says why); the next
#: request loads it again, after a backoff once it has failed twice in a row.
FAILED = "failed"


@attrs.frozen(kw_only=True)
class ModelStatus:
    name: str
    state: str
    #: Requests holding the model (running, or admitted and waiting for the load).
    in_use: int = 0
    #: Requests waiting in the scheduler's queue for this model.
    queued: int = 0
    #: time.monotonic() at the end of the last request, or None.
    last_used: float | None = None
    #: time.monotonic() when it becomes due for unload; None: never / not loaded / busy.
    expires_at: float | None = None
    memory_bytes: int = 0

    @property
    def idle(self) -> bool:
        return self.state == LOADED and self.in_use == 0


@attrs.frozen(kw_only=True)
class PoolState:
    models: tuple[ModelStatus, ...]
    #: The model about to load that needs room, or None for a periodic check.
    incoming: str | None = None
    #: Estimated bytes the incoming model will take (its file size).
    incoming_bytes: int = 0
    max_loaded: int = 1
    max_memory: int | None = None
