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

    def output(self, job, piece: Callable[[int], bytes], logprobs) -> Output:
        """The output of one choice of ``job``; ``piece`` gives a token's bytes,
        ``logprobs`` (None: not asked for) reads a token's log-probabilities."""
