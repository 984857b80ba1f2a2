"""A ``llama_batch`` that the engine, scoring and the draft model fill in place."""

from __future__ import annotations

import ctypes


class Batch:
    """A ``llama_batch`` over numpy arrays, filled in place (one seq id per token)."""

    def __init__(self, lib, capacity: int):
        import numpy as np

        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        int32_p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        self._seq_ptrs = (int32_p * capacity)(
            *(ctypes.cast(base + 4 * i, int32_p) for i in range(capacity))
        )
        self.struct = lib.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(int32_p),
            embd=None,
            pos=self.pos.ctypes.data_as(int32_p),
            n_seq_id=self.n_seq_id.ctypes.data_as(int32_p),
            seq_id=self._seq_ptrs,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self.n = 0
        #: Rows kept free of :attr:`room` (for the engine's pad rows).
        self.reserve = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int) -> int:
        """One token whose logits are wanted; returns its row."""
        i = self.n
        self.token[i] = token
        self.pos[i] = pos
        self.seq[i] = seq
        self.logits[i] = 1
        self.n = i + 1
        return i

    def add_prompt(self, tokens: list[int], pos: int, seq: int, logits_last: bool) -> int:
        """Prompt tokens at ``pos..``; logits for the last one only if asked. Returns its row."""
        i, k = self.n, len(tokens)
        self.token[i : i + k] = tokens
        self.pos[i : i + k] = range(pos, pos + k)
        self.seq[i : i + k] = seq
        self.logits[i : i + k] = 0
        if logits_last:
            self.logits[i + k - 1] = 1
        self.n = i + k
        return i + k - 1

    @property
    def room(self) -> int:
        return max(0, self.capacity - self.reserve - self.n)


def lone_rows(counts: dict[int, int], n_ubatch: int) -> list[int]:
    """The sequences of a batch (``counts``: rows per sequence) that llama.cpp computes as
    the only row of a ubatch. With a KV stream per sequence it splits a batch into ubatches
    that take as many rows from each sequence with rows left (``split_equal``): the fewest
    any has left, and no more than ``n_ubatch`` in all. Rows 1, 1 and 2 go as 1, 1, 1 and
    then 1 alone."""
    left = {seq: n for seq, n in counts.items() if n > 0}
    lone = []
    while left:
        take = min(min(left.values()), max(1, n_ubatch // len(left)))
        if take == 1 and len(left) == 1:
            lone.extend(left)
        left = {seq: n - take for seq, n in left.items() if n > take}
    return lone
