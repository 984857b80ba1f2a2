"""The batched engine: one thread per loaded model owns its llama.cpp context and decodes
every generating sequence together, one ``llama_decode`` per step.

Slots. The context is created with ``n_seq_max = parallel`` and a KV cache that is *not*
unified: each slot (KV sequence ``0 .. parallel-1``) has a stream of its own, ``n_ctx``
cells long. A sequence can therefore always grow to ``n_ctx`` whatever the others hold, and
attention in one slot never scans another's cells. Each slot remembers the tokens it holds;
a new prompt goes to the idle slot sharing the longest prefix with it (when none does, one
beside the slots in use, the least recently used first, see :meth:`.slots.SlotPool.place`),
and only the rest of the prompt is decoded.

A step:

1. start waiting jobs on free slots, in arrival order;
2. build one batch: the next token of every generating sequence (and score jobs' tokens);
3. ``llama_decode`` once, and sample each sequence at its own logits row, with its own
   sampler chain;
4. read prompts: chunks of the sequences still reading theirs, up to ``n_batch`` tokens
   in all, in a second ``llama_decode`` (chunked prefill, so a long prompt never stalls
   the streams already running; apart from the generations' batch so that a prompt's
   cache does not depend on what generates beside it, see :meth:`Engine._read_prompts`);
   a sequence that has read all of its prompt samples its first token;
5. hand the step's chunks to the sinks together (the event loop wakes once per step).

With flash attention on the CPU, a token llama.cpp would compute as the only row of a
ubatch gets a second row (:meth:`Engine._pad`), so that its logits do not depend on the
step's other sequences either.

Speculation (:mod:`.spec`). A generating sequence may add draft tokens after its next
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

import logging
import threading
import time
from collections import deque

from hoshikage_core.errors import Cancelled, HoshikageError

from ..llama.multimodal import decode_span, text_run
from .batch import Batch, lone_rows
from .decoding import Choice
from .prefix import common_prefix
from .protocols import Planned, Speculator
from .scoring import Scoring
from .slots import Slot, SlotPool

log = logging.getLogger("hoshikage.llamacpp.engine")

#: A stream holding more cells than this may be read up to 512 cells (llama.cpp pads what
#: it reads of a stream to a multiple of 256), from which a lone token's cache is split:
#: its lone tokens get a second row (:meth:`Engine._pad`). 64 cells below 257, for safety.
PAD_FROM = 192


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

    def __init__(self, plan: Planned, n: int, sink, cancel, samplers: list):
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
        self.first: Choice | None = None


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
        speculation: Speculator | None = None,
        projector=None,
        n_embd: int = 0,
        pads_lone_rows: bool = False,
    ):
        import llama_cpp

        from ..llama import native

        self._lib = llama_cpp
        self._native = native.lib
        self._ctx = ctx
        self._vocab = vocab
        self.n_vocab = n_vocab
        self._piece = piece
        #: The slots, with the RAM cache (slot states kept when their slot is given to
        #: another conversation), the disk cache (states an earlier load left) and the
        #: sliding window (0: none, or kept at full size).
        self.pool = SlotPool(ctx, parallel, cache_bytes, n_swa, disk)
        self.slots = self.pool.slots
        self._batch = Batch(llama_cpp, max(n_batch, parallel))
        #: Whether a token llama.cpp would compute alone gets a second row (:meth:`_pad`;
        #: ``lifecycle.loader.pads_lone_rows``), and the ubatch size that decides it.
        self._pads_lone_rows = pads_lone_rows
        self._n_ubatch = int(llama_cpp.llama_n_ubatch(ctx))
        if pads_lone_rows:
            self._batch.reserve = 1
        self._incoming: deque[Job] = deque()
        self._waiting: deque[Job] = deque()
        self._running: list[Choice] = []
        self._wake = threading.Event()
        self._stopping = False
        self.steps = 0
        #: Who drafts for the choices that ask for speculation (None: nobody), and the drafts
        #: so far: tokens drafted, and of those the ones the model confirmed.
        self.speculation = speculation
        self.draft_tokens = 0
        self.draft_accepted = 0
        #: Choices that drafted and ended this step, for the speculator to hear of after it.
        self._ended: list[Choice] = []
        #: Score jobs (:mod:`.scoring`), batched beside the generations; they borrow slots
        #: only while no generation waits for one.
        self.scoring = Scoring(self.pool, ctx, n_vocab, waiting=self._generation_waits)
        #: The multimodal projector (:mod:`..llama.multimodal`) that encodes a prompt's media,
        #: and the width of the embeddings it gives; media chunks read so far.
        self._projector = projector
        self._n_embd = n_embd
        self._n_batch = n_batch
        self.media_chunks = 0
        #: Decodes of media embeddings (a large image takes several, one per step).
        self.media_batches = 0
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

    # Counters for status, kept by the slot pool (its caches and window counters too).

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens planned, generations' and score jobs'."""
        return self.pool.prompt_tokens

    @property
    def cached_tokens(self) -> int:
        """Of :attr:`prompt_tokens`, those found in a slot's cache."""
        return self.pool.cached_tokens

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
            while self._ended:
                self.speculation.end(self._ended.pop())
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
        if self._projector is not None and not self._read_media(out):
            return
        batch = self._batch
        batch.clear()
        generating = sorted((s for s in self._running if s.next_token is not None), key=_slot_id)
        if self.speculation is not None:
            room = batch.capacity - batch.reserve - len(generating)
            self.speculation.plan(generating, room, bool(self._waiting))
        # Every generating sequence's next token (and its draft) first, in slot order:
        # llama.cpp reuses the previous step's compute graph only when the batch's sequences
        # come in the same order, and rebuilding it costs about a third of a step (Gemma 3
        # 270M, 4 streams).
        for seq in self._running:
            seq.logits_at = -1
        for seq in generating:
            slot = seq.slot
            shift = seq.shift
            seq.logits_at = batch.add(seq.next_token, len(slot.tokens) - shift, slot.id)
            slot.tokens.append(seq.next_token)
            seq.next_token = None
            for token in seq.drafts:
                batch.add(token, len(slot.tokens) - shift, slot.id)
                slot.tokens.append(token)
        # Only generation rows (each with logits): what the step costs by its size.
        generation_only = batch.n
        self.scoring.fill(batch)  # score jobs last, in the room that is left
        if batch.n:
            scored = batch.n > generation_only
            started = time.perf_counter()
            status = self._decode(batch)
            if status != 0:
                self._decode_failed(out, status)
                return
            if generation_only and not scored and self.speculation is not None:
                self.speculation.record(batch.n, len(generating), time.perf_counter() - started)
            self.scoring.read(out)
            for seq in generating:
                if seq.logits_at >= 0:
                    self._verify(seq, seq.logits_at, out)
        else:
            self.scoring.read(out)
        self._read_prompts(out)

    def _read_prompts(self, out: _Outbox) -> None:
        """Prompt chunks of the sequences still reading theirs, in arrival order, up to
        ``n_batch`` tokens in all, in a ``llama_decode`` of their own, not in the
        generations' batch: there llama.cpp peeled a token of a chunk off into the
        generations' ubatch (``split_equal`` takes as many tokens from each sequence), and
        the generations' rows moved where a chunk ended; both change how the prompt's rows
        round, so its cache, and every logit after it, depended on the load. A prompt read
        alone is read in chunks of ``n_batch`` (less a row kept for :meth:`_pad`) from where
        it started; prompts read together still share the chunk's room (several short
        prompts that arrive together cost one pass through the weights, not one each)."""
        batch = self._batch
        batch.clear()
        read = []  # (sequence, its logits row) of those that finish their prompt here
        for seq in list(self._running):
            if not (seq.todo and batch.room):
                continue
            slot = seq.slot
            take = seq.todo[: batch.room]
            if seq.job.plan.media:  # text up to the next media chunk (the next step's)
                take = text_run(take)
                if not take:
                    continue
            seq.todo = seq.todo[len(take) :]
            pos = len(slot.tokens)
            if seq.job.plan.media:
                pos = seq.job.plan.position(pos)
            row = batch.add_prompt(take, pos, slot.id, logits_last=not seq.todo)
            slot.tokens.extend(take)
            if not seq.todo:
                read.append((seq, row))
        if not batch.n:
            return
        status = self._decode(batch)
        if status != 0:
            self._decode_failed(out, status)
            return
        for seq, row in read:
            if self.pool.n_swa:
                self.pool.checkpoint(seq.slot)
            siblings = self._start_siblings(seq) if seq is seq.job.first else ()
            self._verify(seq, row, out)
            for sibling in siblings:
                self._verify(sibling, row, out)

    def _decode(self, batch: Batch) -> int:
        """``llama_decode`` of ``batch`` (evicting idle slots once if the KV cache is full),
        with a second row for a token llama.cpp would compute alone (:meth:`_pad`);
        llama.cpp's status (0: done)."""
        pads = self._pad(batch) if self._pads_lone_rows else ()
        batch.struct.n_tokens = batch.n
        status = self._lib.llama_decode(self._ctx, batch.struct)
        if status == 1 and self.pool.evict_idle():  # a full shared pool: idle slots make room
            status = self._lib.llama_decode(self._ctx, batch.struct)
        # An asynchronous backend (RPC, CUDA) may still be computing: wait here, without the
        # GIL, not inside the GIL-holding sampler call below (see .native). With RPC that
        # wait in the sampler deadlocked: the RPC dispatcher thread logs through the Python
        # log callback, which needs the GIL, when a host dies.
        self._lib.llama_synchronize(self._ctx)
        self.steps += 1
        for seq_id, pos in pads:
            self.pool.drop_pad(seq_id, pos)
        return status

    def _pad(self, batch: Batch) -> list[tuple[int, int]]:
        """Where llama.cpp would compute a token as the only row of a ubatch, a second row of
        its sequence after it (no logits, dropped from the cache after the decode): from 512
        cells on, llama.cpp's CPU flash-attention kernel splits a lone token's cache between
        the threads, which rounds otherwise than the row-by-row computation it makes for the
        same token beside other streams or beside a second row (up to 1.0 nats on Gemma 3).
        With a second row every token is computed row by row, alone or not. Only for a
        stream holding more than :data:`PAD_FROM` cells (its cache is read up to a multiple
        of 256 cells, 512 from 257 on); the ``(sequence, position)`` of each pad."""
        n = batch.n
        counts: dict[int, int] = {}
        last: dict[int, int] = {}
        for i, seq_id in enumerate(batch.seq[:n].tolist()):
            counts[seq_id] = counts.get(seq_id, 0) + 1
            last[seq_id] = i
        pads = []
        for seq_id in lone_rows(counts, self._n_ubatch):
            if len(self.slots[seq_id].tokens) <= PAD_FROM or batch.n >= batch.capacity:
                continue
            i = last[seq_id]
            pos = int(batch.pos[i]) + 1
            batch.add_prompt([int(batch.token[i])], pos, seq_id, logits_last=False)
            pads.append((seq_id, pos))
        return pads

    def _read_media(self, out: _Outbox) -> bool:
        """Each choice whose prompt goes on with an image or audio chunk: encode it (once
        per job) and decode its embeddings into the choice's slot, at most ``n_batch`` of
        them per choice and step (a whole chunk where llama.cpp needs it at once: M-RoPE
        and non-causal ones), so the others' tokens still go out every step while a large
        image is read. False when a decode failed (every job has ended then)."""
        for seq in list(self._running):
            if not seq.todo or seq.todo[0] >= 0 or seq.job.cancel.cancelled:
                continue
            slot, plan = seq.slot, seq.job.plan
            pos = len(slot.tokens)
            try:
                span = plan.span_at(pos)
                embeddings = self._projector.encode(span, self._n_embd)
            except (LookupError, HoshikageError) as exc:
                error = exc if isinstance(exc, HoshikageError) else HoshikageError(str(exc))
                self._fail_job(seq.job, error, out)
                continue
            if seq.job.cancel.cancelled:  # cancelled while it was encoded
                continue
            at = plan.position(pos)
            if not (self._projector.mrope or span.non_causal):
                embeddings = embeddings[pos - span.start : pos - span.start + self._n_batch]
            status = self._decode_media(span, embeddings, at, slot.id)
            if status == 1 and self.pool.evict_idle():
                status = self._decode_media(span, embeddings, at, slot.id)
            if status != 0:
                self._decode_failed(out, status)
                return False
            n = span.end - pos if self._projector.mrope else len(embeddings)
            slot.tokens.extend(seq.todo[:n])
            seq.todo = seq.todo[n:]
            if len(slot.tokens) == span.end:
                self.media_chunks += 1
        return True

    def _decode_media(self, span, embeddings, pos: int, seq: int) -> int:
        """A media span's embeddings into KV sequence ``seq`` from position ``pos``: with
        mtmd's helper for M-RoPE positions, else as one embedding batch per ``n_batch``."""
        self.media_batches += 1
        if self._projector.mrope:
            return self._projector.decode(self._ctx, span, pos, seq, self._n_batch)
        return decode_span(
            self._lib, self._ctx, embeddings, pos, seq, self._n_batch, span.non_causal
        )

    def _fail_job(self, job: Job, error: BaseException, out: _Outbox) -> None:
        """End ``job`` alone with ``error``; the slots it ran in forget what it wrote."""
        for seq in [s for s in self._running if s.job is job]:
            slot = seq.slot
            self._release(seq)
            self.pool.trim(slot, 0)
        if job in self._waiting:
            self._waiting.remove(job)
        for index in range(job.started, job.n):
            job.samplers[index].close()
        job.started = job.finished = job.n
        self._free_media(job)
        out.close(job.sink, error)

    def _free_media(self, job: Job) -> None:
        if job.plan.media and self._projector is not None:
            self._projector.free(job.plan.media)

    def _verify(self, seq: Choice, row: int, out: _Outbox) -> None:
        """Sample ``seq`` at ``row`` and, while the samples match its draft, at the draft's
        rows after it; keep the matching drafts in its KV stream and drop the rest."""
        drafts = seq.drafts
        seq.draft_tokens += len(drafts)  # counted before its last chunk may go out
        accepted = 0
        # A greedy chain's draws at every row at once (None: the chain draws row by row).
        forced = seq.output.forced
        best = seq.sampler.best(self._ctx, row, len(drafts) + 1) if not forced else None
        kept = []
        for i in range(len(drafts) + 1):
            token = self._sample(seq, row + i, out, best[i] if best is not None else None)
            if token is None:
                break  # it finished
            kept.append(token)
            if i < len(drafts) and token == drafts[i]:
                accepted += 1  # already decoded, where the draft put it
                seq.draft_accepted += 1
                continue
            seq.next_token = token
            break
        if seq.drafting is not None:  # what it kept, for its proposers to learn from
            self.speculation.accept(seq, kept, accepted)
        if not drafts:
            return
        seq.drafts = ()
        self.draft_tokens += len(drafts)
        self.draft_accepted += accepted
        slot = seq.slot
        self.pool.drop_draft(slot, len(slot.tokens) - len(drafts) + accepted, seq.shift)

    def _sample(self, seq: Choice, row: int, out: _Outbox, drawn: int | None = None) -> int | None:
        """Draw ``seq``'s next token at ``row`` (``drawn``: its chain's draw there, made
        already): the token when the sequence goes on, None when it has finished (its last
        chunk is out)."""
        if seq.n_gen >= seq.job.plan.budget:
            self._finish(seq, "length", out)
            return None
        # The think block closed at its budget: its end marker goes in instead of a draw.
        forced = seq.output.forced
        if forced:
            token = forced.popleft()
        else:
            token = seq.sampler.sample(self._ctx, row, drawn)
        if self._native.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop", out)
            return None
        seq.n_gen += 1
        chunk, stopped = seq.output.accept(token, row)
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

    def _generation_waits(self) -> bool:
        return bool(self._waiting)

    def _start_waiting(self, out: _Outbox) -> None:
        pool = self.pool
        while self._waiting:
            job = self._waiting[0]
            if job.first is not None and job.started < job.n and job.first.todo:
                return  # its siblings start when choice 0 has read the prompt
            free = pool.free()
            if not free:
                return
            slot = pool.place(free, job.plan.tokens, job.plan.request.cache_key)
            if pool.cache is not None or pool.disk:
                pool.swap_in(slot, job.plan.tokens)
            self._start(job, job.started, slot)
            if job.started == job.n:
                self._waiting.popleft()

    def saved_states(self) -> list:
        """What the disk cache keeps of this engine when its model unloads: the slots'
        states, most recently used first, then the RAM cache's. Call after :meth:`close`
        and before the context is freed."""
        return self.pool.saved_states()

    def _start(self, job: Job, index: int, slot: Slot) -> Choice:
        """Choice ``index`` of ``job`` in ``slot``, reusing the prompt prefix it holds. The
        last prompt token is always decoded again, for fresh logits."""
        pool = self.pool
        tokens = job.plan.tokens
        common = min(common_prefix(slot.tokens, tokens), len(tokens) - 1)
        if job.plan.media:
            common = job.plan.media_start(common)
        if pool.n_swa and common:
            common = pool.window(slot, common)
        at = job.plan.position(common) if job.plan.media else None
        common = pool.trim(slot, common, at)
        return self._run(job, index, slot, tokens[common:], common)

    def _run(self, job: Job, index: int, slot: Slot, todo: list[int], cached: int) -> Choice:
        """Choice ``index`` runs in ``slot``, which holds ``cached`` prompt tokens already;
        ``todo`` are the ones still to decode."""
        seq = self._sequence(job, index)
        seq.slot = slot
        seq.todo = todo
        self.pool.take(slot, seq, job.plan.request.cache_key)
        if index == 0:
            job.cached_tokens = cached
            job.first = seq if job.n > 1 else None
            self.pool.prompt_tokens += len(job.plan.tokens)
            self.pool.cached_tokens += cached
        job.started += 1
        self._running.append(seq)
        return seq

    def _start_siblings(self, first: Choice) -> list[Choice]:
        """Choice 0 has just read the prompt: copy its KV into free slots for the other
        choices, which draw their first token from the same logits row."""
        job = first.job
        job.first = None
        siblings = []
        for slot in self.pool.free():
            if job.started == job.n:
                break
            self.pool.fork(first.slot, slot)
            siblings.append(self._run(job, job.started, slot, [], len(slot.tokens)))
        if job.started == job.n and job in self._waiting:
            self._waiting.remove(job)
        return siblings

    def _sequence(self, job: Job, index: int) -> Choice:
        from .sampling import LogprobReader

        request = job.plan.request
        logprobs = None
        if request.logprobs:
            logprobs = LogprobReader(self._ctx, self.n_vocab, self._piece, request.top_logprobs)
        output = job.plan.output(job, self._piece, logprobs)
        seq = Choice(job, index, job.samplers[index], output)
        if self.speculation is not None and request.speculative:
            self.speculation.begin(seq, job.plan.tokens, seq.sampler.greedy)
        return seq

    # ---- endings ------------------------------------------------------------------------

    def _finish(self, seq: Choice, reason: str, out: _Outbox) -> None:
        job = seq.job
        out.put(job.sink, seq.index, seq.final(reason))
        self._release(seq)
        job.finished += 1
        if job.finished == job.n:
            self._free_media(job)
            out.close(job.sink)

    def _release(self, seq: Choice) -> None:
        if seq in self._running:
            self._running.remove(seq)
        if seq.drafting is not None:  # told once the step is over (its last kept tokens)
            self._ended.append(seq)
        if seq.slot is not None:  # its cache keeps what was decoded, for the next prompt
            self.pool.let_go(seq.slot)
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
            self._free_media(job)
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
            self._free_media(job)
            out.close(job.sink, error)
        if clear:
            self.pool.clear()


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


def _slot_id(seq: Choice) -> int:
    return seq.slot.id


def _cancelled_chunk(job: Job):
    from hoshikage_core.protocol import Chunk

    return Chunk(
        finish_reason="cancelled",
        prompt_tokens=len(job.plan.tokens),
        completion_tokens=0,
        cached_tokens=0,
    )
