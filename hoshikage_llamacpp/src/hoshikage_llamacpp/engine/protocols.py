"""What the engine needs of the side that plans requests and reads their output: the
protocols :mod:`.planning` and :mod:`.output` implement. The engine imports no parser,
template or tool family; it calls these.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from hoshikage_core.protocol import Chunk, GenerationRequest


class Output(Protocol):
    """One choice's output: each sampled token in, chunks out."""

    #: Tokens to decode next instead of sampling (the think block closed at its budget).
    forced: deque

    def accept(self, token: int, index: int) -> tuple[Chunk | None, bool]:
        """A sampled token (not end-of-generation), its logits at batch row ``index``: the
        chunk to send, if any, and whether a stop string ended the choice."""

    def final(self, finish: str, n_gen: int, drafts: tuple[int, int] | None) -> Chunk:
        """The last chunk, with ``finish`` (which it may turn into ``tool_calls``)."""


class Planned(Protocol):
    """A planned request, as the engine runs it."""

    request: GenerationRequest
    #: The prompt's tokens.
    tokens: list[int]
    #: Most tokens any choice may generate.
    budget: int
    #: The prompt's media spans (:class:`~..llama.multimodal.MediaSpan`), in order; their
    #: tokens in :attr:`tokens` are placeholders (negative ids).
    media: list

    def span_at(self, index: int):
        """The media span that holds prompt token ``index`` (LookupError: none)."""

    def position(self, index: int) -> int:
        """The KV position of token ``index`` (less what M-RoPE spans before it save)."""

    def media_start(self, common: int) -> int:
        """``common`` moved back to the start of a media span it would cut in two."""

    def output(self, job, piece: Callable[[int], bytes], logprobs) -> Output:
        """The output of one choice of ``job``; ``piece`` gives a token's bytes,
        ``logprobs`` (None: not asked for) reads a token's log-probabilities."""


class Speculator(Protocol):
    """Who drafts for the engine's choices (:class:`.spec.speculation.Speculation`). A
    choice it began has a ``drafting`` (its own state, opaque here); each step it sets the
    ``drafts`` of the generating choices, and hears what each one kept."""

    def begin(self, choice, prompt: list[int], greedy: bool) -> None:
        """A choice that asked for speculation starts on ``prompt``."""

    def plan(self, generating: list, room: int, waiting: bool) -> None:
        """Set each generating choice's ``drafts`` for this step, within ``room`` tokens;
        ``waiting``: whether a request waits for a slot (a choice finishing sooner then
        lets it start sooner)."""

    def record(self, n: int, sequences: int, seconds: float) -> None:
        """A generation step of ``n`` tokens of ``sequences`` choices took ``seconds``."""

    def accept(self, choice, tokens: list[int], accepted: int) -> None:
        """After a step: ``choice`` kept ``tokens`` (its accepted drafts and the token drawn
        after them, fewer where it finished), the first ``accepted`` of its ``drafts``."""

    def end(self, choice) -> None:
        """A choice it began is over (finished, cancelled or failed)."""
