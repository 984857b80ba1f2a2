"""The n-gram proposer: guesses from the sequence's own prompt and output, the most recent
earlier occurrence of its last few tokens (the longest n-gram that matches, 12 down to 3
tokens) and what followed it, as llama.cpp's ``common/ngram-*.cpp``. Output that copies its
input (editing pasted code, quoting, JSON re-emitted with a field changed, a greedy model
looping) drafts long runs; free text drafts rarely, and then costs nothing.

With the option ``ngram_pool`` it also reads what the model's earlier sequences wrote
(:class:`NgramPool`, one per loaded model, as llama.cpp's ``ngram-mod`` keeps one pool
"shared across all sequences"): a question asked again (a retry, a regenerated answer, the
same request from two clients, an agent's sub-task run twice) drafts its whole answer from
the first one's, where its own prompt holds none of it. Of the two sources the draft
continues the longer verbatim copy. It is off by default: the answer asked again is then
checked in wider steps than the first was read in, and llama.cpp's logits differ in the
last bits between step widths, so a greedy answer could part from the first at a near tie.
"""

from __future__ import annotations

#: The n-gram sizes looked up, longest first: a longer match is a better predictor (a
#: 12-token match, llama.cpp's ngram-simple key, is right nearly always; 2-token matches
#: were wrong too often in JSON and prose to be worth their cost).
NGRAM_SIZES = (12, 8, 5, 3)

#: How far back :attr:`NgramDrafter.matched` is counted.
MAX_MATCHED = 256

#: The n-gram size of :class:`NgramPool`'s keys: the longest own key, right nearly always.
POOL_KEY = NGRAM_SIZES[0]
#: How many prompt tokens :class:`NgramPool` keeps before an output: a draft's agreement
#: (:attr:`NgramDrafter.matched`) is counted that far into the prompt.
POOL_CONTEXT = 64


class NgramPool:
    """What a model's finished sequences wrote, for every later sequence to draft from.

    Each sequence that drafted adds its output when it ends (:meth:`add`), with up to
    :data:`POOL_CONTEXT` tokens of its prompt before it, so that a draft's agreement (see
    :attr:`NgramDrafter.matched`) can be counted into the prompt too. The index maps the
    hash of every :data:`POOL_KEY`-gram that a token of the output follows to where that
    token is (the most recent occurrence wins); a hit is checked against the tokens
    themselves, so neither a hash collision nor an evicted source ever drafts. The oldest
    sources go first once more than :attr:`budget` tokens are kept (the index holds at
    most one entry per token, about 100 bytes, and the sources about 40), and the index is
    built again from those left when its stale entries outnumber them. The pool lives and
    dies with the model's engine, and is read and written on its thread only.
    """

    #: The most tokens kept, all sources together (each with its prompt's tail).
    BUDGET = 1 << 15

    __slots__ = ("budget", "_sources", "_index", "_tokens", "_next")

    def __init__(self, budget: int = BUDGET) -> None:
        self.budget = budget
        #: id -> (tokens: the prompt's tail, then the output; where the output starts),
        #: oldest first.
        self._sources: dict[int, tuple[list[int], int]] = {}
        #: hash of a POOL_KEY-gram -> id << 32 | the index of the token after it.
        self._index: dict[int, int] = {}
        self._tokens = 0
        self._next = 0

    @property
    def tokens(self) -> int:
        """The tokens kept (outputs, and the prompt tails before them)."""
        return self._tokens

    def add(self, history: list[int], output: int) -> None:
        """A sequence ended: ``history`` is its prompt and output, the last ``output`` tokens
        of it what it wrote."""
        output = min(output, len(history))
        source = history[max(len(history) - output - POOL_CONTEXT, 0) :]
        if output <= 0 or len(source) > self.budget:
            return
        first = len(source) - output
        ident = self._next
        self._next += 1
        self._sources[ident] = (source, first)
        self._tokens += len(source)
        self._enter(ident, source, first)
        while self._tokens > self.budget:
            tokens, _first = self._sources.pop(next(iter(self._sources)))
            self._tokens -= len(tokens)
        if len(self._index) > 2 * self.budget:  # mostly stale: built again from the live
            self._index.clear()
            for ident, (source, first) in self._sources.items():
                self._enter(ident, source, first)

    def _enter(self, ident: int, source: list[int], first: int) -> None:
        n = POOL_KEY
        base = ident << 32
        index = self._index
        for end in range(max(first, n), len(source)):
            index[hash(tuple(source[end - n : end]))] = base | end

    def lookup(self, tail: list[int]) -> tuple[list[int], int] | None:
        """Where the tokens after the last :data:`POOL_KEY` of ``tail`` were written last:
        (the source's tokens, the index of the first one after them), or None."""
        n = POOL_KEY
        if len(tail) < n:
            return None
        key = tuple(tail[-n:])
        value = self._index.get(hash(key))
        if value is None:
            return None
        found = self._sources.get(value >> 32)
        end = value & 0xFFFFFFFF
        if found is None or tuple(found[0][end - n : end]) != key:
            return None  # evicted, or another n-gram's hash
        return found[0], end


class NgramDrafter:
    """A :class:`~.proposer.Proposer` from the sequence's own history (prompt plus output),
    and from the model's :class:`NgramPool` where one is given.

    For each n-gram size it keeps a dict from the n tokens to where the tokens after their
    most recent occurrence start, updated as tokens arrive: a lookup is a dict probe, not a
    scan of the history, whatever its length.
    """

    __slots__ = ("tokens", "_index", "matched", "pool", "prompt")

    def __init__(self, pool: NgramPool | None = None) -> None:
        self.tokens: list[int] = []
        self._index: tuple[dict, ...] = tuple({} for _ in NGRAM_SIZES)
        self.matched = 0
        #: The model's pool, read when a draft is sought and given the output at :meth:`end`.
        self.pool = pool
        #: How many tokens of :attr:`tokens` are the prompt.
        self.prompt = 0

    def begin(self, prompt: list[int]) -> None:
        # As an accept of each token, in one pass per n-gram size (a later occurrence wins).
        tokens = self.tokens = list(prompt)
        self.prompt = len(tokens)
        for n, index in zip(NGRAM_SIZES, self._index, strict=True):
            index.clear()
            index.update((tuple(tokens[end - n : end]), end) for end in range(n, len(tokens)))

    def accept(self, tokens: list[int]) -> None:
        history = self.tokens
        for token in tokens:
            history.append(token)
            end = len(history) - 1  # the n-grams ending just before it are followed by it
            for n, index in zip(NGRAM_SIZES, self._index, strict=True):
                if end >= n:
                    index[tuple(history[end - n : end])] = end

    def end(self) -> None:
        """The sequence is over: what it wrote goes into the pool."""
        if self.pool is not None:
            self.pool.add(self.tokens, len(self.tokens) - self.prompt)
            self.pool = None  # once

    def propose(self, k: int) -> list[int]:
        self.matched = 0
        if k <= 0:
            return []
        tokens = self.tokens
        # The source whose match continues the longer verbatim copy: the sequence's own
        # history, or what an earlier sequence wrote (own history on a tie).
        source, start = tokens, self._lookup(tokens)
        if start is not None:
            self.matched = _agreement(tokens, start, tokens, MAX_MATCHED)
        pool = self.pool
        if pool is not None and self.matched < MAX_MATCHED:
            found = pool.lookup(tokens)
            if found is not None:
                matched = _agreement(found[0], found[1], tokens, MAX_MATCHED)
                if start is None or matched > self.matched:
                    (source, start), self.matched = found, matched
        if start is None:
            return []
        out = source[start : start + k]
        # A match close to the end continues into the text being drafted (a loop), or a
        # pooled source ends: look up again from the draft's own tail until k tokens are
        # found or nothing matches.
        while out and len(out) < k:
            tail = tokens[-NGRAM_SIZES[0] :] + out
            source, start = tokens, self._lookup(tail)
            if start is None and pool is not None:
                source, start = pool.lookup(tail) or (None, None)
            if start is None:
                break
            run = source[start : start + k - len(out)]
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


def _agreement(source: list[int], start: int, tokens: list[int], cap: int) -> int:
    """How many tokens of ``source`` before ``start`` equal the history ``tokens``'s last
    ones, position for position (at most ``cap``): the length of the verbatim copy being
    continued."""
    end = len(tokens)
    limit = min(cap, start, end)
    n, block = 0, 16
    while (
        n + block <= limit
        and source[start - n - block : start - n] == tokens[end - n - block : end - n]
    ):
        n += block
    while n < limit and source[start - 1 - n] == tokens[end - 1 - n]:
        n += 1
    return n
