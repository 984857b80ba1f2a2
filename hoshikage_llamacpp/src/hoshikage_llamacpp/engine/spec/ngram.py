"""The n-gram proposer: guesses from the sequence's own prompt and output, the most recent
earlier occurrence of its last few tokens (the longest n-gram that matches, 12 down to 3
tokens) and what followed it, as llama.cpp's ``common/ngram-*.cpp``. Output that copies its
input (editing pasted code, quoting, JSON re-emitted with a field changed, a greedy model
looping) drafts long runs; free text drafts rarely, and then costs nothing.
"""

from __future__ import annotations

#: The n-gram sizes looked up, longest first: a longer match is a better predictor (a
#: 12-token match, llama.cpp's ngram-simple key, is right nearly always; 2-token matches
#: were wrong too often in JSON and prose to be worth their cost).
NGRAM_SIZES = (12, 8, 5, 3)

#: How far back :attr:`NgramDrafter.matched` is counted.
MAX_MATCHED = 256


class NgramDrafter:
    """A :class:`~.proposer.Proposer` from the sequence's own history (prompt plus output).

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
        # As an accept of each token, in one pass per n-gram size (a later occurrence wins).
        tokens = self.tokens = list(prompt)
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

    def propose(self, k: int) -> list[int]:
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
