"""One choice being generated, as the engine sees it: what stays per choice while the
engine batches many. What its tokens mean is its :class:`~.protocols.Output`'s."""

from __future__ import annotations

from .protocols import Output
from .sampling import SamplerChain


class Choice:
    """Choice ``index`` of a :class:`~hoshikage_llamacpp.engine.Job`: its sampler chain,
    its slot and where it is in its prompt, its draft, and its :attr:`output`."""

    __slots__ = (
        "job",
        "index",
        "sampler",
        "output",
        "slot",
        "todo",
        "next_token",
        "logits_at",
        "n_gen",
        "drafting",
        "drafts",
        "draft_tokens",
        "draft_accepted",
        "shift",
    )

    def __init__(self, job, index: int, sampler: SamplerChain, output: Output):
        self.job = job
        self.index = index
        self.sampler = sampler
        self.output = output
        #: The engine slot (KV sequence) it runs in, once it has one.
        self.slot = None
        #: Prompt tokens still to be decoded into the slot.
        self.todo: list[int] = []
        #: The token sampled last step, to be decoded this step.
        self.next_token: int | None = None
        #: Where its logits are in the current batch, or -1.
        self.logits_at = -1
        self.n_gen = 0
        #: Speculation (see :mod:`.spec`): its state there, the speculator's own (None when
        #: it does not speculate), this step's draft, and its tokens drafted and accepted.
        self.drafting = None
        self.drafts: list[int] | tuple = ()
        self.draft_tokens = 0
        self.draft_accepted = 0
        #: Tokens less positions after the prompt: what its M-RoPE images save (else 0).
        self.shift = sum(span.end - span.start - span.n_pos for span in job.plan.media)

    def final(self, finish: str):
        """The last chunk (its output's), with the counts kept here."""
        drafts = (self.draft_tokens, self.draft_accepted) if self.drafting is not None else None
        return self.output.final(finish, self.n_gen, drafts)
