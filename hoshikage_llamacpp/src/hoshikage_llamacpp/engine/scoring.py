"""Scoring inside the batched engine: exact log-probabilities of short continuations after
many prompts that share a prefix (the core's :class:`~hoshikage_core.protocol.Scorer`).

A :class:`ScoreJob` is a tree of tokens:

* the prompts' longest shared token prefix (the Decisions API's input, a rerank's
  instructions and query) is read once, in the slot whose cache holds most of it, like
  any prompt (so a second request over the same input reads nothing again);
* each prompt's own rest (a question, a document) follows it;
* each continuation's tokens follow their prompt. A continuation's log-probability is the
  sum over all of its tokens, each read at the row of the token before it. The first tokens
  of every continuation of a prompt come from one row (the prompt's last), and
  continuations sharing leading tokens share those rows: only the *paths* through the trie
  of continuations, root to each deepest inner node, are decoded.

Every piece of work is a *unit*: a prompt plus one path. A unit runs in a *stream* (an
engine slot), which walks every path of the prompt it took, one per step, so the prompt's
own tokens are read once: the stream's tokens are trimmed back to what the unit shares with it
(``llama_memory_seq_rm``), then the rest goes into the engine's batch beside the other
sequences' tokens, with logits only at the rows the unit needs. Once the shared prefix is
read, free slots are borrowed as more streams (their KV copied from the first with
``llama_memory_seq_cp``), so several units decode in one ``llama_decode``; borrowed slots go
back as soon as a generation waits for one. Prefills are chunked into the batch's free room,
so running streams keep their one token per step.
"""

from __future__ import annotations

from collections import deque

from hoshikage_core.errors import Cancelled
from hoshikage_core.protocol import Scores

from .prefix import common_prefix
from .slots import SlotPool

#: How many waiting prompts a stream looks through for the one sharing most with its slot.
LOOKAHEAD = 64

#: What one more pass through the model costs, in tokens read in a pass: a step's streams
#: read tokens again to save passes (:meth:`Scoring._even`) only where the tokens cost less.
#: In bench/decisions_profile.py (Gemma 3 270M, llama.cpp on one CPU thread) each pass
#: saved was worth 17-28 ms of CPU, some 7-11 of the questions' tokens; a pass with a row
#: of logits reads the output matrix too.
PASS_TOKENS = 8


class Branch:
    """One prompt: its tokens, its continuations' tokens and the rows read so far."""

    __slots__ = ("tokens", "conts", "needed", "paths", "got")

    def __init__(self, tokens: list[int], conts: list[list[int]]):
        self.tokens = tokens
        self.conts = conts
        #: Trie node (a continuation's leading tokens) -> tokens to read after it.
        self.needed: dict[tuple[int, ...], set[int]] = {}
        for cont in conts:
            for j, token in enumerate(cont):
                self.needed.setdefault(tuple(cont[:j]), set()).add(token)
        inner = list(self.needed)
        #: Deepest inner nodes: each is decoded as one path, which reads every node on it.
        self.paths = [
            n for n in inner if not any(len(m) > len(n) and m[: len(n)] == n for m in inner)
        ]
        self.paths.sort()
        #: Node -> {token: log-probability}.
        self.got: dict[tuple[int, ...], dict[int, float]] = {}

    def totals(self) -> tuple[float, ...]:
        return tuple(
            sum(self.got[tuple(cont[:j])][token] for j, token in enumerate(cont))
            for cont in self.conts
        )


class ScoreJob:
    """One ``score`` call on the engine."""

    __slots__ = (
        "branches",
        "prefix",
        "sink",
        "cancel",
        "units",
        "streams",
        "primary",
        "prompt_tokens",
        "cached_tokens",
        "left",
        "decoded",
    )

    def __init__(self, branches: list[Branch], sink, cancel):
        self.branches = branches
        self.sink = sink
        self.cancel = cancel
        first = branches[0].tokens
        shared = len(first)
        for branch in branches[1:]:
            shared = min(shared, common_prefix(first, branch.tokens))
        # Every unit reads its prompt's last row, so the prefix stops one short of the
        # shortest prompt.
        shared = min(shared, min(len(b.tokens) for b in branches) - 1)
        self.prefix = first[:shared]
        #: Prompts not yet started; a stream walks all the paths of the prompt it takes, so
        #: the prompt's own tokens are read once.
        self.units = deque(branches)
        self.left = sum(len(b.paths) for b in branches)
        self.streams: list[Stream] = []
        self.primary: Stream | None = None
        self.prompt_tokens = shared + sum(len(b.tokens) - shared for b in branches)
        self.cached_tokens = 0
        #: Tokens it has put into batches so far (the prefix, each prompt's rest as its
        #: stream did not hold it already, the continuations' rows).
        self.decoded = 0


class Stream:
    """A slot working for a score job: the unit it decodes and where it is in it."""

    __slots__ = ("job", "slot", "unit", "paths", "target", "pos", "wanted", "rows")

    def __init__(self, job: ScoreJob, slot):
        self.job = job
        self.slot = slot
        self.unit = None
        #: Paths of the unit's prompt still to walk.
        self.paths: deque = deque()
        #: The tokens the slot should hold when the unit is done.
        self.target: list[int] = []
        #: The next position of ``target`` to decode.
        self.pos = 0
        #: Position -> trie node whose row is read there.
        self.wanted: dict[int, tuple[int, ...]] = {}
        #: This step's (batch row, branch, node).
        self.rows: list = []

    @property
    def busy(self) -> bool:
        return self.pos < len(self.target)


class Scoring:
    """The engine's score jobs, in the slots of ``pool``. Called by the engine on its own
    thread; ``waiting`` says whether a generation waits for a slot (borrowed slots are then
    given back)."""

    def __init__(self, pool: SlotPool, ctx, n_vocab: int, waiting):
        self._pool = pool
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._generation_waits = waiting
        self.incoming: deque[ScoreJob] = deque()
        self._waiting: deque[ScoreJob] = deque()
        self._jobs: list[ScoreJob] = []

    @property
    def pending(self) -> bool:
        return bool(self.incoming or self._waiting or self._jobs)

    @property
    def active(self) -> bool:
        return bool(self._jobs)

    @property
    def running(self) -> int:
        return sum(len(job.streams) for job in self._jobs)

    # ---- before the batch ----------------------------------------------------------------

    def start(self, out) -> None:
        """Take new jobs, drop cancelled ones, give each running job its slots."""
        while self.incoming:
            self._waiting.append(self.incoming.popleft())
        for job in [j for j in self._waiting if j.cancel.cancelled]:
            self._waiting.remove(job)
            out.close(job.sink, Cancelled("The request was cancelled."))
        for job in [j for j in self._jobs if j.cancel.cancelled]:
            self._end(job)
            out.close(job.sink, Cancelled("The request was cancelled."))
        while self._waiting:
            free = self._pool.free()
            if not free:
                break
            job = self._waiting.popleft()
            self._begin(job, free)
        for job in self._jobs:
            self._staff(job)

    def _begin(self, job: ScoreJob, free: list) -> None:
        pool = self._pool
        slot = pool.place(free, job.prefix)
        if pool.cache is not None:
            pool.swap_in(slot, job.prefix)
        stream = self._take(job, slot)
        job.primary = stream
        job.cached_tokens = min(common_prefix(slot.tokens, job.prefix), len(job.prefix))
        pool.prompt_tokens += job.prompt_tokens
        pool.cached_tokens += job.cached_tokens
        self._aim(stream, job.prefix, {})
        self._jobs.append(job)

    def _take(self, job: ScoreJob, slot) -> Stream:
        stream = Stream(job, slot)
        self._pool.take(slot, stream)  # its key: None, no conversation's any more
        job.streams.append(stream)
        return stream

    def _staff(self, job: ScoreJob) -> None:
        """Hand units to idle streams; borrow free slots once the prefix is read, give
        borrowed ones back when a generation waits or no unit is left for them."""
        pool = self._pool
        primary = job.primary
        if primary.unit is None and primary.busy:
            return  # still reading the shared prefix
        if (
            pool.n_swa
            and primary.unit is None
            and len(primary.slot.tokens) == len(job.prefix)
            and job.units
        ):
            # The prefix is read: keep its sliding window, which every prompt goes back to
            # (once: a checkpoint of a prompt's end costs ~4 ms, and pushes this one out).
            pool.checkpoint(primary.slot)
        if job.units and not self._generation_waits() and len(job.units) > len(job.streams):
            for slot in pool.free():
                if len(job.streams) > len(job.units):
                    break
                pool.fork(primary.slot, slot)
                self._take(job, slot)
        for stream in list(job.streams):
            if stream.busy:
                continue
            if (
                not stream.paths
                and job.units
                and (stream is primary or not self._generation_waits())
            ):
                branch = self._nearest(job, stream)
                stream.paths = deque((branch, path) for path in branch.paths)
            if stream.paths:
                branch, path = stream.paths.popleft()
                target = branch.tokens + list(path)
                base = len(branch.tokens) - 1
                wanted = {
                    base + k: path[:k] for k in range(len(path) + 1) if path[:k] not in branch.got
                }
                stream.unit = (branch, path)
                self._aim(stream, target, wanted)
            elif stream is not primary or self._generation_waits():
                self._let_go(job, stream)

    def _nearest(self, job: ScoreJob, stream: Stream):
        """Take the waiting prompt that shares the most with what ``stream``'s slot holds
        beyond the job's prefix (questions with the same answer space, documents after the
        same query), among the next :data:`LOOKAHEAD`; the first on a tie."""
        start = len(job.prefix)
        held = stream.slot.tokens[start:]
        best, best_len = 0, -1
        for k in range(min(len(job.units), LOOKAHEAD)):
            n = common_prefix(held, job.units[k].tokens[start:])
            if n > best_len:
                best, best_len = k, n
        branch = job.units[best]
        del job.units[best]
        return branch

    def _aim(self, stream: Stream, target: list[int], wanted: dict) -> None:
        """Point ``stream`` at ``target``: keep what its slot shares with it (up to the first
        row to read), drop the rest."""
        pool = self._pool
        slot = stream.slot
        keep = common_prefix(slot.tokens, target)
        if wanted:
            keep = min(keep, min(wanted))
        if pool.n_swa and keep < len(slot.tokens) and keep:
            # Sliding-window layers holding only the window: going back needs the window
            # of ``keep`` (a checkpoint of the shared prefix, restored), else read again.
            keep = pool.window(slot, keep)
        keep = pool.trim(slot, keep)
        stream.target = target
        stream.pos = keep
        stream.wanted = wanted

    def _let_go(self, job: ScoreJob, stream: Stream) -> None:
        job.streams.remove(stream)
        self._pool.let_go(stream.slot)

    # ---- the batch ------------------------------------------------------------------------

    def fill(self, batch) -> None:
        """Put each busy stream's next tokens into what room ``batch`` has left, in slot
        order, each stream reading as many as the others where it can (:meth:`_even`)."""
        for job in self._jobs:
            streams = sorted(job.streams, key=_slot_id)
            for stream in streams:
                stream.rows = []
            busy = [stream for stream in streams if stream.busy]
            if len(busy) > 1:
                self._even(job, busy, batch.room)
            for stream in busy:
                if not batch.room:
                    break
                slot = stream.slot
                take = stream.target[stream.pos : stream.pos + batch.room]
                first = (
                    batch.add_prompt(take, stream.pos, slot.id, logits_last=False) - len(take) + 1
                )
                unit = stream.unit
                for k in range(len(take)):
                    node = stream.wanted.pop(stream.pos + k, None)
                    if node is not None:
                        batch.logits[first + k] = 1
                        stream.rows.append((first + k, unit[0], node))
                slot.tokens.extend(take)
                stream.pos += len(take)
                job.decoded += len(take)

    def _even(self, job: ScoreJob, busy: list[Stream], room: int) -> None:
        """Start the streams with fewer tokens to read this step earlier, reading again
        tokens they hold, so that they read as many as the longest, where the passes this
        saves cost more than the tokens (:data:`PASS_TOKENS`).

        With one KV stream per sequence (``kv_unified = false``, the default) llama.cpp
        runs a batch as ubatches that take the same number of tokens from each of a run of
        consecutive sequences (``split_equal``): streams reading 11, 11, 12 and 13 tokens
        cost three passes through the model (44 tokens, then 2, then 1), each reading all
        the weights and, for a row with logits, the output matrix again. Read evenly, they
        cost one pass of 52 tokens. A token read again at its own position is the same
        token, so the scores stay (the batch layout changes their rounding: on Gemma the
        thin passes were the ones off the independent computation, by up to 0.55 nats). A
        stream goes back no further than the job's prefix (its sliding-window checkpoint
        stays) and than its sliding window reaches (:meth:`.SlotPool.reach`)."""
        need = [len(stream.target) - stream.pos for stream in busy]
        width = max(need)
        if width * len(busy) > room:
            return  # the batch cuts this step short anyway
        pool = self._pool
        extra = [
            max(0, min(width - n, stream.pos - max(len(job.prefix), pool.reach(stream.slot))))
            for stream, n in zip(busy, need, strict=True)
        ]
        saved = len(set(need)) - len({n + e for n, e in zip(need, extra, strict=True)})
        if saved <= 0 or sum(extra) > saved * PASS_TOKENS:
            return
        for stream, e in zip(busy, extra, strict=True):
            if e:
                stream.pos = pool.trim(stream.slot, stream.pos - e)

    def read(self, out) -> None:
        """After the decode: read every row asked for, and finish what is complete."""
        if not self._jobs:
            return  # every generation step without a score job: no import to resolve
        from ..llama.logits import log_total, row_logits

        ctx, n_vocab = self._ctx, self._n_vocab
        for job in list(self._jobs):
            for stream in job.streams:
                for row, branch, node in stream.rows:
                    logits = row_logits(ctx, row, n_vocab)
                    total = log_total(logits)
                    branch.got[node] = {t: float(logits[t]) - total for t in branch.needed[node]}
                stream.rows = []
                if stream.unit is not None and not stream.busy:
                    stream.unit = None
                    job.left -= 1
            if job.left == 0 and all(s.unit is None for s in job.streams):
                self._end(job)
                out.put(job.sink, 0, self._scores(job))
                out.close(job.sink)

    def _scores(self, job: ScoreJob) -> Scores:
        return Scores(
            logprobs=tuple(b.totals() for b in job.branches),
            token_counts=tuple(tuple(len(c) for c in b.conts) for b in job.branches),
            prompt_tokens=job.prompt_tokens,
            cached_tokens=job.cached_tokens,
            prefix_tokens=len(job.prefix),
        )

    # ---- endings --------------------------------------------------------------------------

    def _end(self, job: ScoreJob) -> None:
        for stream in list(job.streams):
            self._let_go(job, stream)
        if job in self._jobs:
            self._jobs.remove(job)

    def fail_all(self, out, error: BaseException) -> None:
        for job in list(self._jobs) + list(self._waiting) + list(self.incoming):
            self._end(job)
            out.close(job.sink, error)
        self._waiting.clear()
        self.incoming.clear()


def _slot_id(stream: Stream) -> int:
    return stream.slot.id
