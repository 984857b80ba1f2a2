"""The contract between the core and a backend.

``create_backend`` returns an object implementing :class:`LoadedModel`. Its methods are
plain synchronous calls: the core runs them in a worker thread, never on the event loop,
and never runs two of them on one model at once unless the backend says it may.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
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

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


@attrs.frozen(kw_only=True)
class ResponseFormat:
    """``text``, ``json_object`` (any JSON) or ``json_schema`` (JSON valid against ``schema``)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool = False


@attrs.frozen(kw_only=True)
class GenerationRequest:
    """One choice's worth of generation. ``None`` sampling values mean "backend default".

    Exactly one of ``messages`` (chat) and ``prompt`` (completion) is set.
    """

    messages: tuple[Mapping[str, Any], ...] | None = None
    prompt: str | None = None
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
class Chunk:
    """A piece of output as it is produced.

    Intermediate chunks carry a ``text`` delta (and its ``logprobs`` when asked). The last
    chunk of a generation carries ``finish_reason`` and the token counts, and may carry
    ``tool_calls`` (OpenAI shape: ``{"id", "type": "function", "function": {"name",
    "arguments"}}``) and ``text`` too.
    """

    text: str = ""
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[Mapping[str, Any], ...] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@attrs.frozen
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@runtime_checkable
class LoadedModel(Protocol):
    """What a backend hands back from ``create_backend``: one model, loaded and ready."""

    #: The context window actually allocated, in tokens.
    n_ctx: int

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Chunk]:
        """Yield chunks as they are produced; stop within one token of ``cancel``.

        Raise :class:`~hoshikage_core.errors.ContextLengthExceeded` or
        :class:`~hoshikage_core.errors.InvalidRequest` before the first chunk when the
        request cannot be served. A cancelled generation ends with
        ``finish_reason="cancelled"``.
        """
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
