"""The engine's speculation (its :class:`~..protocols.Speculator`): who drafts for each
choice, how long every draft of a step is, and when drafting is given up.

Each step :meth:`Speculation.plan` asks each speculating choice's proposers for a draft
(the n-gram lookup first, then the draft model, see :mod:`.proposer`), then sizes all of
the step's drafts together: the step's expected tokens per unit of cost, the cost being
what llama.cpp's split of the batch into ubatches is measured to cost
(:class:`.length.StepCost`), is compared for no drafts, for each common length given to the
sequences whose drafts add to it (equal lengths keep the batch in one ubatch), and, where
every token counts (below), for one pass of moving one sequence's length to its
neighbours, to none or to its whole draft. Drafts go in only where they make the step's
tokens at least :attr:`~Speculation.MARGIN` cheaper.

Which tokens count depends on whether a request waits for a slot. If one does, a choice
that finishes sooner lets it start sooner: every token counts, and the step's tokens per
cost is the measure. If none does, the batch is done when its slowest choices are, and a
draft that speeds one choice up slows all the others' step down: only the tokens of the
choices that set the pace count (those with the most of their budget left, see
:func:`_critical`), each step as fast as the slowest of them. Then every one of them drafts
(at equal lengths, mostly) or none does.

The model's estimates can still be wrong (acceptance that changes, a machine whose costs
drift). So the planner checks what drafting really returned: for each number of generating
sequences, the tokens per second of the steps with drafts against those of steps without
(:class:`Payoff`). Where drafting returned less, it is given up entirely for a while, then
tried again, for twice as long a while each time it still does not pay. This holds for
batches of two sequences or more, where a draft slows the others' tokens too. A sequence
alone keeps its own draft length's back-off (:class:`.length.DraftLength`): a step's wall
time on a small model is mostly noise, and a pause that outlived the request would have
kept the next request's long copy from drafting at all.
"""

from __future__ import annotations

from ...llama.multimodal import text_run
from .length import DraftLength, StepCost, expected_yield, ubatches
from .ngram import NgramDrafter, NgramPool


class Drafting:
    """One speculating choice's state: its proposers and its draft length."""

    __slots__ = ("length", "ngram", "model")

    def __init__(self, length: DraftLength, ngram=None, model=None):
        self.length = length
        #: The n-gram proposer, asked first, and the draft model's (each may be None).
        self.ngram = ngram
        self.model = model


class Payoff:
    """What drafting has returned at one batch size: a moving average of the ratio of a
    drafting step's tokens per second to a step without drafts (measured by the same
    :class:`.length.StepCost`). Below :attr:`FLOOR` after :attr:`TRIAL` drafting steps,
    drafting pauses for :attr:`PAUSE` steps, then twice as many each time it still does not
    pay (at most :attr:`PAUSE_MAX`); a run that pays again brings the pause back down."""

    ALPHA = 0.15
    TRIAL = 8
    FLOOR = 0.99
    PAUSE = 32
    PAUSE_MAX = 1024

    __slots__ = ("ratio", "samples", "pause", "wait")

    def __init__(self) -> None:
        self.ratio = 1.0
        self.samples = 0
        self.pause = self.PAUSE
        #: Steps left before drafting is tried again.
        self.wait = 0

    def allows(self) -> bool:
        """A step: whether it may draft (False while paused)."""
        if self.wait:
            self.wait -= 1
            return False
        return True

    def add(self, ratio: float) -> None:
        """A drafting step returned ``ratio`` times the tokens per second of a plain one."""
        self.samples += 1
        self.ratio += self.ALPHA * (ratio - self.ratio)
        if self.samples < self.TRIAL:
            return
        if self.ratio < self.FLOOR:
            self.wait = self.pause
            self.pause = min(self.pause * 2, self.PAUSE_MAX)
            self.ratio, self.samples = 1.0, 0
        elif self.samples >= 4 * self.TRIAL:
            self.pause = self.PAUSE


class _Candidate:
    """A sequence that could draft this step: where it is in the batch, how likely each
    draft token is right, its draft (None: the draft model's, asked once sized), the most
    it may draft, and what each length is expected to yield."""

    __slots__ = ("index", "seq", "p", "draft", "most", "matched", "yields")

    def __init__(self, index: int, seq, p: float, draft, most: int, matched: int):
        self.index = index
        self.seq = seq
        self.p = p
        self.draft = draft
        self.most = most
        self.matched = matched
        self.yields = [expected_yield(p, k) for k in range(most + 1)]


class Speculation:
    """Who drafts for an engine's choices: at most ``draft_max`` tokens per choice and step,
    from the n-gram lookup (``ngram``), a :class:`.draft_model.DraftModel`
    (``draft_model``), or both: the lookup first; ``pool``: the lookup reads what earlier
    sequences wrote too (:class:`.ngram.NgramPool`). Engine thread only."""

    #: The common lengths the planner tries for a step's drafts (and each draft's own),
    #: besides each draft's whole length and ``draft_max``. Past 3 each is one short of a
    #: multiple of 4: llama.cpp's CPU kernel for Q4_0/Q5_0/Q8_0 weights (llamafile's
    #: tinyBLAS) takes a step's rows in tiles of up to 4, and leftover rows read the weights
    #: once more (Gemma 3 270M, 2 threads, one sequence: 16 rows cost 4.4 one-token steps,
    #: 17 rows 5.2; 32 rows 7.6, 33 rows 8.6). llama-server's draft of 16 is a step of 17.
    LENGTHS = (1, 2, 3, 7, 11, 15, 23, 31, 47)
    #: The most draft tokens of one step, all sequences together (or ``draft_max``, where
    #: larger): each is a row of logits over the vocabulary (1 MiB for Gemma 3's 262k
    #: tokens), and llama.cpp's output buffer and compute buffer keep the most rows a step
    #: ever asked for. 64 is what 4 slots drafting 16 each held; 4 drafting 32 would hold
    #: 125 MB more.
    STEP_DRAFTS = 64
    #: The most tokens a draft model drafts for a sequence in one step: each is a decode of
    #: the draft model, which the planner does not price.
    MODEL_DRAFTS = 16
    #: Drafts must make the step's tokens this much cheaper than none, by the model: what
    #: the estimates are not sure of.
    MARGIN = 0.02

    def __init__(
        self,
        draft_max: int,
        ngram: bool = True,
        draft_model=None,
        n_ubatch: int = 512,
        pool: bool = False,
    ):
        self.draft_max = draft_max
        self.ngram = ngram
        self.draft_model = draft_model
        #: What the model's sequences wrote, for later ones' n-gram drafts (None: not kept;
        #: the option ``ngram_pool``).
        self.pool = NgramPool() if ngram and pool else None
        #: What a generation step costs by its split, measured on the engine's steps.
        self.step_cost = StepCost(n_ubatch)
        #: What drafting returned, by the number of generating sequences.
        self.payoff: dict[int, Payoff] = {}
        self._lengths = tuple(k for k in self.LENGTHS if k < draft_max) + (draft_max,)
        # The step in flight: its rows (slot, tokens) as planned, whether it drafted, its
        # measured seconds and the drafts accepted in it.
        self._rows: list[tuple[int, int]] | None = None
        self._drafted = False
        self._seconds: float | None = None
        self._accepted = 0
        # Whether the step is sized for its slowest sequences (nothing waits for a slot),
        # and the fewest drafts a sequence of it had accepted.
        self._bottleneck = False
        self._least: int | None = None

    def begin(self, choice, prompt: list[int], greedy: bool) -> None:
        """A choice that asked for speculation starts: its draft length and proposers."""
        ngram = model = None
        if self.ngram:
            ngram = NgramDrafter(self.pool)
            ngram.begin(prompt)
        if self.draft_model is not None:
            model = self.draft_model.proposer()
            model.begin(prompt)
        choice.drafting = Drafting(
            DraftLength(self.draft_max, greedy, self.step_cost), ngram, model
        )

    def accept(self, choice, tokens: list[int], accepted: int) -> None:
        """``choice`` kept ``tokens`` this step, the first ``accepted`` of its ``drafts``."""
        drafting = choice.drafting
        if drafting.ngram is not None:
            drafting.ngram.accept(tokens)
        if drafting.model is not None:
            drafting.model.accept(tokens)
        if choice.drafts:
            drafting.length.update(len(choice.drafts), accepted)
            self._accepted += accepted
            if self._least is None or accepted < self._least:
                self._least = accepted

    def end(self, choice) -> None:
        """``choice`` is over (finished, cancelled or failed): what it wrote is kept for
        later choices to draft from."""
        if choice.drafting.ngram is not None:
            choice.drafting.ngram.end()

    def record(self, n: int, sequences: int, seconds: float) -> None:
        """A generation step of ``n`` tokens of ``sequences`` choices took ``seconds``."""
        rows = self._rows
        if rows is None or len(rows) != sequences or sum(t for _, t in rows) != n:
            return
        self.step_cost.record(ubatches(rows, self.step_cost.n_ubatch), seconds)
        self._seconds = seconds

    def plan(self, generating: list, room: int, waiting: bool = False) -> None:
        """Each generating choice's draft for this step (its ``drafts``), within the
        ``room`` the batch has beside every next token (at most :attr:`STEP_DRAFTS`), its
        token budget and its draft length; ``waiting``: whether a request waits for a slot
        (see the module)."""
        self._settle()
        for seq in generating:
            seq.drafts = ()
        n = len(generating)
        self._rows = rows = [(seq.slot.id, 1) for seq in generating]
        room = min(room, max(self.STEP_DRAFTS, self.draft_max))
        if room <= 0:
            return
        if n > 1:
            payoff = self.payoff.get(n)
            if payoff is None:
                payoff = self.payoff[n] = Payoff()
            if not payoff.allows():
                return
        critical = None if waiting or n <= 1 else _critical(generating)
        candidates = self._candidates(generating, room, critical)
        if not candidates or (critical is not None and len(candidates) < len(critical)):
            return  # a sequence that sets the pace has no draft: none would help
        self._bottleneck = critical is not None
        ks = self._choose(rows, candidates, room)
        if not self._bottleneck:
            self._tries(rows, candidates, ks, room)
        asking = []
        for candidate, k in zip(candidates, ks, strict=True):
            if not k:
                continue
            if candidate.draft is not None:
                candidate.seq.drafts = candidate.draft[:k]
            else:
                candidate.seq.drafting.model.slot = candidate.seq.slot.id
                asking.append((candidate.seq, k))
        if asking:
            proposers = [(seq.drafting.model, k) for seq, k in asking]
            for (seq, _k), drafts in zip(
                asking, self.draft_model.propose_all(proposers), strict=True
            ):
                seq.drafts = drafts
        self._rows = [(seq.slot.id, 1 + len(seq.drafts)) for seq in generating]
        self._drafted = any(seq.drafts for seq in generating)

    def _candidates(self, generating: list, room: int, among=None) -> list[_Candidate]:
        """The sequences (of ``among``, a set of indices, when given) with a draft at hand
        (or a draft model to ask)."""
        out = []
        for i, seq in enumerate(generating):
            drafting = seq.drafting
            if drafting is None or (among is not None and i not in among):
                continue
            # The step yields up to k + 1 tokens; the last one may not exceed the budget.
            limit = min(room, drafting.length.max, seq.job.plan.budget - seq.n_gen - 1)
            if limit <= 0:
                continue
            length = drafting.length
            if drafting.ngram is not None:
                draft = drafting.ngram.propose(limit)
                if draft and seq.job.plan.media:
                    draft = text_run(draft)  # never a media placeholder
                if draft:
                    matched = drafting.ngram.matched
                    p = length.acceptance(matched)
                    out.append(_Candidate(i, seq, p, draft, len(draft), matched))
                    continue
            if drafting.model is not None and not seq.job.plan.media:
                most = min(limit, self.MODEL_DRAFTS)
                out.append(_Candidate(i, seq, length.acceptance(0), None, most, 0))
        return out

    def _value(self, rows, candidates, ks, room: int, memo: dict) -> float:
        """The step's expected tokens per unit of cost with draft lengths ``ks``."""
        counts = [t for _, t in rows]
        gain, total, least = 0.0, 0, None
        for candidate, k in zip(candidates, ks, strict=True):
            counts[candidate.index] += k
            gain += candidate.yields[k]
            total += k
            if least is None or candidate.yields[k] < least:
                least = candidate.yields[k]
        if total > room:
            return 0.0
        if self._bottleneck:  # every sequence goes as fast as the slowest of them
            gain = len(rows) * least
        key = tuple(counts)
        cost = memo.get(key)
        if cost is None:
            step_cost = self.step_cost
            slots = [slot for slot, _ in rows]
            split = ubatches(list(zip(slots, counts, strict=True)), step_cost.n_ubatch)
            cost = step_cost.price(split)
            if split != step_cost.last:
                # Its graph is rebuilt now, and (for a draft) again when plain steps resume.
                cost += step_cost.switch() * (1 if total == 0 else 2)
            memo[key] = cost
        return (len(rows) + gain) / cost

    def _choose(self, rows, candidates: list[_Candidate], room: int) -> list[int]:
        """The draft lengths of the step's candidates, chosen together (see the module)."""
        memo: dict = {}
        m = len(candidates)
        ks = [0] * m
        plain = best = self._value(rows, candidates, ks, room, memo)
        best_ks = ks
        order = sorted(range(m), key=lambda j: -candidates[j].p)
        most = max(c.most for c in candidates)
        lengths = [k for k in self._lengths if k < most] + [most]
        for common in lengths:  # a common length, for those it helps (all: see above)
            ks = [min(common, c.most) for c in candidates]
            value = self._value(rows, candidates, ks, room, memo)
            if not self._bottleneck:
                ks, value = [0] * m, plain
                for j in order:
                    ks[j] = min(common, candidates[j].most)
                    trial = self._value(rows, candidates, ks, room, memo)
                    if trial > value:
                        value = trial
                    else:
                        ks[j] = 0
            if value > best:
                best, best_ks = value, ks
        if m > 1 and not self._bottleneck:  # then each one's own length, the others' held
            ks = list(best_ks)
            for j in order:
                most = candidates[j].most
                near = [k for k in lengths if k <= most]
                at = near.index(best_ks[j]) if best_ks[j] in near else -1
                for k in sorted({0, most, *near[max(at - 1, 0) : at + 2]}):
                    if k == best_ks[j]:
                        continue
                    ks[j] = k
                    trial = self._value(rows, candidates, ks, room, memo)
                    if trial > best:
                        best, best_ks = trial, list(ks)
                ks[j] = best_ks[j]
        if best <= plain * (1 + self.MARGIN):
            return [0] * m
        return best_ks

    def _tries(self, rows, candidates: list[_Candidate], ks: list[int], room: int) -> None:
        """A sequence whose drafts were not worth it tries again, now and then (see
        :class:`.length.DraftLength`): the shortest draft that would pay, the others'
        held, were its tokens right as often as a good copy's."""
        for j, candidate in enumerate(candidates):
            length = candidate.seq.drafting.length
            if ks[j] or not length.due_try(candidate.matched):
                continue
            hopeful = _Candidate(
                candidate.index, candidate.seq, length.RETRY_P, None, candidate.most, 0
            )
            trial = [*candidates[:j], hopeful, *candidates[j + 1 :]]
            memo: dict = {}
            plain = self._value(rows, trial, ks, room, memo)
            for k in range(1, candidate.most + 1):
                ks[j] = k
                if self._value(rows, trial, ks, room, memo) > plain:
                    break
            else:
                ks[j] = 0

    def _settle(self) -> None:
        """The last step's verdict on drafting, for its batch size's :class:`Payoff`."""
        rows, seconds = self._rows, self._seconds
        if rows and self._drafted and seconds and len(rows) > 1:
            n = len(rows)
            plain = self.step_cost.seconds(ubatches([(slot, 1) for slot, _ in rows]))
            if plain:
                gained = self._least if self._bottleneck else self._accepted / n
                self.payoff[n].add((1 + (gained or 0)) * plain / seconds)
        self._rows, self._drafted, self._seconds = None, False, None
        self._accepted, self._least, self._bottleneck = 0, None, False


#: A sequence sets the pace when its token budget has at least this share of the largest
#: one left.
CRITICAL_SHARE = 0.9


def _critical(generating: list) -> set[int]:
    """The indices of the sequences that set the pace of the batch: those with the most of
    their budget left (within :data:`CRITICAL_SHARE`), which finish last."""
    left = [seq.job.plan.budget - seq.n_gen for seq in generating]
    most = max(left)
    return {i for i, n in enumerate(left) if n >= CRITICAL_SHARE * most}
