"""How long each sequence's draft should be: what a step costs by the shape of its batch
(:class:`StepCost`), and what a draft is expected to yield (:class:`DraftLength`).

A draft pays when the tokens it is expected to add to a step are worth more than what its
rows add to the step's cost. That cost is far from linear, and it depends on how the
step's tokens are spread over its sequences: with a KV stream per slot (``kv_unified``
off, the default) llama.cpp splits a batch into micro-batches ("ubatches") of equal
width per sequence (``split_equal`` in ``src/llama-batch.cpp``), each of consecutive
sequence ids. One sequence's draft of 4 beside three others' single tokens is two
ubatches, 4×1 then 1×4, and cost 6.6-6.9 one-token steps on this CPU where 8 tokens of
one sequence cost 3.8, and 2+2+2+2 is one ubatch of 4×2. :func:`ubatches` says what
llama.cpp will form, and :class:`StepCost` prices a step as the measured cost of that
split.
"""

from __future__ import annotations

from collections.abc import Callable

from .ngram import NGRAM_SIZES

#: What one more token with logits adds to a decode step, as a share of a one-token step,
#: before :class:`StepCost` has measured it: the optimistic end of what was measured (Gemma
#: 3 270M on 2 threads of this CPU: ``1 + 0.35·(n-1)`` one-token steps at 8 to 16 tokens),
#: so that every length is tried before the measurement decides.
TOKEN_COST = 0.35

#: What a step pays for each ubatch beyond its first, in one-token steps, before
#: :class:`StepCost` has measured it: a ubatch whose shape differs from the last one's
#: rebuilds llama.cpp's compute graph, and each runs every layer's kernels once more.
SPLIT_COST = 1.0


#: What a step whose ubatch differs in shape from the last step's adds, in one-token steps,
#: before :class:`StepCost` has measured it: llama.cpp rebuilds its compute graph (about a
#: third of a step at 4 streams, Gemma 3 270M).
SWITCH_COST = 0.3

#: A sample may raise an estimate to at most this many times what it was (or, for a split
#: measured the first time, than :func:`linear_cost` prices it): one stall of the machine
#: (another process taking the core for 20 ms in a step of 0.4) must not price drafting
#: out for good, since a draft no longer made is never measured again.
MAX_RISE = 2.0
#: A graph rebuild counts as at most this many one-token steps.
MAX_SWITCH = 1.0


def linear_cost(n: int, sequences: int = 1) -> float:
    """A step of ``n`` tokens with logits, in one-token steps, before any measurement."""
    return 1.0 + TOKEN_COST * (n - 1)


#: A ubatch's shape: (sequences, tokens of each).
Shape = tuple[int, int]


def ubatches(rows: list[tuple[int, int]], n_ubatch: int = 512) -> tuple[Shape, ...]:
    """The ubatches llama.cpp splits a batch into with a KV stream per slot, for ``rows``
    of ``(slot, tokens)`` in the batch's order (slot order, as the engine builds it).

    As ``llama_batch_allocr::split_equal(n_ubatch, sequential=true)``: each ubatch starts
    at the first sequence with tokens left and takes the run of sequences after it with
    consecutive ids and tokens left, the same number of tokens from each, as many as the
    one with fewest has left (at most ``n_ubatch`` in all)."""
    slots = [slot for slot, _ in rows]
    left = [n for _, n in rows]
    m = len(left)
    shapes: list[Shape] = []
    start = 0
    while True:
        while start < m and not left[start]:
            start += 1
        if start == m:
            return tuple(shapes)
        end = start + 1
        while end < m and left[end] and slots[end] == slots[end - 1] + 1 and end - start < n_ubatch:
            end += 1
        width = min(min(left[start:end]), max(1, n_ubatch // (end - start)))
        for i in range(start, end):
            left[i] -= width
        shapes.append((end - start, width))


class StepCost:
    """What a decode step costs on this model and machine, in one-token steps, by the
    ubatches llama.cpp splits it into (:func:`ubatches`): measured on the engine's own
    generation steps (the seconds of ``llama_decode``, graph rebuilds included), a moving
    average per split.

    A split not measured yet is priced from its parts: each ubatch shape as measured in
    steps that were that one ubatch (one not measured either: the widest measured below it
    of as many sequences, plus :data:`TOKEN_COST` a token; else :func:`linear_cost`), plus
    what each further ubatch added to the steps of several that were measured (a moving
    average; :data:`SPLIT_COST` until then). The first step of each split, which builds its
    graph and buffers, is not counted; a step of one ubatch after one of another shape,
    which rebuilds the graph, counts as :meth:`switch` (what it took beyond its shape's
    cost), not as its shape's cost. The unit, a one-token step, is the measured ``1×1``
    ubatch, or before that the smallest measured one as :func:`linear_cost` prices it. When
    the unit's estimate moves, every other estimate moves with it (:meth:`_rescale`), so a
    shape keeps the price in one-token steps that it was measured at."""

    ALPHA = 0.2

    __slots__ = ("_shape", "_steps", "_seen", "_split", "_switch", "_unit", "n_ubatch", "last")

    def __init__(self, n_ubatch: int = 512) -> None:
        #: The context's ``n_ubatch`` (the most tokens in one ubatch).
        self.n_ubatch = n_ubatch
        #: The split of the last step recorded.
        self.last: tuple[Shape, ...] | None = None
        self._switch: float | None = None
        self._shape: dict[Shape, float] = {}
        self._steps: dict[tuple[Shape, ...], float] = {}
        self._seen: set[tuple[Shape, ...]] = set()
        self._split: float | None = None
        self._unit: float | None = None

    def record(self, shapes: tuple[Shape, ...], seconds: float) -> None:
        """A step split into ``shapes`` took ``seconds`` (damped: see :data:`MAX_RISE`)."""
        last, self.last = self.last, shapes
        if shapes not in self._seen:
            self._seen.add(shapes)
            return
        alpha = self.ALPHA
        if self._unit is not None:
            known = self.seconds(shapes)
            if known is None:
                known = self._unit * sum(linear_cost(s * w) for s, w in shapes)
            seconds = min(seconds, MAX_RISE * known)
        if shapes != last and len(shapes) == 1 and last is not None and len(last) == 1:
            # A step of another shape than the last rebuilt llama.cpp's graph: what that
            # added, apart from the shape's own cost.
            steady = self._shape.get(shapes[0])
            if steady is None:
                if self._switch is None:
                    return
                seconds -= self._switch
            else:
                extra = min(max(0.0, seconds - steady), MAX_SWITCH * (self._unit or steady))
                old = self._switch
                self._switch = extra if old is None else old + alpha * (extra - old)
                return
        if len(shapes) == 1:
            old = self._shape.get(shapes[0])
            self._shape[shapes[0]] = seconds if old is None else old + alpha * (seconds - old)
            one = self._shape.get((1, 1))
            if one is not None:
                if shapes[0] == (1, 1) and old is not None and one != old:
                    self._rescale(one / old)
                self._unit = one
            else:
                (s, w), sec = min(self._shape.items(), key=lambda item: item[0][0] * item[0][1])
                self._unit = sec / linear_cost(s * w)
            return
        old = self._steps.get(shapes)
        self._steps[shapes] = seconds if old is None else old + alpha * (seconds - old)
        parts = [self._shape.get(shape) for shape in shapes]
        if None not in parts:
            extra = max(0.0, (seconds - sum(parts)) / (len(shapes) - 1))
            self._split = (
                extra if self._split is None else self._split + alpha * (extra - self._split)
            )

    def _rescale(self, factor: float) -> None:
        """The one-token step's estimate moved by ``factor``: every other estimate moves
        with it. The machine's speed drifts for every shape alike (a first request's cold
        caches, another process on the cores), and a shape is measured again only when a
        step takes it: a draft's step measured while every step was slower, priced against
        today's faster one-token step, kept drafting out for good, since a draft not made
        is never measured again. What a shape costs in one-token steps is what was
        measured, and stays so."""
        shape = self._shape
        for key in shape:
            if key != (1, 1):
                shape[key] *= factor
        steps = self._steps
        for key in steps:
            steps[key] *= factor
        if self._switch is not None:
            self._switch *= factor
        if self._split is not None:
            self._split *= factor

    def switch(self) -> float:
        """What a step of one ubatch whose shape differs from the last step's adds, in
        one-token steps: llama.cpp reuses its compute graph only for a ubatch of the same
        shape (:data:`SWITCH_COST` until measured)."""
        if self._switch is None or self._unit is None:
            return SWITCH_COST
        return self._switch / self._unit

    def seconds(self, shapes: tuple[Shape, ...]) -> float | None:
        """What a step of this split took, as measured (None: not yet)."""
        return self._shape.get(shapes[0]) if len(shapes) == 1 else self._steps.get(shapes)

    def price(self, shapes: tuple[Shape, ...]) -> float:
        """A step split into ``shapes``, in one-token steps."""
        unit = self._unit
        if unit is None:
            return sum(linear_cost(s * w) for s, w in shapes) + SPLIT_COST * (len(shapes) - 1)
        this = self._shape.get(shapes[0]) if len(shapes) == 1 else self._steps.get(shapes)
        if this is not None:
            return this / unit
        split = SPLIT_COST if self._split is None else self._split / unit
        return sum(self._part(s, w, unit) for s, w in shapes) + split * (len(shapes) - 1)

    def _part(self, sequences: int, width: int, unit: float) -> float:
        this = self._shape.get((sequences, width))
        if this is not None:
            return this / unit
        measured = sorted(w for s, w in self._shape if s == sequences and w < width)
        if not measured:
            return linear_cost(sequences * width)
        below = measured[-1]
        slope = TOKEN_COST
        if len(measured) > 1:
            # The cost of a token more falls as a ubatch widens (its matrix products run at
            # more of the CPU's speed): the last measured step up bounds what is beyond.
            before = measured[-2]
            rise = self._shape[(sequences, below)] - self._shape[(sequences, before)]
            slope = min(TOKEN_COST, max(0.0, rise / unit / (sequences * (below - before))))
        return self._shape[(sequences, below)] / unit + slope * sequences * (width - below)

    def __call__(self, n: int, sequences: int = 1) -> float:
        """A step of ``n`` tokens of ``sequences`` sequences on consecutive slots, all but
        the first with one token: one sequence drafting among others that do not."""
        rows = [(0, n - sequences + 1)] + [(i, 1) for i in range(1, sequences)]
        return self.price(ubatches(rows, self.n_ubatch))


#: Agreement beyond the longest n-gram key is what counts as evidence (see DraftLength);
#: below that, agreement beyond the shortest key that free text rarely matches by chance
#: counts too, up to what Laplace's rule allows.
LONG_MATCH = NGRAM_SIZES[0]
SHORT_MATCH = NGRAM_SIZES[2]


class DraftLength:
    """How many tokens one sequence drafts next, from its recent acceptance and the batch.

    The acceptance of a draft token is estimated as a rate ``p``: each accepted token is a
    success, the first rejected one a failure (tokens after it were never tried), older
    drafts counting less (``DECAY``). ``k`` drafts then yield ``E(k) = (1 - p^(k+1)) / (1 - p)``
    tokens on average, in a step of ``k + 1`` tokens. With ``others`` other sequences
    generating in the same step (each yields one token) the step's throughput is
    ``(others + E(k)) / cost(others + 1 + k)``, a step's cost as the engine measured it for
    that size (:class:`StepCost`; see :func:`best_length`), and ``k`` is the length that
    maximises it. A full batch already spends the step on the others,
    so it takes a higher acceptance for a draft to pay there: speculation backs off as the
    batch fills.

    How long a verbatim copy the draft continues is evidence of its own. When it continues
    a stretch of ``matched`` tokens that agree with the sequence's last ones, each of those
    beyond the longest n-gram key (``LONG_MATCH``) counts as one more accepted token in the
    estimate for this draft (greedy sequences only), so a sequence copying its input drafts
    long as soon as the copy is long (a 40-token copy: all 16 alone, whatever came before) instead of growing from 3.
    That trust is itself earned: each draft made on it moves :attr:`trust` halfway to the
    share of it accepted, and the agreeing tokens count that much. A
    draft found only by a shorter key is trusted at most as Laplace's rule of succession
    trusts ``m`` agreements in a row, ``(m + 1) / (m + 2)`` (a 3-token match: 0.8, 3 tokens
    alone), so right after a rejection, where the copy being continued is short again, a
    sequence with a long record of accepted drafts does not draft 12 tokens on a guess. Up
    to that bound, the agreement beyond ``SHORT_MATCH`` tokens counts as accepted tokens
    too (greedy only), so one early miss (a copy's first draft often comes from a 3-token
    match) does not keep a copy from drafting until it is ``LONG_MATCH`` tokens long.

    After a run of failures the sequence stops drafting and tries one token again after
    ``RETRY`` steps with a draft at hand (calls of :meth:`next`), then after twice as many
    each time that try fails too (up to ``RETRY_MAX``), so a sequence that starts copying
    its input later is found again while one that never does costs next to nothing. A try
    waits for a draft that continues a copy of ``RETRY_MATCH`` tokens or more, and is the
    shortest draft that would pay at an acceptance of ``RETRY_P`` (none, where none would).
    """

    DECAY = 0.7
    RETRY = 8
    RETRY_MAX = 128
    #: A try needs a draft that continues a copy of at least this many tokens (when that is
    #: known): free text's 3-token matches (common phrases) fail, and each try is a step of
    #: two tokens, which costs two one-token steps on a CPU.
    RETRY_MATCH = NGRAM_SIZES[2]
    #: A try is as long as it must be to pay if its tokens were right this often: where a
    #: step of two tokens costs two one-token steps (a CPU), a try of one never would.
    RETRY_P = 0.9

    __slots__ = (
        "max",
        "greedy",
        "cost",
        "trust",
        "expected",
        "_hits",
        "_tries",
        "_idle",
        "_retry",
        "_long",
    )

    def __init__(self, draft_max: int, greedy: bool = True, cost: StepCost | None = None):
        self.max = draft_max
        #: The cost of a step by its size, for :meth:`next` (a :class:`StepCost`; None:
        #: linear). The engine's planner sizes all drafts of a step at once instead.
        self.cost = cost
        #: Whether a long copy counts as evidence (greedy draws only: a sampled draw leaves
        #: a copy as easily after 20 agreeing tokens as after 3).
        self.greedy = greedy
        # A prior of p = 0.8 until the first verdicts.
        self._hits = 1.0
        self._tries = 1.25
        self._idle = 0
        self._retry = self.RETRY
        #: How far a long copy is trusted (1: fully), from how the drafts it made fared: a
        #: greedy model's loop with a changing detail (a number, a name) is a long copy
        #: that keeps breaking.
        self.trust = 1.0
        self._long = False  # whether the last draft was made on a long copy's trust
        #: The tokens the last draft :meth:`next` sized is expected to add to the step.
        self.expected = 0.0

    @property
    def rate(self) -> float:
        return self._hits / self._tries if self._tries else 0.0

    def next(self, others: int, limit: int, matched: int = 0) -> int:
        """The length of the next draft, at most ``limit``, for a draft that continues a
        verbatim copy of ``matched`` tokens (0: unknown), in a step where ``others`` other
        sequences generate a token each and do not draft: one sequence's choice, with
        :func:`best_length` (the engine's planner sizes all drafts of a step together).
        :attr:`expected` is then what this draft is expected to yield."""
        p = self.acceptance(matched)
        k = best_length(p, min(self.max, limit), others, self.cost)
        if k == 0 and limit > 0 and self.due_try(matched):
            # The shortest try that would pay were the draft as right as a good copy.
            k = min(
                (
                    k
                    for k in range(1, min(self.max, limit) + 1)
                    if best_length(self.RETRY_P, k, others, self.cost)
                ),
                default=0,
            )
        self.expected = expected_yield(p, k)
        return k

    def acceptance(self, matched: int = 0) -> float:
        """How likely each token of the next draft is right, for a draft that continues a
        verbatim copy of ``matched`` tokens (0: unknown)."""
        self._long = matched > LONG_MATCH and self.greedy
        if self._long:
            return self._agreeing(matched - LONG_MATCH)
        if not 0 < matched < LONG_MATCH:
            return self.rate
        # A copy under way but not long yet: what it agrees beyond the shortest key counts
        # too (greedy only), so one early miss does not stop a copy from drafting until it
        # is LONG_MATCH tokens long; Laplace's rule bounds it.
        p = (
            self._agreeing(matched - SHORT_MATCH)
            if matched > SHORT_MATCH and self.greedy
            else self.rate
        )
        return min(p, (matched + 1) / (matched + 2))

    def _agreeing(self, tokens: int) -> float:
        """The rate with ``tokens`` agreeing tokens counted as accepted, as far as
        :attr:`trust` goes."""
        extra = tokens * self.trust
        return (self._hits + extra) / (self._tries + extra)

    def due_try(self, matched: int = 0) -> bool:
        """A step where a draft was at hand and none was made: whether a try is due now
        (see the class's notes on tries)."""
        self._idle += 1
        if self._idle >= self._retry and not 0 < matched < self.RETRY_MATCH:
            self._idle = 0
            self._retry = min(self._retry * 2, self.RETRY_MAX)
            return True
        return False

    def update(self, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        tries = accepted + (1 if accepted < drafted else 0)
        self._hits = self._hits * self.DECAY + accepted
        self._tries = self._tries * self.DECAY + tries
        if self._long:
            self.trust = 0.5 * self.trust + 0.5 * accepted / drafted
        if accepted:
            self._idle = 0
            self._retry = self.RETRY


def best_length(
    p: float,
    k_max: int,
    others: int = 0,
    cost: Callable[[int, int], float] | None = None,
) -> int:
    """The draft length in ``0..k_max`` with the most tokens per unit of step time, for a
    sequence whose draft tokens are each right with probability ``p`` (given the ones
    before), in a step where ``others`` other sequences generate one token each; ``cost``
    says what a step of ``n`` tokens of ``others + 1`` sequences costs (default
    :func:`linear_cost`)."""
    cost = cost or linear_cost
    sequences = others + 1
    best_k, best = 0, sequences / cost(sequences, sequences)
    gain, term = 1.0, 1.0
    for k in range(1, k_max + 1):
        term *= p
        gain += term  # 1 + p + ... + p^k
        value = (others + gain) / cost(sequences + k, sequences)
        if value > best * 1.0001:
            best_k, best = k, value
    return best_k


def expected_yield(p: float, k: int) -> float:
    """The draft tokens a draft of ``k`` is expected to have accepted, each right with
    probability ``p`` given the ones before: ``p + p² + … + p^k``."""
    return p * (1 - p**k) / (1 - p) if p < 1 else float(k)
