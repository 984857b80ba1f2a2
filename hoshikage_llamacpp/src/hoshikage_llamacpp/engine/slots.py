"""The context's slots: each KV sequence ``0 .. parallel-1`` and the tokens it holds.

A :class:`SlotPool` is what the engine's generations and score jobs share: which slots are
free, where a new prompt goes (:meth:`SlotPool.place`), and every change to what a slot
holds, in llama.cpp's KV cache and in its token list together: cut back
(:meth:`SlotPool.trim`), copied from another (:meth:`SlotPool.fork`), saved to and brought
back from the RAM and disk caches (:meth:`SlotPool.swap_in`), and, on a model whose
sliding-window layers keep only the window, checkpointed (:meth:`SlotPool.checkpoint`,
:meth:`SlotPool.window`). Engine thread only.
"""

from __future__ import annotations

import ctypes
import logging
import time

from hoshikage_core.errors import HoshikageError

from .cache.prompt import Checkpoint, PromptCache
from .prefix import common_prefix

log = logging.getLogger("hoshikage.llamacpp.engine")

#: A saved state is brought back only when it spares at least this many more tokens than
#: what the chosen slot already holds.
MIN_RESTORE_GAIN = 32

#: Sliding-window checkpoints kept per slot (the latest prompts' ends).
CHECKPOINTS = 2
#: Slots holding fewer tokens than this are not written to disk at unload.
MIN_SAVED_TOKENS = 64
#: Prompts shorter than this get no checkpoint: reading them again costs little.
MIN_CHECKPOINT_TOKENS = 64

#: A prompt sharing at least this share of itself with a slot's cache may take that slot
#: even if it discards the rest of it: a long shared system prompt is worth it, a shared
#: chat-template header is not. (llama-server's ``--slot-prompt-similarity`` is 0.1, which
#: lets a new conversation with a short system prompt take over another's slot.)
SLOT_SIMILARITY = 0.5


class Slot:
    """One KV sequence of the context and the tokens it holds, position by position."""

    __slots__ = ("id", "tokens", "last_used", "owner", "checkpoints", "key")

    def __init__(self, id: int):
        self.id = id
        self.tokens: list[int] = []
        self.last_used = 0.0
        #: The ``cache_key`` of the request it served last (a conversation's key), if any.
        self.key: str | None = None
        #: What runs in it: a generation's sequence or a score job's stream (None: free).
        self.owner: object | None = None
        #: Sliding-window checkpoints of what it holds, oldest first (SWA models only).
        self.checkpoints: list[Checkpoint] = []


def trim_kv(lib, mem, seq_id: int, keep: int) -> int:
    """Drop KV sequence ``seq_id``'s cells from position ``keep`` on. What it holds after:
    ``keep``, or 0 where llama.cpp cannot cut there (the whole sequence is dropped)."""
    if not lib.llama_memory_seq_rm(mem, seq_id, keep, -1):
        lib.llama_memory_seq_rm(mem, seq_id, -1, -1)
        return 0
    return keep


def runs(ids: set[int]) -> int:
    """How many runs of consecutive numbers ``ids`` make: the passes llama.cpp needs for a
    step of one token from each of those KV sequences (see :meth:`SlotPool.place`)."""
    return sum(1 for i in ids if i - 1 not in ids)


class SlotPool:
    """The slots of one context, with the RAM cache (``cache_bytes > 0``), the disk cache
    (``disk``) and the sliding window (``n_swa``, 0: none, or kept at full size) that decide
    what a slot can keep."""

    def __init__(self, ctx, parallel: int, cache_bytes: int = 0, n_swa: int = 0, disk=None):
        import llama_cpp

        self._lib = llama_cpp
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.slots = [Slot(i) for i in range(parallel)]
        #: Slot states kept in host RAM when their slot is given to another conversation.
        self.cache = PromptCache(ctx, cache_bytes) if cache_bytes > 0 else None
        #: Slot states an earlier load left on disk (a :class:`.disk_cache.DiskCache`).
        self.disk = disk
        #: The sliding window of a model whose SWA layers hold only the window: a reused
        #: prefix must still have its window, see :meth:`window`.
        self.n_swa = n_swa
        #: Prompt tokens placed in slots, and of those found in a slot's cache.
        self.prompt_tokens = 0
        self.cached_tokens = 0
        #: Prompts whose cached prefix could not be used because the window was gone, and
        #: those that kept theirs through a checkpoint.
        self.window_misses = 0
        self.checkpoint_restores = 0

    def free(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.owner is None]

    def take(self, slot: Slot, owner, key: str | None = None) -> None:
        """``owner`` runs in ``slot``, for the conversation ``key`` (None: no one's)."""
        slot.owner = owner
        slot.last_used = time.monotonic()
        slot.key = key

    def let_go(self, slot: Slot) -> None:
        """``slot`` is free again; its cache keeps what was decoded, for the next prompt."""
        slot.owner = None
        slot.last_used = time.monotonic()

    def place(self, free: list[Slot], tokens: list[int], key: str | None = None) -> Slot:
        """Where a new prompt goes, first match wins:

        1. the slot whose cache it continues (the shared prefix is at least half of what the
           slot holds), the longest such prefix first: a conversation finds its own slot;
        2. the slot that served the same ``key`` last (the request's ``cache_key``, a
           client's conversation id), the most recently used first: the conversation's
           prompt changed (an agent compacted or edited its history), and it takes its own
           slot back rather than another conversation's;
        3. an empty slot, so no other conversation's cache is thrown away;
        4. the slot sharing the longest prefix, if that is at least ``SLOT_SIMILARITY`` of
           the prompt (a shared system prompt);
        5. the least recently used slot.

        In 3 and 5, a slot beside the slots in use comes first. With a KV stream per slot,
        llama.cpp decodes a batch in one pass only over sequences with consecutive ids
        (``split_equal``'s sequential split): two streams in slots 0 and 2 cost two passes
        through the weights a step, in slots 0 and 1 one.
        """
        scored = [(common_prefix(slot.tokens, tokens), slot) for slot in free]
        continued = [(n, slot) for n, slot in scored if n and n * 2 >= len(slot.tokens)]
        if continued:
            return max(continued, key=lambda item: item[0])[1]
        own = [slot for slot in free if key is not None and slot.key == key and slot.tokens]
        if own:
            return max(own, key=lambda s: s.last_used)
        busy = {slot.id for slot in self.slots if slot.owner is not None}
        empty = [slot for slot in free if not slot.tokens]
        if empty:
            return min(empty, key=lambda s: (runs(busy | {s.id}), s.id))
        n, slot = max(scored, key=lambda item: item[0])
        if n and n >= SLOT_SIMILARITY * len(tokens):
            return slot
        return min(free, key=lambda s: (runs(busy | {s.id}), s.last_used))

    # ---- what a slot holds ----------------------------------------------------------------

    def trim(self, slot: Slot, keep: int, at: int | None = None) -> int:
        """Cut ``slot`` back to its first ``keep`` tokens, whose KV cells end at position
        ``at`` (``keep`` unless M-RoPE images take fewer positions than tokens); what it
        holds after (0 where llama.cpp could not cut there and emptied it)."""
        if keep < len(slot.tokens):
            if not trim_kv(self._lib, self._mem, slot.id, keep if at is None else at):
                keep = 0
            del slot.tokens[keep:]
            slot.checkpoints = [c for c in slot.checkpoints if c.n_tokens <= keep]
        return keep

    def drop_draft(self, slot: Slot, keep: int, shift: int = 0) -> None:
        """Cut a rejected draft from ``slot``: its tokens from ``keep`` on (no checkpoint
        is that recent), at position ``keep - shift`` (``shift``: the positions its M-RoPE
        images saved). A cut llama.cpp refuses is an error: the slot would be wrong."""
        if keep < len(slot.tokens):
            if not self._lib.llama_memory_seq_rm(self._mem, slot.id, keep - shift, -1):
                raise HoshikageError("llama.cpp could not drop a rejected draft from the KV cache")
            del slot.tokens[keep:]

    def drop_pad(self, seq_id: int, pos: int) -> None:
        """The engine's pad row at ``pos`` of sequence ``seq_id`` leaves the KV cache (its
        slot's tokens never held it)."""
        self._lib.llama_memory_seq_rm(self._mem, seq_id, pos, -1)

    def fork(self, source: Slot, slot: Slot) -> None:
        """``slot`` takes a copy of what ``source`` holds (what it held goes to the RAM
        cache first, unless ``source`` or a saved state holds all but fewer than
        :data:`MIN_RESTORE_GAIN` of its tokens: it would not be brought back over those,
        and the copy costs ~12 ms for 1,000 tokens of Gemma 3 270M; a score job's forks
        land on its last request's streams, which share their input)."""
        if self.cache is not None:
            held = len(slot.tokens)
            near = max(common_prefix(slot.tokens, source.tokens), self.cache.best(slot.tokens)[1])
            if near + MIN_RESTORE_GAIN <= held:
                self.cache.save(slot.id, slot.tokens, slot.checkpoints)
        # Across KV streams llama.cpp copies the whole stream (applied at the next decode);
        # in one unified pool it adds ``slot`` to ``source``'s cells and leaves the cells
        # ``slot`` held, so those go first.
        self._lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
        self._lib.llama_memory_seq_cp(self._mem, source.id, slot.id, -1, -1)
        slot.tokens = list(source.tokens)
        slot.checkpoints = list(source.checkpoints)

    def clear(self) -> None:
        """Every slot empty, and the KV cache with them."""
        for slot in self.slots:
            slot.tokens = []
            slot.checkpoints = []
            slot.owner = None
        try:
            self._lib.llama_memory_clear(self._mem, True)
        except Exception:
            log.exception("clearing the KV cache failed")

    def evict_idle(self) -> bool:
        """With one KV pool for every slot (``kv_unified``) a long sequence can fill it:
        the idle slots' cells go (to the RAM cache first). Whether any went."""
        evicted = False
        for slot in self.slots:
            if slot.owner is None and slot.tokens:
                if self.cache is not None:
                    self.cache.save(slot.id, slot.tokens, slot.checkpoints)
                self._lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
                slot.tokens, slot.checkpoints = [], []
                evicted = True
        return evicted

    # ---- the RAM and disk caches -----------------------------------------------------------

    def swap_in(self, slot: Slot, tokens: list[int]) -> None:
        """Before ``slot`` takes ``tokens``: keep what it holds in the RAM cache if most of
        it is about to be thrown away, and bring back a saved state that shares a longer
        prefix with ``tokens`` than the slot does."""
        cache = self.cache
        held = common_prefix(slot.tokens, tokens)
        entry, saved = cache.best(tokens) if cache is not None else (None, 0)
        if self.disk:
            on_disk, stored = self.disk.best(tokens)
            if on_disk is not None and stored > max(held, saved) + MIN_RESTORE_GAIN:
                if cache is not None and held * 2 < len(slot.tokens):
                    cache.save(slot.id, slot.tokens, slot.checkpoints)
                if self._restore_from_disk(slot, on_disk):
                    self.disk.restored_tokens += min(stored, len(tokens) - 1)
                return
        if cache is None:
            return
        if held * 2 < len(slot.tokens):
            cache.save(slot.id, slot.tokens, slot.checkpoints)
        if entry is not None and saved > held + MIN_RESTORE_GAIN and entry in cache:
            restored = cache.restore(entry, slot.id)
            slot.tokens = list(entry.tokens) if restored else []
            slot.checkpoints = list(entry.checkpoints) if restored else []
            if restored:
                cache.restored_tokens += min(saved, len(tokens) - 1)

    def _restore_from_disk(self, slot: Slot, entry) -> bool:
        """Load a state an earlier load of this model left on disk into ``slot``."""
        lib = self._lib
        read = self.disk.take(entry)
        lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
        slot.tokens, slot.checkpoints = [], []
        if read is None:
            return False
        data, checkpoints = read
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if int(lib.llama_state_seq_set_data(self._ctx, buf, len(data), slot.id)) <= 0:
            log.warning("restoring a prompt state from disk failed; the prompt is read again")
            lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
            return False
        slot.tokens = list(entry.tokens)
        for n_tokens, pos_min, raw in checkpoints:
            array = (ctypes.c_uint8 * len(raw)).from_buffer(raw)
            slot.checkpoints.append(Checkpoint(n_tokens, pos_min, array, len(raw)))
        return True

    def saved_states(self) -> list:
        """What the disk cache keeps when the model unloads: the slots' states, most
        recently used first, then the RAM cache's."""
        from .cache.disk import Saved

        lib = self._lib
        states = []
        for slot in sorted(self.slots, key=lambda s: s.last_used, reverse=True):
            if len(slot.tokens) < MIN_SAVED_TOKENS:
                continue
            size = int(lib.llama_state_seq_get_size(self._ctx, slot.id))
            if size <= 0:
                continue
            buf = (ctypes.c_uint8 * size)()
            written = int(lib.llama_state_seq_get_data(self._ctx, buf, size, slot.id))
            if written <= 0:
                continue
            data = memoryview(buf)[:written]
            states.append(Saved(list(slot.tokens), data, _views(slot.checkpoints)))
        for entry in self.cache.entries() if self.cache is not None else ():
            data = memoryview(entry.data)[: entry.size]
            states.append(Saved(list(entry.tokens), data, _views(entry.checkpoints)))
        return states

    # ---- the sliding window ------------------------------------------------------------------

    def window(self, slot: Slot, common: int) -> int:
        """How much of ``slot``'s first ``common`` tokens can be kept on a model whose
        sliding-window layers hold only the window: all of it when those layers still hold
        the window of position ``common`` (positions from ``common - n_swa + 1``), else the
        prefix of the latest checkpoint that has it (restored here), else 0."""
        lib, n_swa = self._lib, self.n_swa
        pos_min = int(lib.llama_memory_seq_pos_min(self._mem, slot.id))
        if 0 <= pos_min <= max(0, common - n_swa + 1):
            return common
        for checkpoint in reversed(slot.checkpoints):
            keep = min(common, checkpoint.n_tokens)
            # A checkpoint holds the window of its last token at most (older entries on disk
            # may claim more: their pos_min was the layers', not the state's).
            first = max(checkpoint.pos_min, checkpoint.n_tokens - n_swa)
            if first <= max(0, keep - n_swa + 1) and checkpoint.restore(self._ctx, slot.id):
                self.checkpoint_restores += 1
                return keep
        self.window_misses += 1
        return 0

    def reach(self, slot: Slot) -> int:
        """The fewest tokens ``slot`` can be cut back to and keep its sliding window
        without a checkpoint (0 on a model without one): the window of position ``keep``
        starts at ``keep - n_swa + 1``, and the layers hold positions from ``pos_min``."""
        if not self.n_swa:
            return 0
        pos_min = int(self._lib.llama_memory_seq_pos_min(self._mem, slot.id))
        return 0 if pos_min <= 0 else pos_min + self.n_swa - 1

    def checkpoint(self, slot: Slot) -> None:
        """``slot`` has just read a prompt: keep its sliding-window state at this point."""
        n = len(slot.tokens)
        if n < MIN_CHECKPOINT_TOKENS or any(c.n_tokens == n for c in slot.checkpoints):
            return
        checkpoint = Checkpoint.take(self._ctx, slot.id, n, self.n_swa)
        if checkpoint is not None:
            slot.checkpoints = [*slot.checkpoints, checkpoint][-CHECKPOINTS:]


def _views(checkpoints) -> list:
    return [(c.n_tokens, c.pos_min, memoryview(c.data)[: c.size]) for c in checkpoints]
