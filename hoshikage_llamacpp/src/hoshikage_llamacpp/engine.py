"""The batched engine: one thread per loaded model owns its llama.cpp context and decodes
every running sequence together, one ``llama_decode`` per step.

Slots. The context is created with ``n_seq_max = parallel`` and a KV cache that is *not*
unified: each slot (KV sequence ``0 .. parallel-1``) has a stream of its own, ``n_ctx``
cells long. A sequence can therefore always grow to ``n_ctx`` whatever the others hold, and
attention in one slot never scans another's cells. Each slot remembers the tokens it holds;
a new prompt goes to the idle slot sharing the longest prefix with it (the least recently
used one when none does, see :func:`_best_slot`), and only the rest of the prompt is
decoded.

A step:

1. start waiting jobs on free slots, in arrival order;
2. build one batch: the next token of every generating sequence, then prompt tokens of
   sequences still reading their prompt, up to ``n_batch`` in all (chunked prefill, so a
   long prompt never stalls the streams already running);
3. ``llama_decode`` once;
4. sample each sequence at its own logits row, with its own sampler chain;
5. hand the step's chunks to the sinks together (the event loop wakes once per step).

Speculation (:mod:`.speculative`). A generating sequence may add draft tokens after its next
token, each with logits, in the same batch. After the decode, its rows are sampled in turn
with its own chain while the samples match the drafts: the matching drafts and the first
sample that differs are its tokens this step, and the rest of the draft is dropped from its
KV stream (``llama_memory_seq_rm``). Every token goes through the same per-token handling
(budget, end of generation, stop strings, log-probs) as an undrafted one, and the chain
samples only tokens that are kept, so its state (penalties, grammar, the seeded draw) is the
one it would have without the draft.

``n > 1``: the prompt is decoded once, in choice 0's slot. When it is read, its KV is copied
to free slots (``llama_memory_seq_cp``) for the other choices, which sample their first
token from the same logits and decode together from then on. Choices beyond ``parallel``
start as slots free up, from the prompt prefix left in the freed slot.

Per token there is no work that grows with the context: positions are tracked here, and the
KV cache is trimmed only when a slot is given a new prompt.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque

from hoshikage_core.errors import Cancelled, HoshikageError

from .planning import Plan
from .prompt_cache import Checkpoint, PromptCache
from .scoring import Scoring
from .sequence import Sequence
from .speculative import DraftLength, NgramDrafter, StepCost

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


class Slot:
    """One KV sequence of the context and the tokens it holds, position by position."""

    __slots__ = ("id", "tokens", "last_used", "seq", "checkpoints", "key")

    def __init__(self, id: int):
        self.id = id
        self.tokens: list[int] = []
        self.last_used = 0.0
        #: The ``cache_key`` of the request it served last (a conversation's key), if any.
        self.key: str | None = None
        self.seq: Sequence | None = None
        #: Sliding-window checkpoints of what it holds, oldest first (SWA models only).
        self.checkpoints: list[Checkpoint] = []


class Job:
    """One ``generate`` call: a planned prompt and its ``n`` choices."""

    __slots__ = (
        "plan",
        "n",
        "sink",
        "cancel",
        "samplers",
        "started",
        "finished",
        "cached_tokens",
        "first",
    )

    def __init__(self, plan: Plan, n: int, sink, cancel, samplers: list):
        self.plan = plan
        self.n = n
        self.sink = sink
        self.cancel = cancel
        self.samplers = samplers
        #: Choices started and finished so far.
        self.started = 0
        self.finished = 0
        #: Prompt tokens choice 0 found in its slot's cache.
        self.cached_tokens = 0
        #: Choice 0 while it reads the prompt its siblings will copy.
        self.first: Sequence | None = None


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
        return self.capacity - self.n


class Engine:
    """Owns ``ctx``; every call but :meth:`submit`, :meth:`stats` and :meth:`close` runs
    on its own thread."""

    def __init__(
        self,
        *,
        name: str,
        ctx,
        vocab,
        n_vocab: int,
        parallel: int,
        n_batch: int,
        piece,
        cache_bytes: int = 0,
        n_swa: int = 0,
        disk=None,
        draft_max: int = 0,
        ngram: bool = True,
        draft_model=None,
    ):
        import llama_cpp

        from . import native

        self._lib = llama_cpp
        self._native = native.lib
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._vocab = vocab
        self.n_vocab = n_vocab
        self._piece = piece
        self.slots = [Slot(i) for i in range(parallel)]
        self._batch = Batch(llama_cpp, max(n_batch, parallel))
        self._incoming: deque[Job] = deque()
        self._waiting: deque[Job] = deque()
        self._running: list[Sequence] = []
        self._wake = threading.Event()
        self._stopping = False
        #: Counters for status: prompt tokens planned, and of those found in a slot's cache.
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.steps = 0
        #: Most draft tokens per sequence and step (0: no speculation), who drafts (n-gram
        #: lookup, a :class:`~.speculative.DraftModel`, or both: the lookup first), and the
        #: drafts so far: tokens drafted, and of those the ones the model confirmed.
        self.draft_max = draft_max
        #: What a generation step costs by its size, measured here (speculation's draft
        #: lengths are chosen with it).
        self.step_cost = StepCost()
        self._ngram = ngram
        self.draft_model = draft_model
        self.draft_tokens = 0
        self.draft_accepted = 0
        #: Slot states kept in host RAM when their slot is given to another conversation.
        self.cache = PromptCache(ctx, cache_bytes) if cache_bytes > 0 else None
        #: Slot states an earlier load left on disk (a :class:`.disk_cache.DiskCache`).
        self.disk = disk
        #: The sliding window of a model whose SWA layers hold only the window (0: none, or
        #: kept at full size): a reused prefix must still have its window, see _window.
        self.n_swa = n_swa
        #: Prompts whose cached prefix could not be used because the window was gone, and
        #: those that kept theirs through a checkpoint.
        self.window_misses = 0
        self.checkpoint_restores = 0
        #: Score jobs (:mod:`.scoring`), batched beside the generations.
        self.scoring = Scoring(self)
        self._thread = threading.Thread(
            target=self._loop, name=f"hoshikage-engine:{name}", daemon=True
        )
        self._thread.start()

    # ---- other threads ----------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if self._stopping:
            raise Cancelled("The model is being unloaded.")
        self._incoming.append(job)
        self._wake.set()

    def submit_score(self, job) -> None:
        """Queue a :class:`.scoring.ScoreJob`."""
        if self._stopping:
            raise Cancelled("The model is being unloaded.")
        self.scoring.incoming.append(job)
        self._wake.set()

    @property
    def running(self) -> int:
        return len(self._running) + self.scoring.running

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread; whatever still runs (or was submitted as it stopped) ends as
        cancelled."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive() and (self._incoming or self.scoring.pending):
            out = _Outbox()
            self._fail_all(out, Cancelled("The model was unloaded."))
            out.deliver()

    # ---- the engine thread --------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            if not (self._running or self._waiting or self._incoming or self.scoring.pending):
                self._wake.wait()
                self._wake.clear()
                continue
            out = _Outbox()
            try:
                self._step(out)
            except BaseException as exc:  # contain it: fail what ran, keep serving
                log.exception("engine step failed")
                self._fail_all(out, exc)
            try:
                out.deliver()
            except Exception:  # a broken sink must not stop the engine for everyone
                log.exception("delivering a step's output failed")
        out = _Outbox()
        self._fail_all(out, Cancelled("The model was unloaded."), clear=False)
        out.deliver()

    def _step(self, out: _Outbox) -> None:
        while self._incoming:
            self._waiting.append(self._incoming.popleft())
        self._drop_cancelled(out)
        self._start_waiting(out)
        self.scoring.start(out)
        if not (self._running or self.scoring.active):
            return
        batch = self._batch
        batch.clear()
        generating = sorted((s for s in self._running if s.next_token is not None), key=_slot_id)
        self._plan_drafts(generating)
        # Every generating sequence's next token (and its draft) first, in slot order:
        # llama.cpp reuses the previous step's compute graph only when the batch's sequences
        # come in the same order, and rebuilding it costs about a third of a step (Gemma 3
        # 270M, 4 streams).
        for seq in self._running:
            seq.logits_at = -1
        for seq in generating:
            slot = seq.slot
            seq.logits_at = batch.add(seq.next_token, len(slot.tokens), slot.id)
            slot.tokens.append(seq.next_token)
            seq.next_token = None
            for token in seq.drafts:
                batch.add(token, len(slot.tokens), slot.id)
                slot.tokens.append(token)
        # Only generation rows (each with logits): what the step costs by its size.
        generation_only = batch.n
        read = []  # slots that finish reading their prompt in this step
        for seq in self._running:  # then prompt chunks, in arrival order
            if seq.todo and batch.room:
                slot = seq.slot
                take = seq.todo[: batch.room]
                seq.todo = seq.todo[len(take) :]
                row = batch.add_prompt(take, len(slot.tokens), slot.id, logits_last=not seq.todo)
                slot.tokens.extend(take)
                if not seq.todo:
                    seq.logits_at = row
                    read.append(seq.slot)
        self.scoring.fill(batch)  # score jobs last, in the room that is left
        if not batch.n:
            self.scoring.read(out)
            return
        batch.struct.n_tokens = batch.n
        started = time.perf_counter()
        status = self._lib.llama_decode(self._ctx, batch.struct)
        if status == 1 and self._evict_idle():  # a full shared pool: idle slots make room
            status = self._lib.llama_decode(self._ctx, batch.struct)
        # An asynchronous backend (RPC, CUDA) may still be computing: wait here, without the
        # GIL, not inside the GIL-holding sampler call below (see .native). With RPC that
        # wait in the sampler deadlocked: the RPC dispatcher thread logs through the Python
        # log callback, which needs the GIL, when a host dies.
        self._lib.llama_synchronize(self._ctx)
        self.steps += 1
        if status != 0:
            self._decode_failed(out, status)
            return
        if batch.n == generation_only:
            self.step_cost.record(batch.n, len(generating), time.perf_counter() - started)
        if self.n_swa:
            for slot in read:
                self._checkpoint(slot)
        self.scoring.read(out)
        for seq in list(self._running):
            row = seq.logits_at
            if row >= 0:
                siblings = self._start_siblings(seq) if seq is seq.job.first else ()
                self._verify(seq, row, out)
                for sibling in siblings:
                    self._verify(sibling, row, out)

    def _plan_drafts(self, generating: list[Sequence]) -> None:
        """Each generating sequence's draft for this step, within the batch's room (every
        next token comes first), its token budget and its draft length. The n-gram lookup
        comes first, as long as it can be: how long a copy it continues is part of what
        decides how much of it to keep (:class:`~.speculative.DraftLength`)."""
        room = self._batch.capacity - len(generating)
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
                if draft:
                    k = length.next(others, len(draft), drafter.matched, planned, planned_yield)
                    seq.drafts = draft[:k]
                    room -= k
                    planned += k
                    planned_yield += length.expected if k else 0.0
                    continue
            if self.draft_model is not None:
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

    def _verify(self, seq: Sequence, row: int, out: _Outbox) -> None:
        """Sample ``seq`` at ``row`` and, while the samples match its draft, at the draft's
        rows after it; keep the matching drafts in its KV stream and drop the rest."""
        drafts = seq.drafts
        seq.draft_tokens += len(drafts)  # counted before its last chunk may go out
        accepted = 0
        # A greedy chain's draws at every row at once (None: the chain draws row by row).
        best = seq.sampler.best(self._ctx, row, len(drafts) + 1) if not seq.forced else None
        for i in range(len(drafts) + 1):
            token = self._sample(seq, row + i, out, best[i] if best is not None else None)
            if token is None:
                break  # it finished
            if seq.drafter is not None:
                seq.drafter.push(token)
            if i < len(drafts) and token == drafts[i]:
                accepted += 1  # already decoded, where the draft put it
                seq.draft_accepted += 1
                continue
            seq.next_token = token
            break
        if not drafts:
            return
        seq.drafts = ()
        seq.draft_length.update(len(drafts), accepted)
        self.draft_tokens += len(drafts)
        self.draft_accepted += accepted
        slot = seq.slot
        keep = len(slot.tokens) - len(drafts) + accepted
        if keep < len(slot.tokens):
            if not self._lib.llama_memory_seq_rm(self._mem, slot.id, keep, -1):
                raise HoshikageError("llama.cpp could not drop a rejected draft from the KV cache")
            del slot.tokens[keep:]

    def _sample(
        self, seq: Sequence, row: int, out: _Outbox, drawn: int | None = None
    ) -> int | None:
        """Draw ``seq``'s next token at ``row`` (``drawn``: its chain's draw there, made
        already): the token when the sequence goes on, None when it has finished (its last
        chunk is out)."""
        if seq.n_gen >= seq.job.plan.budget:
            self._finish(seq, "length", out)
            return None
        # The think block closed at its budget: its end marker goes in instead of a draw.
        if seq.forced:
            token = seq.forced.popleft()
        else:
            token = seq.sampler.sample(self._ctx, row, drawn)
        if self._native.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop", out)
            return None
        chunk, stopped = seq.accept(token, row)
        if chunk is not None:
            out.put(seq.job.sink, seq.index, chunk)
        if stopped:
            self._finish(seq, "stop", out)
        elif seq.n_gen >= seq.job.plan.budget:
            self._finish(seq, "length", out)
        else:
            return token
        return None

    # ---- slots --------------------------------------------------------------------------

    def _free_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.seq is None]

    def _start_waiting(self, out: _Outbox) -> None:
        while self._waiting:
            job = self._waiting[0]
            if job.first is not None and job.started < job.n and job.first.todo:
                return  # its siblings start when choice 0 has read the prompt
            free = self._free_slots()
            if not free:
                return
            slot = _best_slot(free, job.plan.tokens, job.plan.request.cache_key)
            if self.cache is not None or self.disk:
                self._swap_in(slot, job.plan.tokens)
            self._start(job, job.started, slot)
            if job.started == job.n:
                self._waiting.popleft()

    def _swap_in(self, slot: Slot, tokens: list[int]) -> None:
        """Before ``slot`` takes ``tokens``: keep what it holds in the RAM cache if most of
        it is about to be thrown away, and bring back a saved state that shares a longer
        prefix with ``tokens`` than the slot does."""
        cache = self.cache
        held = _common_prefix(slot.tokens, tokens)
        entry, saved = cache.best(tokens, _common_prefix) if cache is not None else (None, 0)
        if self.disk:
            on_disk, stored = self.disk.best(tokens, _common_prefix)
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
        if entry is not None and saved > held + MIN_RESTORE_GAIN and entry in cache._entries:
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
        """What the disk cache keeps of this engine when its model unloads: the slots'
        states, most recently used first, then the RAM cache's. Call after :meth:`close`
        and before the context is freed."""
        from .disk_cache import Saved

        states = []
        for slot in sorted(self.slots, key=lambda s: s.last_used, reverse=True):
            if len(slot.tokens) < MIN_SAVED_TOKENS:
                continue
            size = int(self._lib.llama_state_seq_get_size(self._ctx, slot.id))
            if size <= 0:
                continue
            buf = (ctypes.c_uint8 * size)()
            written = int(self._lib.llama_state_seq_get_data(self._ctx, buf, size, slot.id))
            if written <= 0:
                continue
            data = memoryview(buf)[:written]
            states.append(Saved(list(slot.tokens), data, _views(slot.checkpoints)))
        for entry in self.cache.entries() if self.cache is not None else ():
            data = memoryview(entry.data)[: entry.size]
            states.append(Saved(list(entry.tokens), data, _views(entry.checkpoints)))
        return states

    def _start(self, job: Job, index: int, slot: Slot) -> Sequence:
        """Choice ``index`` of ``job`` in ``slot``, reusing the prompt prefix it holds. The
        last prompt token is always decoded again, for fresh logits."""
        tokens = job.plan.tokens
        common = min(_common_prefix(slot.tokens, tokens), len(tokens) - 1)
        if self.n_swa and common:
            common = self._window(slot, common)
        if common < len(slot.tokens):
            if not self._lib.llama_memory_seq_rm(self._mem, slot.id, common, -1):
                self._lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
                common = 0
            del slot.tokens[common:]
            slot.checkpoints = [c for c in slot.checkpoints if c.n_tokens <= common]
        return self._run(job, index, slot, tokens[common:], common)

    def _evict_idle(self) -> bool:
        """With one KV pool for every slot (``kv_unified``) a long sequence can fill it:
        the idle slots' cells go (to the RAM cache first). Whether any went."""
        evicted = False
        for slot in self.slots:
            if slot.seq is None and slot.tokens:
                if self.cache is not None:
                    self.cache.save(slot.id, slot.tokens, slot.checkpoints)
                self._lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
                slot.tokens, slot.checkpoints = [], []
                evicted = True
        return evicted

    def _window(self, slot: Slot, common: int) -> int:
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

    def _checkpoint(self, slot: Slot) -> None:
        """``slot`` has just read a prompt: keep its sliding-window state at this point."""
        n = len(slot.tokens)
        if n < MIN_CHECKPOINT_TOKENS or any(c.n_tokens == n for c in slot.checkpoints):
            return
        checkpoint = Checkpoint.take(self._ctx, slot.id, n, self.n_swa)
        if checkpoint is not None:
            slot.checkpoints = [*slot.checkpoints, checkpoint][-CHECKPOINTS:]

    def _run(self, job: Job, index: int, slot: Slot, todo: list[int], cached: int) -> Sequence:
        """Choice ``index`` runs in ``slot``, which holds ``cached`` prompt tokens already;
        ``todo`` are the ones still to decode."""
        seq = self._sequence(job, index)
        seq.slot = slot
        seq.todo = todo
        slot.seq = seq
        slot.last_used = time.monotonic()
        slot.key = job.plan.request.cache_key
        if index == 0:
            job.cached_tokens = cached
            job.first = seq if job.n > 1 else None
            self.prompt_tokens += len(job.plan.tokens)
            self.cached_tokens += cached
        job.started += 1
        self._running.append(seq)
        return seq

    def _start_siblings(self, first: Sequence) -> list[Sequence]:
        """Choice 0 has just read the prompt: copy its KV into free slots for the other
        choices, which draw their first token from the same logits row."""
        job = first.job
        job.first = None
        siblings = []
        for slot in self._free_slots():
            if job.started == job.n:
                break
            if self.cache is not None:
                self.cache.save(slot.id, slot.tokens, slot.checkpoints)
            # Across KV streams llama.cpp copies the whole stream (applied at the next decode).
            self._lib.llama_memory_seq_cp(self._mem, first.slot.id, slot.id, -1, -1)
            slot.tokens = list(first.slot.tokens)
            slot.checkpoints = list(first.slot.checkpoints)
            siblings.append(self._run(job, job.started, slot, [], len(slot.tokens)))
        if job.started == job.n and job in self._waiting:
            self._waiting.remove(job)
        return siblings

    def _sequence(self, job: Job, index: int) -> Sequence:
        from .sampling import LogprobReader

        request = job.plan.request
        logprobs = None
        if request.logprobs:
            logprobs = LogprobReader(self._ctx, self.n_vocab, self._piece, request.top_logprobs)
        seq = Sequence(job, index, job.samplers[index], job.plan, self._piece, logprobs)
        if self.draft_max > 0 and request.speculative:
            seq.draft_length = DraftLength(
                self.draft_max, greedy=seq.sampler.greedy, cost=self.step_cost
            )
            if self._ngram:
                seq.drafter = NgramDrafter()
                seq.drafter.begin(job.plan.tokens)
        return seq

    # ---- endings ------------------------------------------------------------------------

    def _finish(self, seq: Sequence, reason: str, out: _Outbox) -> None:
        job = seq.job
        out.put(job.sink, seq.index, seq.final(reason))
        self._release(seq)
        job.finished += 1
        if job.finished == job.n:
            out.close(job.sink)

    def _release(self, seq: Sequence) -> None:
        if seq in self._running:
            self._running.remove(seq)
        slot = seq.slot
        if slot is not None:  # its cache keeps what was decoded, for the next prompt to reuse
            slot.seq = None
            slot.last_used = time.monotonic()
        seq.sampler.close()

    def _drop_cancelled(self, out: _Outbox) -> None:
        for seq in [s for s in self._running if s.job.cancel.cancelled]:
            self._finish(seq, "cancelled", out)
        for job in [j for j in self._waiting if j.cancel.cancelled]:
            self._waiting.remove(job)
            self._abandon(job, out)

    def _abandon(self, job: Job, out: _Outbox) -> None:
        """Choices never started end as cancelled, with nothing generated."""
        while job.started < job.n:
            index = job.started
            job.started += 1
            job.samplers[index].close()
            job.finished += 1
            seq_chunk = _cancelled_chunk(job)
            out.put(job.sink, index, seq_chunk)
        if job.finished == job.n:
            out.close(job.sink)

    def _decode_failed(self, out: _Outbox, status: int) -> None:
        """``llama_decode`` refused the batch: the sequences in it end with an error and
        their slots are emptied (what the failed call wrote is unknown)."""
        reason = {1: "no room left in the KV cache", 2: "aborted"}.get(status, f"error {status}")
        error = HoshikageError(f"llama.cpp could not decode the batch ({reason}).")
        self._fail_all(out, error)

    def _fail_all(self, out: _Outbox, error: BaseException, clear: bool = True) -> None:
        """End every job with ``error``; ``clear``: empty the slots and the KV cache too (not
        at unload, whose slot states go to the disk cache)."""
        jobs = {id(s.job): s.job for s in self._running}
        for job in list(self._waiting) + list(self._incoming):
            jobs[id(job)] = job
        self._waiting.clear()
        self._incoming.clear()
        for seq in list(self._running):
            self._release(seq)
        self.scoring.fail_all(out, error)
        for job in jobs.values():
            for index in range(job.started, job.n):
                job.samplers[index].close()
            job.started = job.n
            out.close(job.sink, error)
        if not clear:
            return
        for slot in self.slots:
            slot.tokens = []
            slot.checkpoints = []
            slot.seq = None
        try:
            self._lib.llama_memory_clear(self._mem, True)
        except Exception:
            log.exception("clearing the KV cache failed")


class _Outbox:
    """A step's output, handed to the sinks together once the step is done."""

    __slots__ = ("items", "closes")

    def __init__(self) -> None:
        self.items: list = []
        self.closes: list = []

    def put(self, sink, index: int, chunk) -> None:
        self.items.append((sink, index, chunk))

    def close(self, sink, error: BaseException | None = None) -> None:
        self.closes.append((sink, error))

    def deliver(self) -> None:
        """Everything into the sinks first, then one flush per sink: sinks sharing a
        waker wake their reader once for the whole step."""
        sinks = {}
        for sink, index, chunk in self.items:
            sink.put(index, chunk)
            sinks[id(sink)] = sink
        for sink, error in self.closes:
            sink.close(error)
            sinks[id(sink)] = sink
        for sink in sinks.values():
            sink.flush()


def _views(checkpoints) -> list:
    return [(c.n_tokens, c.pos_min, memoryview(c.data)[: c.size]) for c in checkpoints]


def _slot_id(seq: Sequence) -> int:
    return seq.slot.id


def _cancelled_chunk(job: Job):
    from hoshikage_core.protocol import Chunk

    return Chunk(
        finish_reason="cancelled",
        prompt_tokens=len(job.plan.tokens),
        completion_tokens=0,
        cached_tokens=0,
    )


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # Compare in blocks first: prompts share long prefixes and differ near the end.
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


#: A prompt sharing at least this share of itself with a slot's cache may take that slot
#: even if it discards the rest of it: a long shared system prompt is worth it, a shared
#: chat-template header is not. (llama-server's ``--slot-prompt-similarity`` is 0.1, which
#: lets a new conversation with a short system prompt take over another's slot.)
SLOT_SIMILARITY = 0.5


def _best_slot(free: list[Slot], tokens: list[int], key: str | None = None) -> Slot:
    """Where a new prompt goes, first match wins:

    1. the slot whose cache it continues (the shared prefix is at least half of what the
       slot holds), the longest such prefix first: a conversation finds its own slot;
    2. the slot that served the same ``key`` last (the request's ``cache_key``, a client's
       conversation id), the most recently used first: the conversation's prompt changed
       (an agent compacted or edited its history), and it takes its own slot back rather
       than another conversation's;
    3. an empty slot, so no other conversation's cache is thrown away;
    4. the slot sharing the longest prefix, if that is at least ``SLOT_SIMILARITY`` of the
       prompt (a shared system prompt);
    5. the least recently used slot.
    """
    scored = [(_common_prefix(slot.tokens, tokens), slot) for slot in free]
    continued = [(n, slot) for n, slot in scored if n and n * 2 >= len(slot.tokens)]
    if continued:
        return max(continued, key=lambda item: item[0])[1]
    own = [slot for slot in free if key is not None and slot.key == key and slot.tokens]
    if own:
        return max(own, key=lambda s: s.last_used)
    empty = [slot for slot in free if not slot.tokens]
    if empty:
        return empty[0]
    n, slot = max(scored, key=lambda item: item[0])
    if n and n >= SLOT_SIMILARITY * len(tokens):
        return slot
    return min(free, key=lambda s: s.last_used)
