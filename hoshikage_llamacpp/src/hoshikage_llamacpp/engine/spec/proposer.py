"""What guesses a sequence's next tokens: one interface for every kind of guesser, after
llama.cpp's ``common/speculative.h`` (``begin``, ``draft``, ``accept`` per sequence) and
vLLM v1's ``spec_decode`` proposers.

A proposer is one sequence's: :meth:`~Proposer.begin` gets its prompt, :meth:`~Proposer.accept`
every step's kept tokens (the accepted drafts and the token drawn after them, which is what
the sequence really produced, so the proposer learns from it), and :meth:`~Proposer.propose`
guesses what follows. A proposer whose guesses cost a decode of their own (the draft model)
is also asked for many sequences at once, in one batched decode per drafted position: its
kind has a ``propose_all`` (see :class:`.draft_model.DraftModel`), which
:class:`.speculation.Speculation` calls once per step. The engine sees neither: it calls
the :class:`~..protocols.Speculator`.
"""

from __future__ import annotations

from typing import Protocol


class Proposer(Protocol):
    """One sequence's guesser."""

    #: How many tokens before the last guess's source agree, position for position, with
    #: the sequence's own last ones: the length of the verbatim copy it continues (0: no
    #: such evidence). :class:`.length.DraftLength` trusts a long copy.
    matched: int

    def begin(self, prompt: list[int]) -> None:
        """The sequence starts on ``prompt``."""

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` tokens to follow the sequence's last one (fewer, or none, where it
        has no guess)."""

    def accept(self, tokens: list[int]) -> None:
        """The tokens the sequence kept this step, in order."""
