"""What one choice's tokens mean, as they are generated: text, reasoning, tool calls and
their chunks (vLLM's output processor, llama.cpp's partial chat parse).

An :class:`Output` owns a choice's text stream (UTF-8 reassembly, stop strings held back
across tokens), the split of that text into reasoning and answer (:mod:`..dialects.reasoning`), the
tool-call capture on the answer with its calls streamed as they grow (:mod:`..dialects.tools.stream`),
and the log-probabilities waiting for their text to go out. The engine hands it each sampled
token and sends the chunks it returns; when the reasoning reaches its budget,
:attr:`Output.forced` holds the tokens that close the think block, which the engine decodes
instead of sampling. The engine knows it only through its
:class:`~..engine.protocols.Output` protocol; :meth:`.planning.Plan.output` makes one.
"""

from __future__ import annotations

from collections import deque

from hoshikage_core.protocol import Chunk

from ..dialects.reasoning import Splitter
from ..dialects.text_stream import TextStream, ToolCapture
from ..dialects.tools import calls as calls
from ..dialects.tools.stream import ToolStream


class Output:
    """A choice of ``job`` (the engine's job: its ``plan`` and ``cached_tokens``), planned
    by ``plan``. ``piece`` gives a token's bytes; ``logprobs`` (None: not asked for) reads a
    token's log-probabilities at a batch row."""

    __slots__ = (
        "job",
        "_stream",
        "_logprobs",
        "_pending",
        "_sent_chars",
        "_piece",
        "_announced",
        "_split",
        "_tools",
        "_calls",
        "n_reasoning",
        "forced",
        "_ids",
    )

    def __init__(self, job, plan, piece, logprobs):
        self.job = job
        self._piece = piece
        self._stream = TextStream(stops=plan.stops)
        fmt = plan.tool_format
        self._tools = ToolCapture(
            (*fmt.openers, "<tool_call>") if plan.tool_names else (),
            # A bare JSON call is what a forced call's grammar writes, in every family.
            leading_json=bool(plan.tool_names),
        )
        #: The captured calls' deltas (None without tools).
        self._calls = ToolStream(fmt, plan.tool_names) if plan.tool_names else None
        self._split = (
            Splitter(plan.reasoning, inside=plan.reasoning_open, show=plan.show_reasoning)
            if plan.reasoning is not None
            else None
        )
        #: Tokens generated inside the think block.
        self.n_reasoning = 0
        #: Tokens to decode next instead of sampling (the think block closed at its budget).
        self.forced: deque = deque()
        self._logprobs = logprobs
        self._pending: deque = deque()  # (start, end, TokenLogprob) waiting for their text
        self._sent_chars = 0
        #: Whether a chunk has gone out: the first one also carries the prompt's counts.
        self._announced = False
        #: The answer's token ids, kept when the request asks for them.
        self._ids: list[int] | None = [] if plan.request.return_token_ids else None

    def accept(self, token: int, index: int) -> tuple[Chunk | None, bool]:
        """Take a sampled (non end-of-generation) token, its logits at batch row ``index``:
        the chunk to send, if any, and whether a stop string has ended the choice."""
        entry = self._logprobs.read(token, index) if self._logprobs is not None else None
        if self._ids is not None:
            self._ids.append(token)
        stream = self._stream
        start = stream.decoded_chars
        raw = stream.feed(self._piece(token))
        if entry is not None:
            self._pending.append((start, stream.decoded_chars, entry))
        self._sent_chars += len(raw)
        split = self._split
        reasoning = ""
        if split is not None:
            was_inside = split.inside
            reasoning, raw = split.feed(raw)
            if was_inside and (split.inside or reasoning):
                self.n_reasoning += 1
                self._check_budget()
        tools = self._tools
        text = tools.feed(raw)
        deltas = self._calls.feed(tools.captured) if tools.captured and raw else None
        released = self._release(final=False) if self._pending else ()
        if not (text or reasoning or released or deltas):
            return None, stream.stopped
        if self._announced:
            chunk = Chunk(
                text=text,
                reasoning=reasoning,
                logprobs=released or None,
                tool_deltas=deltas or None,
            )
            return chunk, stream.stopped
        self._announced = True
        job = self.job
        chunk = Chunk(
            text=text,
            reasoning=reasoning,
            logprobs=released or None,
            tool_deltas=deltas or None,
            prompt_tokens=len(job.plan.tokens),
            cached_tokens=job.cached_tokens,
        )
        return chunk, stream.stopped

    def _check_budget(self) -> None:
        plan = self.job.plan
        budget = plan.reasoning_budget
        if budget is not None and self.n_reasoning >= budget and not self.forced:
            if self._split is not None and self._split.inside:
                self.forced.extend(plan.reasoning_end)

    def final(self, finish: str, n_gen: int, drafts: tuple[int, int] | None) -> Chunk:
        """The last chunk: what the stream still held, tool calls, counts (``n_gen`` tokens
        generated; ``drafts``: tokens drafted and accepted, None without speculation)."""
        stream = self._stream
        raw = stream.finish()
        self._sent_chars += len(raw)
        reasoning = ""
        if self._split is not None:
            reasoning, raw = self._split.feed(raw)
            more_reasoning, more = self._split.finish()
            reasoning += more_reasoning
            raw += more
        tools = self._tools
        text = tools.feed(raw, final=True)
        tool_calls = deltas = None
        if tools.captured:
            plan = self.job.plan
            parsed = calls.parse(plan.tool_format, tools.captured, plan.tool_names)
            deltas, tool_calls = self._calls.finish(tools.captured, parsed)
            if tool_calls is None:
                text += tools.captured
                self._sent_chars += len(tools.captured)
            elif finish == "stop" or parsed is not None and finish != "cancelled":
                finish = "tool_calls"  # a call cut short by the budget stays "length"
        released = self._release(final=True) if self._logprobs is not None else ()
        job = self.job
        # Only the request's own strings are named: a chat format's turn markers (also stop
        # strings here) mean the model ended its turn.
        found = stream.found_stop
        stop_sequence = found if found is not None and found in job.plan.request.stop else None
        return Chunk(
            text=text,
            reasoning=reasoning,
            reasoning_tokens=self.n_reasoning if self._split is not None else None,
            finish_reason=finish,
            logprobs=released or None,
            tool_calls=tuple(tool_calls) if tool_calls else None,
            tool_deltas=deltas or None,
            prompt_tokens=len(job.plan.tokens),
            completion_tokens=n_gen,
            cached_tokens=job.cached_tokens,
            stop_sequence=stop_sequence,
            draft_tokens=drafts[0] if drafts is not None else None,
            draft_accepted=drafts[1] if drafts is not None else None,
            token_ids=(*job.plan.tokens, *self._ids) if self._ids is not None else None,
        )

    def _release(self, final: bool) -> tuple:
        """Log-probs of the tokens whose text has gone out. At the end, tokens whose text was
        never sent (a stop string, a captured tool call) are dropped."""
        pending, sent = self._pending, self._sent_chars
        out = []
        while pending and pending[0][1] <= sent:
            out.append(pending.popleft()[2])
        if final:
            while pending:
                start, _end, entry = pending.popleft()
                if start < sent:
                    out.append(entry)
        return tuple(out)
