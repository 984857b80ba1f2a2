"""Speculative decoding: cheap guesses of a sequence's next tokens, checked by the model in
the same ``llama_decode`` that produces its next token (see :mod:`.engine`).

A :class:`Drafter` is one sequence's guesser, after llama.cpp's ``begin/draft/accept``
interface (``common/speculative.cpp``), where what was accepted arrives as the tokens
themselves:

* :meth:`Drafter.begin` gets the prompt's tokens;
* :meth:`Drafter.push` gets every token the sequence generates;
* :meth:`Drafter.draft` guesses up to ``k`` tokens that follow the last one;
* :attr:`Drafter.matched` says how long a stretch of the history agreed, token for token,
  with the place the last draft was copied from (0: no such evidence).

:class:`NgramDrafter` guesses from the sequence's own prompt and output: the most recent
earlier occurrence of its last few tokens (the longest n-gram that matches, 12 down to 3
tokens), and what followed it. Output that copies its input (editing pasted code,
quoting, JSON re-emitted with a field changed, a greedy model looping) drafts long runs;
free text drafts rarely, and then costs nothing.

:class:`DraftLength` decides ``k`` per sequence from its recent acceptance and from how
full the batch is, so speculation backs off where it would cost more than it saves.

Verification is sample-and-match (llama-cpp-python's ``examples/server``, llama-server):
each position is sampled with the sequence's own sampler chain, the drafts matching the
samples are kept, plus the first sample that differs. Every token is drawn exactly as it
would have been without a draft, so the output is the same at any temperature.
"""

from __future__ import annotations

from collections.abc import Callable

from ..llama.multimodal import text_run
from .prefix import common_prefix
from .slots import trim_kv

#: The n-gram sizes looked up, longest first: a longer match is a better predictor (a
#: 12-token match, llama.cpp's ngram-simple key, is right nearly always; 2-token matches
#: were wrong too often in JSON and prose to be worth their cost).
NGRAM_SIZES = (12, 8, 5, 3)


class Drafter:
    """One sequence's guesser (the interface; :class:`NgramDrafter` is the built-in one)."""

    #: Tokens before the last draft's source that agree with the sequence's own last
    #: tokens (see :class:`DraftLength`).
    matched = 0

    def begin(self, prompt: list[int]) -> None:
        raise NotImplementedError

    def push(self, token: int) -> None:
        raise NotImplementedError

    def draft(self, k: int) -> list[int]:
        raise NotImplementedError


class NgramDrafter(Drafter):
    """Drafts from the sequence's own history (prompt plus output).

    For each n-gram size it keeps a dict from the n tokens to where the tokens after their
    most recent occurrence start, updated as tokens arrive: a lookup is a dict probe, not a
    scan of the history, whatever its length.
    """

    __slots__ = ("tokens", "_index", "matched")

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._index: tuple[dict, ...] = tuple({} for _ in NGRAM_SIZES)
        self.matched = 0

    def begin(self, prompt: list[int]) -> None:
        # As a push of each token, in one pass per n-gram size (a later occurrence wins).
        tokens = self.tokens = list(prompt)
        for n, index in zip(NGRAM_SIZES, self._index, strict=True):
            index.clear()
            index.update((tuple(tokens[end - n : end]), end) for end in range(n, len(tokens)))

    def push(self, token: int) -> None:
        tokens = self.tokens
        tokens.append(token)
        end = len(tokens) - 1  # the n-grams ending just before the new token are followed by it
        for n, index in zip(NGRAM_SIZES, self._index, strict=True):
            if end >= n:
                index[tuple(tokens[end - n : end])] = end

    def draft(self, k: int) -> list[int]:
        self.matched = 0
        if k <= 0:
            return []
        tokens = self.tokens
        out: list[int] = []
        # A match close to the end continues into the text being drafted (a loop): look up
        # again from the draft's own tail until k tokens are found or nothing matches.
        while len(out) < k:
            tail = tokens[-NGRAM_SIZES[0] :] + out if out else tokens
            start = self._lookup(tail)
            if start is None:
                break
            if not out:
                self.matched = _agreement(tokens, start, MAX_MATCHED)
            run = tokens[start : start + k - len(out)]
            if not run:
                break
            out.extend(run)
        return out

    def _lookup(self, tail: list[int]) -> int | None:
        for n, index in zip(NGRAM_SIZES, self._index, strict=True):
            if len(tail) >= n:
                start = index.get(tuple(tail[-n:]))
                if start is not None:
                    return start
        return None


#: How far back :attr:`NgramDrafter.matched` is counted.
MAX_MATCHED = 256


def _agreement(tokens: list[int], start: int, cap: int) -> int:
    """How many tokens before ``start`` equal the history's last ones, position for
    position (at most ``cap``): the length of the verbatim copy being continued."""
    end = len(tokens)
    limit = min(cap, start)
    n, block = 0, 16
    while (
        n + block <= limit
        and tokens[start - n - block : start - n] == tokens[end - n - block : end - n]
    ):
        n += block
    while n < limit and tokens[start - 1 - n] == tokens[end - 1 - n]:
        n += 1
    return n


#: What one more token with logits adds to a decode step, as a share of a one-token step,
#: before :class:`StepCost` has measured it: the optimistic end of what was measured (Gemma
#: 3 270M on 2 threads of this CPU: ``1 + 0.35·(n-1)`` one-token steps at 8 to 16 tokens),
#: so that every length is tried before the measurement decides.
TOKEN_COST = 0.35


def linear_cost(n: int, sequences: int = 1) -> float:
    """A step of ``n`` tokens with logits, in one-token steps, before any measurement."""
    return 1.0 + TOKEN_COST * (n - 1)


class StepCost:
    """What a decode step of ``n`` tokens, each with logits, of ``sequences`` sequences
    costs on this model and machine, in one-token steps: measured on the engine's own
    generation steps (the seconds of ``llama_decode``, graph rebuild included), a moving
    average per size and number of sequences.

    The cost is far from linear in ``n``: on a CPU a step of 2 tokens cost 2.2 one-token
    steps, one of 8 tokens 3.8 and one of 16 5.3 (Gemma 3 270M, 2 threads: the matrix
    kernels change with the batch's size), so a draft of 1 to 4 tokens at 60 % acceptance
    lost 10–16 % of the decode speed under a linear estimate. And it depends on how the
    tokens are spread: with a KV stream per slot, llama.cpp splits a batch whose sequences
    have unequal token counts into several micro-batches (``split_equal``), so one
    sequence's draft of 4 beside 3 others' single tokens cost 6.9 one-token steps where 8
    tokens of one sequence cost 3.8. A size not measured yet counts as the largest
    measured size below it (of as many sequences) plus :data:`TOKEN_COST` a token (the
    first step of each, which builds its graph and buffers, is not counted)."""

    ALPHA = 0.2

    __slots__ = ("_seconds", "_seen")

    def __init__(self) -> None:
        self._seconds: dict[tuple[int, int], float] = {}
        self._seen: set[tuple[int, int]] = set()

    def record(self, n: int, sequences: int, seconds: float) -> None:
        key = (n, sequences)
        if key not in self._seen:
            self._seen.add(key)
            return
        old = self._seconds.get(key)
        self._seconds[key] = seconds if old is None else old + self.ALPHA * (seconds - old)

    def __call__(self, n: int, sequences: int = 1) -> float:
        one = self._seconds.get((1, 1))
        if n <= 1 or one is None:
            return linear_cost(n)
        this = self._seconds.get((n, sequences))
        if this is not None:
            return this / one
        # Not measured: the largest measured size below it, and TOKEN_COST a token more.
        below = max((m for m, seqs in self._seconds if seqs == sequences and m < n), default=0)
        if not below:
            return linear_cost(n)
        return self._seconds[(below, sequences)] / one + TOKEN_COST * (n - below)


#: Agreement beyond the longest n-gram key is what counts as evidence (see DraftLength).
LONG_MATCH = NGRAM_SIZES[0]


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
    sequence with a long record of accepted drafts does not draft 12 tokens on a guess.

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
        #: The cost of a step by its size (the engine's :class:`StepCost`; None: linear).
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

    def next(
        self,
        others: int,
        limit: int,
        matched: int = 0,
        planned: int = 0,
        planned_yield: float | None = None,
    ) -> int:
        """The length of the next draft, at most ``limit``, for a draft that continues a
        verbatim copy of ``matched`` tokens (0: unknown), in a step where ``others`` other
        sequences generate and ``planned`` draft tokens of theirs are already in, expected
        to yield ``planned_yield`` tokens. :attr:`expected` is then what this draft is
        expected to yield."""
        p = self.rate
        self._long = matched > LONG_MATCH and self.greedy
        if self._long:
            extra = (matched - LONG_MATCH) * self.trust
            p = (self._hits + extra) / (self._tries + extra)
        elif 0 < matched < LONG_MATCH:
            p = min(p, (matched + 1) / (matched + 2))
        k = best_length(p, min(self.max, limit), others, self.cost, planned, planned_yield)
        self.expected = p * (1 - p**k) / (1 - p) if p < 1 else float(k)
        if k == 0 and limit > 0:
            self._idle += 1
            if self._idle >= self._retry and not 0 < matched < self.RETRY_MATCH:
                self._idle = 0
                self._retry = min(self._retry * 2, self.RETRY_MAX)
                # The shortest try that would pay were the draft as right as a good copy.
                k = min(
                    (
                        k
                        for k in range(1, min(self.max, limit) + 1)
                        if best_length(self.RETRY_P, k, others, self.cost, planned, planned_yield)
                    ),
                    default=0,
                )
                self.expected = p * (1 - p**k) / (1 - p) if p < 1 else float(k)
                return k
        return k

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
    planned: int = 0,
    planned_yield: float | None = None,
) -> int:
    """The draft length in ``0..k_max`` with the most tokens per unit of step time, for a
    sequence whose draft tokens are each right with probability ``p`` (given the ones
    before), in a step where ``others`` other sequences generate one token each (and
    ``planned`` tokens of their drafts are in it too); ``cost`` says what a step of ``n``
    tokens of ``others + 1`` sequences costs (default :func:`linear_cost`)."""
    cost = cost or linear_cost
    # What the step yields without this draft: a token per sequence, and what the drafts
    # planned so far are expected to add (all of them, when that is not known).
    size, sequences = others + 1 + planned, others + 1
    base = others + 1 + (planned if planned_yield is None else planned_yield)
    best_k, best = 0, base / cost(size, sequences)
    gain, term = 1.0, 1.0
    for k in range(1, k_max + 1):
        term *= p
        gain += term  # 1 + p + ... + p^k
        value = (base - 1 + gain) / cost(size + k, sequences)
        if value > best * 1.0001:
            best_k, best = k, value
    return best_k


# ---- the engine's speculation ---------------------------------------------------------------


class Speculation:
    """Who drafts for an engine's choices (the engine's :class:`~.protocols.Speculator`):
    at most ``draft_max`` tokens per choice and step, from the n-gram lookup (``ngram``), a
    :class:`DraftModel` (``draft_model``), or both: the lookup first. Engine thread only."""

    def __init__(self, draft_max: int, ngram: bool = True, draft_model=None):
        self.draft_max = draft_max
        self.ngram = ngram
        self.draft_model = draft_model
        #: What a generation step costs by its size, measured on the engine's steps (the
        #: draft lengths are chosen with it).
        self.step_cost = StepCost()

    def begin(self, choice, prompt: list[int], greedy: bool) -> None:
        """A choice that asked for speculation starts: its draft length and its drafter."""
        choice.draft_length = DraftLength(self.draft_max, greedy=greedy, cost=self.step_cost)
        if self.ngram:
            choice.drafter = NgramDrafter()
            choice.drafter.begin(prompt)

    def record(self, n: int, sequences: int, seconds: float) -> None:
        """A generation step of ``n`` tokens of ``sequences`` choices took ``seconds``."""
        self.step_cost.record(n, sequences, seconds)

    def plan(self, generating: list, room: int) -> None:
        """Each generating choice's draft for this step (its ``drafts``), within the
        ``room`` the batch has beside every next token, its token budget and its draft
        length. The n-gram lookup comes first, as long as it can be: how long a copy it
        continues is part of what decides how much of it to keep (:class:`DraftLength`)."""
        others = len(generating) - 1
        planned, planned_yield = 0, 0.0  # draft tokens in the step, and what they should add
        wanted, asking = [], []  # what the draft model is asked for, and by whom
        for seq in generating:
            seq.drafts = ()
            length = seq.draft_length
            if length is None or room <= 0:
                continue
            # The step yields up to k + 1 tokens; the last one may not exceed the budget.
            limit = min(room, seq.job.plan.budget - seq.n_gen - 1)
            if limit <= 0:
                continue
            drafter = seq.drafter
            if drafter is not None:
                draft = drafter.draft(min(length.max, limit))
                if draft and seq.job.plan.media:
                    draft = text_run(draft)  # never a media placeholder
                if draft:
                    k = length.next(others, len(draft), drafter.matched, planned, planned_yield)
                    seq.drafts = draft[:k]
                    room -= k
                    planned += k
                    planned_yield += length.expected if k else 0.0
                    continue
            if self.draft_model is not None and not seq.job.plan.media:
                k = length.next(others, limit, planned=planned, planned_yield=planned_yield)
                if k:
                    planned += k
                    planned_yield += length.expected
                    wanted.append((seq.slot.id, [*seq.slot.tokens, seq.next_token], k))
                    asking.append(seq)
                    room -= k
        if wanted:
            for seq, drafts in zip(asking, self.draft_model.draft(wanted), strict=True):
                seq.drafts = drafts


# ---- a draft model -----------------------------------------------------------------------

#: As llama.cpp's ``common_speculative_are_compatible``: vocabularies may differ in size by
#: this much, and token texts are compared from this id on (the first few are special).
VOCAB_SIZE_SLACK = 128
VOCAB_CHECK_FROM = 5


def vocab_mismatch(target, draft) -> str | None:
    """Why ``draft``'s vocabulary (a ``llama_vocab`` pointer) cannot draft for ``target``'s,
    checked as llama.cpp checks it: type, BOS/EOS handling and ids, size, then the text of
    every token both have. None when they match."""
    import llama_cpp as lib

    for what, get in (
        ("vocabulary type", lib.llama_vocab_type),
        ("add-BOS setting", lib.llama_vocab_get_add_bos),
        ("add-EOS setting", lib.llama_vocab_get_add_eos),
        ("BOS token", lib.llama_vocab_bos),
        ("EOS token", lib.llama_vocab_eos),
    ):
        a, b = get(target), get(draft)
        if a != b:
            return f"its {what} differs from the model's ({b} against {a})"
    n_target, n_draft = lib.llama_vocab_n_tokens(target), lib.llama_vocab_n_tokens(draft)
    if abs(n_target - n_draft) > VOCAB_SIZE_SLACK:
        return f"its vocabulary has {n_draft} tokens, the model's {n_target}"
    for token in range(VOCAB_CHECK_FROM, min(n_target, n_draft)):
        a, b = lib.llama_vocab_get_text(target, token), lib.llama_vocab_get_text(draft, token)
        if a != b:
            a, b = (t.decode("utf-8", "replace") for t in (a, b))
            return f"token {token} is {b!r} in it and {a!r} in the model"
    return None


class DraftModel:
    """A second, smaller model that drafts for every slot of the target's engine: its own
    context with the same slots (KV sequence ``i`` follows target slot ``i``), greedy.

    Each call first brings each slot's draft cache up to the tokens the target holds (the
    prompt once, then what the last step kept, the rest dropped), then drafts ``k`` tokens per
    sequence, one batched decode per drafted token. Engine thread only.
    """

    def __init__(self, loaded, n_vocab_target: int, n_batch: int):
        import llama_cpp

        from .batch import Batch

        self._lib = llama_cpp
        self.loaded = loaded
        ctx = loaded.context.ctx
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(loaded.model.vocab)
        #: Drafted ids must be tokens of the target too.
        self._limit = min(self._n_vocab, n_vocab_target)
        n_slots = int(llama_cpp.llama_n_seq_max(ctx))
        self._batch = Batch(llama_cpp, max(n_batch, n_slots))
        self.tokens: list[list[int]] = [[] for _ in range(n_slots)]

    def draft(self, wanted: list[tuple[int, list[int], int]]) -> list[list[int]]:
        """For each ``(slot, tokens, k)``: up to ``k`` tokens to follow ``tokens``."""
        out: list[list[int]] = [[] for _ in wanted]
        todo = []
        for slot, tokens, _k in wanted:
            held = self.tokens[slot]
            common = min(common_prefix(held, tokens), len(tokens) - 1)
            if common < len(held):
                common = trim_kv(self._lib, self._mem, slot, common)
                del held[common:]
            todo.append(tokens[common:])
        batch = self._batch
        # Catch up, in chunks of the batch: the prompt the first time, a token or two after.
        while any(todo):
            batch.clear()
            rows = {}
            for i, (slot, _tokens, _k) in enumerate(wanted):
                if todo[i] and batch.room:
                    take = todo[i][: batch.room]
                    todo[i] = todo[i][len(take) :]
                    held = self.tokens[slot]
                    row = batch.add_prompt(take, len(held), slot, logits_last=not todo[i])
                    held.extend(take)
                    if not todo[i]:
                        rows[i] = row
            if not self._decode():
                return out
            for i, row in rows.items():
                out[i].append(self._best(row))
        # Then one token per decode for every sequence that wants more.
        while True:
            batch.clear()
            rows = {}
            for i, (slot, _tokens, k) in enumerate(wanted):
                if out[i] and len(out[i]) < k and out[i][-1] < self._limit:
                    held = self.tokens[slot]
                    rows[i] = batch.add(out[i][-1], len(held), slot)
                    held.append(out[i][-1])
            if not rows or not self._decode():
                break
            for i, row in rows.items():
                out[i].append(self._best(row))
        for i, (_slot, _tokens, k) in enumerate(wanted):
            draft = out[i][:k]
            for j, token in enumerate(draft):
                if token >= self._limit:
                    del draft[j:]
                    break
            out[i] = draft
        return out

    def _decode(self) -> bool:
        batch = self._batch
        batch.struct.n_tokens = batch.n
        if self._lib.llama_decode(self._ctx, batch.struct) != 0:
            # What it wrote is unknown: start every slot's draft cache again.
            self._lib.llama_memory_clear(self._mem, True)
            for held in self.tokens:
                held.clear()
            return False
        return True

    def _best(self, row: int) -> int:
        from ..llama.logits import row_logits

        return int(row_logits(self._ctx, row, self._n_vocab).argmax())

    def close(self) -> None:
        loaded, self.loaded = self.loaded, None
        if loaded is not None:
            loaded.close()
