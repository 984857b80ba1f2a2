"""Speculative decoding: cheap guesses of a sequence's next tokens, checked by the model in
the same ``llama_decode`` that produces its next token (see :mod:`..core`).

* :mod:`.proposer`: the interface of a guesser (``begin``, ``propose``, ``accept``, after
  llama.cpp's ``common/speculative.h``);
* :mod:`.ngram`: the n-gram lookup in the sequence's own history (and, with the option
  ``ngram_pool``, in what the model's earlier sequences wrote);
* :mod:`.draft_model`: a smaller model with the same vocabulary, batched over the slots;
* :mod:`.length`: what a step costs by the ubatches llama.cpp splits it into, and how
  likely a sequence's draft is right;
* :mod:`.speculation`: the engine's :class:`~..protocols.Speculator`, which sizes every
  draft of a step together and gives drafting up where it does not pay.

Verification is sample-and-match (llama-cpp-python's ``examples/server``, llama-server):
each position is sampled with the sequence's own sampler chain, the drafts matching the
samples are kept, plus the first sample that differs. Every token is drawn exactly as it
would have been without a draft, so the output is the same at any temperature.

Like the rest of the engine, this room uses the slot pool and the batch, never the step
loop (``core``), which knows it only through ``protocols.Speculator``. The names below are
also what the old module ``engine.speculative`` gave (kept for one release, see
:mod:`...moved`).
"""

from .draft_model import DraftModel, ModelProposer, vocab_mismatch
from .length import (
    TOKEN_COST,
    DraftLength,
    StepCost,
    best_length,
    expected_yield,
    linear_cost,
    ubatches,
)
from .ngram import NGRAM_SIZES, NgramDrafter, NgramPool
from .proposer import Proposer
from .speculation import Payoff, Speculation

__all__ = [
    "NGRAM_SIZES",
    "TOKEN_COST",
    "DraftLength",
    "DraftModel",
    "ModelProposer",
    "NgramDrafter",
    "NgramPool",
    "Payoff",
    "Proposer",
    "Speculation",
    "StepCost",
    "best_length",
    "expected_yield",
    "linear_cost",
    "ubatches",
    "vocab_mismatch",
]
