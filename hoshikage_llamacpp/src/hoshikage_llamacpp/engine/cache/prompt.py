"""Slot states kept in host RAM, so a conversation whose slot was given to another one
finds its prompt prefix again (llama-server's ``--cache-ram``).

When the engine hands a slot to a prompt that does not continue what the slot holds, it
first copies the slot's KV state out (``llama_state_seq_get_data``). When a later prompt
shares a longer prefix with a saved state than with any free slot, the state is copied back
into the slot (``llama_state_seq_set_data``) and only the rest of the prompt is decoded.
Copying a state costs a few milliseconds per thousand tokens on a small model; reading the
same thousand tokens again costs seconds. The cache is bounded in bytes and forgets the
least recently used state first; it lives and dies with the loaded model.
"""

from __future__ import annotations

import ctypes
import logging

from ..prefix import longest

log = logging.getLogger("hoshikage.llamacpp.prompt_cache")

#: Slots holding fewer tokens than this are not worth saving.
MIN_TOKENS = 64


class _Entry:
    __slots__ = ("tokens", "data", "size", "checkpoints")

    def __init__(self, tokens: list[int], data, size: int, checkpoints=()):
        self.tokens = tokens
        self.data = data
        self.size = size
        #: The sliding-window checkpoints of the slot it came from (see :class:`Checkpoint`).
        self.checkpoints: list[Checkpoint] = list(checkpoints)


#: ``llama_state_seq_*_ext`` flag: only the memory that cannot be rolled back (the
#: sliding-window layers of an iSWA cache).
PARTIAL_ONLY = 1


class Checkpoint:
    """The sliding-window layers' state of a slot right after it read ``n_tokens`` tokens
    (llama-server's context checkpoints). Those layers keep only their window, so cutting a
    slot back to an earlier prefix can leave the next token without the window it attends
    to; restoring a checkpoint at or after the cut brings the window back."""

    __slots__ = ("n_tokens", "pos_min", "data", "size")

    def __init__(self, n_tokens: int, pos_min: int, data, size: int):
        self.n_tokens = n_tokens
        self.pos_min = pos_min
        self.data = data
        self.size = size

    @classmethod
    def take(cls, ctx, seq_id: int, n_tokens: int, n_swa: int) -> Checkpoint | None:
        """The state of ``seq_id``'s sliding-window layers now. Its ``pos_min`` is the first
        position the state holds: llama.cpp writes only the cells inside the window of the
        last position (``pos_max - n_swa + 1`` on), even while the layers still hold older
        ones, which a restore does not bring back."""
        import llama_cpp as lib

        size = int(lib.llama_state_seq_get_size_ext(ctx, seq_id, PARTIAL_ONLY))
        if size <= 0:
            return None
        data = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data_ext(ctx, data, size, seq_id, PARTIAL_ONLY))
        if written <= 0:
            return None
        mem = lib.llama_get_memory(ctx)
        pos_min = int(lib.llama_memory_seq_pos_min(mem, seq_id))
        pos_min = max(pos_min, int(lib.llama_memory_seq_pos_max(mem, seq_id)) - n_swa + 1)
        return cls(n_tokens, pos_min, data, written)

    def restore(self, ctx, seq_id: int) -> bool:
        import llama_cpp as lib

        return (
            int(lib.llama_state_seq_set_data_ext(ctx, self.data, self.size, seq_id, PARTIAL_ONLY))
            > 0
        )


class PromptCache:
    def __init__(self, ctx, limit_bytes: int):
        import llama_cpp

        self._lib = llama_cpp
        self._ctx = ctx
        self.limit = limit_bytes
        self._entries: list[_Entry] = []  # least recently used first
        self.bytes = 0
        #: Prompt tokens served from restored states, for tests and status.
        self.restored_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def save(self, seq_id: int, tokens: list[int], checkpoints=()) -> None:
        """Copy the state of sequence ``seq_id``, which holds ``tokens``, into RAM."""
        if self.limit <= 0 or len(tokens) < MIN_TOKENS:
            return
        for entry in self._entries:
            if entry.tokens == tokens:
                return  # already saved (restored, then not extended)
        lib = self._lib
        size = int(lib.llama_state_seq_get_size(self._ctx, seq_id))
        if size <= 0 or size > self.limit:
            return
        data = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data(self._ctx, data, size, seq_id))
        if written <= 0:
            return
        self._entries.append(_Entry(list(tokens), data, written, checkpoints))
        self.bytes += size + sum(c.size for c in checkpoints)
        while self.bytes > self.limit and self._entries:
            self._drop(self._entries[0])

    def _drop(self, entry: _Entry) -> None:
        self._entries.remove(entry)
        self.bytes -= len(entry.data) + sum(c.size for c in entry.checkpoints)

    def entries(self) -> list[_Entry]:
        """The saved states, most recently used first."""
        return self._entries[::-1]

    def __contains__(self, entry: _Entry) -> bool:
        return entry in self._entries

    def best(self, tokens: list[int]) -> tuple[_Entry | None, int]:
        """The saved state sharing the longest prefix with ``tokens``, and that length."""
        return longest(self._entries, tokens)

    def restore(self, entry: _Entry, seq_id: int) -> bool:
        """Copy ``entry`` back into sequence ``seq_id`` (emptied first). The entry leaves
        the cache: the slot holds it now, and saves it again when it is given away."""
        lib = self._lib
        mem = lib.llama_get_memory(self._ctx)
        lib.llama_memory_seq_rm(mem, seq_id, -1, -1)
        read = int(lib.llama_state_seq_set_data(self._ctx, entry.data, entry.size, seq_id))
        self._drop(entry)
        if read <= 0:
            log.warning("restoring a saved prompt state failed; the prompt is read again")
            lib.llama_memory_seq_rm(mem, seq_id, -1, -1)
            return False
        return True
