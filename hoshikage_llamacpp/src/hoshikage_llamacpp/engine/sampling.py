"""Sampler chains, grammars and log-probabilities, on llama.cpp's native sampler API.

A request's ``None`` means the default below (llama.cpp server's defaults). The chain is,
in order: logit bias, repetition penalties, then greedy (temperature 0) or
top-k → top-p → min-p → temperature → a seeded draw. Everything runs in C: no Python
callback per token.

A grammar (``json_schema``, ``json_object``, a forced tool call) is applied as llama.cpp's
``common_sampler_sample`` applies it: the token is drawn by the ordinary chain, only that one
token is checked against the grammar, and only when the grammar rejects it is the whole
distribution filtered by the grammar and the draw made again. Filtering a 262k vocabulary
through a grammar costs far more than decoding a token; checking one token costs nothing.
The output is exactly as constrained either way. With repetition penalties, whose history
must not see a rejected draw, the grammar runs inside the chain on every token instead.

Greedy without penalties, the chain is llama.cpp's logit bias (if any) and greedy sampler,
whose draw is the first token of highest biased logit: exactly numpy's ``argmax`` over the
logits row where no bias applies. That draw is made here (:meth:`SamplerChain.best`), over
every row of a speculative step in one call, without llama.cpp building its candidate array
over the vocabulary at each position (Gemma 3's 262k tokens: about 20 µs a row instead of
400 µs). A logit bias touches a few tokens: the row's argmax, when it is not one of them,
is the best of the others, and the biased tokens are compared with it one by one (ties go to
the lower id, as in llama.cpp); when the argmax is itself biased (a banned end of text that
the model wanted), that row goes through the whole chain. A grammar checks the token as
before; a penalty, whose state follows the tokens, takes the next way instead.

Sampled with a top-k, or greedy with penalties, the chain's draw is made over the row's
best-scored tokens only. llama.cpp's draw builds a candidate array over the whole vocabulary
first (Gemma 3's 262k tokens: about 360 µs a token, 2 threads), and its top-k then keeps the
``k`` best. The row is read as :data:`TOP_K_PIECES` equal pieces laid side by side, and
the element-wise maximum over them (one pass over the row) holds a distinct token for each
position: the ``k``-th best of those maxima is a bound that at least ``k`` tokens reach,
and few others do (:func:`best_ids`). Every token below it is outside the top-k, so the
chain (bias, top-k, top-p, min-p, temperature, the seeded draw) applied to the tokens at or
above it, the tokens a positive bias raises added, sees exactly the top-k it would have
seen, in the same order, and its draw is the same, seed for seed (about 80 µs on a row in
the cache; a row fresh from a decode costs several times that, as any Python after a decode
does). A ban or a negative bias only lowers a token, so those are not added: the bound
leaves ``k`` tokens above it besides every biased one. Only tokens tied on one logit at the
top-k's edge could be taken in another order; their probabilities are the same. Penalties
change the logits of the tokens drawn last (llama.cpp's window of :data:`PENALTY_LAST_N`):
those are kept too, and the bound is made to leave ``k`` (1 when greedy) others above it.
With a grammar inside the chain (penalties and a grammar together), or ``top_k = 0``, the
whole chain draws.

The GIL. The per-token calls go through :mod:`.native`'s GIL-holding binding, which is right
for work of a few microseconds. A grammar's cost grows with the request (a 100,000-value
``enum`` is 100,000 grammar stacks, and filtering a whole vocabulary through it takes
seconds), so every call that filters a whole distribution through a grammar, and every
grammar call at all for a grammar over :data:`GIL_HELD_GRAMMAR_BYTES`, goes through
llama-cpp-python's own binding, which releases the GIL: the event loop keeps answering.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import secrets
from collections.abc import Mapping

from hoshikage_core.errors import InvalidRequest
from hoshikage_core.protocol import GenerationRequest, TokenLogprob, TopLogprob

#: The sampling defaults for parameters a request leaves out.
DEFAULTS: dict[str, float] = {
    "temperature": 0.8,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
#: How many recent tokens the repeat, presence and frequency penalties look at.
PENALTY_LAST_N = 64
#: A bias at or below this bans the token, as OpenAI documents for -100.
BAN_BIAS = -100.0
#: What a ban becomes when a grammar is active: far below any real logit, yet finite, so
#: a token the grammar requires (the closing brace, the end of generation) can still be
#: drawn when the bias bans it. A -inf there leaves no candidate at all, and llama.cpp then
#: aborts the process ("Unexpected empty grammar stack"). The grammar wins over the bias.
GRAMMAR_BAN = -1e9


#: Greedy chains without bias or penalties draw with numpy's argmax (the module docstring);
#: False: every draw goes through llama.cpp's chain (tests compare the two).
FAST_GREEDY = True

#: Sampled chains with a top-k, and greedy ones with penalties, draw over the row's
#: best-scored tokens only (the module docstring); False: every draw through llama.cpp's
#: chain (tests compare them).
FAST_TOP_K = True
#: The top-k's bound is found among the element-wise maxima of at most this many equal
#: pieces of the row (at least 4 maxima for each token the bound must keep); the fast path
#: is taken only where there are 2 pieces or more. A strided look at every 16th logit
#: instead cost Gemma 3's 262k-token row ~115 µs, with ~500 tokens above its bound; the
#: maxima of 128 pieces ~25 µs, with the bound's ``k`` or a few more.
TOP_K_PIECES = 128
#: Room for this many tokens in a chain's kept candidate array at first (it grows when a
#: draw needs more: a wide top-k, ties at the bound).
CANDIDATES = 256

#: A grammar up to this size is checked per token with the GIL held (microseconds); a larger
#: one releases it for every call (see the module docstring).
GIL_HELD_GRAMMAR_BYTES = 4096


def setting(request: GenerationRequest, name: str) -> float:
    value = getattr(request, name)
    return DEFAULTS[name] if value is None else value


def compile_grammar(
    lib, vocab, grammar: str, request: GenerationRequest, trigger: str | None = None
):
    """llama.cpp's grammar sampler for ``grammar`` (lazy, from ``trigger`` on, when given).
    A grammar that does not parse is :class:`InvalidRequest` naming the problem."""
    import re

    from ..llama import logging_bridge

    logging_bridge.install()
    with logging_bridge.capture() as lines:
        if trigger is None:
            sampler = lib.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        else:
            # llama.cpp's own pattern for a trigger word: the grammar starts at the match.
            patterns = (ctypes.c_char_p * 1)(
                ("[\\s\\S]*?(" + re.escape(trigger) + ")[\\s\\S]*").encode()
            )
            tokens = (lib.llama_token * 1)()
            sampler = lib.llama_sampler_init_grammar_lazy_patterns(
                vocab, grammar.encode(), b"root", patterns, 1, tokens, 0
            )
    if sampler:
        return sampler
    if request.grammar:
        from ..grammar.gbnf_check import explain

        reason = explain(grammar) or grammar_error(lines)
        raise InvalidRequest(f"Invalid 'grammar': {reason}", "grammar")
    param = (
        "tool_choice" if request.tool_choice not in (None, "auto", "none") else "response_format"
    )
    raise InvalidRequest("The grammar derived from the request does not compile", param)


def grammar_error(lines: list[str]) -> str:
    """The parse error in what llama.cpp logged while compiling a grammar."""
    text = "".join(lines)
    for line in text.splitlines():
        if "grammar" in line.lower() and line.strip():
            return line.strip().removeprefix("llama_grammar_init_impl: ").strip()
    return "it does not parse as GBNF (see llama.cpp's grammars/README.md)"


def sampler_chain(plan, vocab, n_vocab: int, index: int) -> SamplerChain:
    """Choice ``index``'s chain for a planned request (its ``request``, ``grammar`` and
    ``grammar_trigger``): seeded with ``seed + index``, or a fresh random seed."""
    seed = None if plan.seed is None else plan.seed + index
    return SamplerChain(
        vocab, n_vocab, plan.request, seed, plan.grammar, trigger=plan.grammar_trigger
    )


class SamplerChain:
    """One choice's llama.cpp sampler chain, plus its grammar. Call :meth:`close` when done."""

    def __init__(
        self,
        vocab,
        n_vocab: int,
        request: GenerationRequest,
        seed: int | None,
        grammar: str | None,
        trigger: str | None = None,
    ):
        import llama_cpp

        from ..llama import native

        self._lib = llama_cpp
        self._native = native.lib
        #: The binding of the grammar's per-token calls: GIL-free for a large grammar.
        self._grammar_lib = native.lib
        #: The binding of the chain's draw: GIL-free when the grammar runs inside the chain.
        self._chain_lib = native.lib
        self.seed = seed if seed is not None else secrets.randbits(31)
        self._n_vocab = n_vocab
        params = llama_cpp.llama_sampler_chain_default_params()
        self._chain = llama_cpp.llama_sampler_chain_init(params)
        #: The grammar, when it is checked after the draw (see the module docstring).
        self._grammar = None
        self._one = None
        self._full_ids = None
        #: When the grammar rejects a draw, the draw made again over the best-scored tokens
        #: only is exactly the draw over all of them if at least this many of those pass
        #: the grammar (1 for greedy, ``top_k`` when sampling); None: only the whole
        #: vocabulary will do (a logit bias or no top-k reorders what "best" means).
        self._enough_allowed: int | None = None
        #: Draws the grammar rejected, and draws in all (for tests and the benchmark).
        self.rejected = 0
        self.draws = 0
        #: Temperature 0; and the chain is greedy with at most a logit bias: its draw is
        #: the argmax of the (biased) logits, made with numpy (see the module docstring).
        self.greedy = False
        self.argmax = False
        #: The biased token ids (ascending) and their biases as float32, for the argmax.
        self._bias_ids = None
        self._bias = None
        self._bias_set: frozenset[int] = frozenset()
        #: Drawing over the row's best tokens (sampled with a top-k, or greedy with
        #: penalties): how many its bound must keep besides the recent tokens (the top-k, or
        #: 1, plus the biased tokens), and the ids a positive bias raises, always kept; the
        #: row is read in pieces of ``_top_width`` logits (:func:`best_ids`).
        self._top_need = 0
        self._top_width = 0
        self._top_extra = None
        #: The draws' candidate array over the best tokens, kept (see :meth:`_draw_among`).
        self._cand = None
        self._cand_array = None
        #: With penalties: the tokens drawn last, whose logits the penalties change (at
        #: least those in llama.cpp's window), always kept too.
        self._recent: collections.deque | None = None
        #: A lazy grammar waits for this text before it constrains anything.
        self._trigger = trigger
        try:
            self._build(vocab, n_vocab, request, grammar)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler) -> None:
        self._lib.llama_sampler_chain_add(self._chain, sampler)

    def _build(self, vocab, n_vocab: int, request: GenerationRequest, grammar: str | None) -> None:
        lib = self._lib
        ban = GRAMMAR_BAN if grammar is not None else -math.inf
        if request.logit_bias:
            self._add(_logit_bias_sampler(lib, n_vocab, request.logit_bias, ban))
        repeat = setting(request, "repeat_penalty")
        frequency = setting(request, "frequency_penalty")
        presence = setting(request, "presence_penalty")
        penalties = (repeat, frequency, presence) != (1.0, 0.0, 0.0)
        if penalties:
            self._add(
                lib.llama_sampler_init_penalties(
                    n_vocab, PENALTY_LAST_N, repeat, frequency, presence
                )
            )
        if grammar is not None:
            sampler = compile_grammar(lib, vocab, grammar, request, self._trigger)
            if len(grammar) > GIL_HELD_GRAMMAR_BYTES:
                self._grammar_lib = lib
            if penalties:
                self._add(sampler)  # checked on every token, inside the chain
                self._chain_lib = lib  # over the whole vocabulary: without the GIL
            else:
                self._grammar = sampler
                self._one = (lib.llama_token_data * 1)()
                self._one_array = lib.llama_token_data_array(self._one, 1, -1, False)
        temperature = setting(request, "temperature")
        top_k = int(setting(request, "top_k"))
        if self._grammar is not None and not request.logit_bias:
            self._enough_allowed = 1 if temperature <= 0 else (top_k if top_k > 0 else None)
        if temperature <= 0:
            self.greedy = True
            self._add(lib.llama_sampler_init_greedy())
            self.argmax = FAST_GREEDY and not penalties
            if self.argmax and request.logit_bias:
                self._bias_ids, self._bias = _bias_arrays(request.logit_bias, ban)
                self._bias_set = frozenset(self._bias_ids.tolist())
            elif penalties and grammar is None:  # the best token after the penalties
                self._top_only(request, n_vocab, ban, 1, penalties)
            return
        if top_k > 0:
            self._add(lib.llama_sampler_init_top_k(top_k))
        self._add(lib.llama_sampler_init_top_p(setting(request, "top_p"), 1))
        self._add(lib.llama_sampler_init_min_p(setting(request, "min_p"), 1))
        self._add(lib.llama_sampler_init_temp(temperature))
        self._add(lib.llama_sampler_init_dist(self._native_seed()))
        if top_k > 0 and not (penalties and grammar is not None):
            self._top_only(request, n_vocab, ban, top_k, penalties)

    def _top_only(self, request, n_vocab: int, ban: float, best: int, penalties: bool) -> None:
        """Draw over the row's ``best`` best tokens only (see the module docstring), where
        the look for them is far smaller than the vocabulary."""
        extra = len(request.logit_bias or ())
        window = PENALTY_LAST_N if penalties else 0
        width = max(n_vocab // TOP_K_PIECES, 4 * (best + extra + window))
        if not FAST_TOP_K or 2 * width > n_vocab:
            return
        self._top_need = best + extra
        self._top_width = width
        if extra:
            # Only a bias above 0 can lift a token from below the bound into the top-k: a
            # ban or a negative bias only lowers one (the bound still leaves ``best`` others
            # above it, since ``need`` counts every biased token).
            ids, biases = _bias_arrays(request.logit_bias, ban)
            raised = ids[biases > 0]
            if len(raised):
                self._top_extra = raised
        if penalties:
            self._recent = collections.deque(maxlen=PENALTY_LAST_N)

    def _native_seed(self) -> int:
        """The seed as llama.cpp's uint32; its "random" value 0xFFFFFFFF maps to 0."""
        seed = self.seed & 0xFFFFFFFF
        return 0 if seed == self._lib.LLAMA_DEFAULT_SEED else seed

    def best(self, ctx, index: int, count: int) -> list[int] | None:
        """The greedy draws at batch positions ``index .. index + count - 1`` (rows with
        logits, one after the other), all in one numpy call; None when the chain is not
        greedy with at most a bias. Each is the draw :meth:`sample` would make there before
        its grammar check (pass it back as ``drawn``)."""
        if not self.argmax:
            return None
        from ..llama.logits import rows_at

        address = self._native.logits_address
        first = address(ctx, index)
        n_vocab = self._n_vocab
        if count > 1:
            # The rows of consecutive outputs are consecutive in llama.cpp's logits buffer
            # (in batch order once read); checked, and read row by row if ever not.
            end = address(ctx, index + count - 1)
            if not (first and end) or end - first != (count - 1) * n_vocab * 4:
                return [self.best(ctx, index + i, 1)[0] for i in range(count)]
        rows = rows_at(first, count, n_vocab)
        draws = rows.argmax(axis=1).tolist()
        if self._bias_ids is None:
            return draws
        ids = self._bias_ids
        biased = rows[:, ids] + self._bias  # float32, as llama.cpp adds it
        for i, token in enumerate(draws):
            if token in self._bias_set:
                # The best raw logit is biased: the best of the rest is unknown here.
                draws[i] = self._chain_lib.llama_sampler_sample(self._chain, ctx, index + i)
                continue
            j = int(biased[i].argmax())  # the first of the best biased ones: the lowest id
            value, best = biased[i, j], rows[i, token]
            if value > best or (value == best and ids[j] < token):
                draws[i] = int(ids[j])
        return draws

    def sample(self, ctx, index: int = -1, drawn: int | None = None) -> int:
        """Draw a token from the logits at batch position ``index`` and advance the state.
        ``drawn``: the chain's draw there, made already by :meth:`best`."""
        if drawn is not None:
            token = drawn
        elif self.argmax:
            (token,) = self.best(ctx, index, 1)
        elif self._top_need:
            token = self._draw_top(ctx, index)
        else:
            token = self._chain_lib.llama_sampler_sample(self._chain, ctx, index)
        grammar = self._grammar
        if grammar is None:
            return token
        lib = self._grammar_lib
        self.draws += 1
        one = self._one[0]
        one.id, one.logit, one.p = token, 1.0, 0.0
        array = self._one_array
        array.size, array.selected, array.sorted = 1, -1, False
        lib.llama_sampler_apply(grammar, ctypes.byref(array))
        if one.logit == -math.inf:
            self.rejected += 1
            token = self._resample(ctx, index)
        lib.llama_sampler_accept(grammar, token)
        return token

    def _draw_top(self, ctx, index: int) -> int:
        """The chain's draw at ``index``, made over the tokens that can be in its top-k
        (see the module docstring); the same token as llama.cpp's whole draw."""
        import numpy as np

        from ..llama.logits import row_logits

        logits = row_logits(ctx, index, self._n_vocab)
        need = self._top_need
        recent = None
        if self._recent:
            recent = np.fromiter(set(self._recent), dtype=np.intp)
            need += len(recent)
        extra = self._top_extra
        if recent is not None:
            extra = recent if extra is None else np.concatenate((extra, recent))
        ids = best_ids(logits, need, self._top_width, extra)
        if len(ids) < need:  # a NaN bound: let llama.cpp see the whole row
            token = self._chain_lib.llama_sampler_sample(self._chain, ctx, index)
        else:
            token = self._draw_among(ids, logits)
        if self._recent is not None:
            self._recent.append(token)
        return token

    def _draw_among(self, ids, logits) -> int:
        """The chain's draw over the tokens ``ids`` of the row ``logits``, accepted. The
        candidate array is the chain's own, made again only when a draw needs more room
        (a new one each draw cost ~40 µs of a ~380 µs draw fresh from a decode)."""
        if self._cand is None or len(self._cand) < len(ids):
            self._cand, self._cand_array = _candidates(self._lib, max(len(ids), CANDIDATES))
        array = _fill(self._cand, self._cand_array, ids, logits[ids])
        lib = self._native
        lib.llama_sampler_apply(self._chain, ctypes.byref(array))
        token = int(array.data[array.selected].id)
        lib.llama_sampler_accept(self._chain, token)  # as llama_sampler_sample does
        return token

    @property
    def top_only(self) -> bool:
        """Whether draws are made over the row's best tokens only (for tests)."""
        return bool(self._top_need)

    def _resample(self, ctx, index: int) -> int:
        """The draw again, with the grammar applied before the chain.

        Filtering all of a large vocabulary through a grammar is the expensive part, so the
        best-scored tokens are tried first: when enough of them pass the grammar (see
        ``_enough_allowed``), the chain's draw over them is exactly its draw over the whole
        filtered vocabulary, since every token the chain could keep is among them.
        """
        import numpy as np

        from ..llama.logits import row_logits

        n_vocab = self._n_vocab
        logits = row_logits(ctx, index, n_vocab)
        need = self._enough_allowed
        if need is not None:
            for size in (max(64, 4 * need), max(1024, 16 * need)):
                if size >= n_vocab:
                    break
                ids = np.argpartition(logits, -size)[-size:].astype(np.int32)
                token = self._draw(ids, logits[ids], need)
                if token is not None:
                    return token
        if self._full_ids is None:
            self._full_ids = np.arange(n_vocab, dtype=np.int32)
        return self._draw(self._full_ids, logits, 0)

    def _draw(self, ids, logits, need: int) -> int | None:
        """Grammar, then chain, over the candidates ``ids``; None when fewer than ``need``
        of them pass the grammar. Both run without the GIL (see the module docstring)."""
        import numpy as np

        lib = self._lib
        cand, array = _candidates(lib, len(ids))
        _fill(cand, array, ids, logits)
        lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        if need and int(np.count_nonzero(cand["logit"] != -np.inf)) < need:
            return None
        lib.llama_sampler_apply(self._chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def close(self) -> None:
        if self._chain:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None


def best_ids(logits, need: int, width: int, extra=None):
    """The ids, ascending, of every token of the row ``logits`` at or above a bound that at
    least ``need`` of them reach, and of ``extra``; fewer than ``need`` only where NaNs
    leave no such bound. The row is read as pieces of ``width`` logits side by side (a
    tail shorter than a piece apart): each position's maximum over the pieces is a token
    of its own, so the ``need``-th best of those maxima is such a bound, and every token
    that reaches it lies at a position whose maximum does."""
    import numpy as np

    pieces = len(logits) // width
    whole = pieces * width
    peaks = logits[:whole].reshape(pieces, width).max(axis=0)
    bound = np.partition(peaks, -need)[-need]
    ids = (_piece_starts(whole, width) + np.flatnonzero(peaks >= bound)).ravel()
    ids = ids[logits[ids] >= bound]
    if whole < len(logits):
        ids = np.concatenate((ids, np.flatnonzero(logits[whole:] >= bound) + whole))
    if extra is None:
        return ids  # ascending already: by piece, then by position
    return np.unique(np.concatenate((ids, extra)))


def _candidates(lib, size: int):
    """A numpy array of ``size`` ``llama_token_data`` and a ``llama_token_data_array`` over
    it (keep the numpy array while the other is used); :func:`_fill` fills them."""
    import numpy as np

    cand = np.empty(size, dtype=_token_data_dtype())
    data = cand.ctypes.data_as(ctypes.POINTER(lib.llama_token_data))
    return cand, lib.llama_token_data_array(data, size, -1, False)


def _fill(cand, array, ids, logits):
    """``array`` (over ``cand``) as the tokens ``ids`` with their ``logits``, unsorted and
    with nothing selected, as llama.cpp's own draw starts; returns it."""
    n = len(ids)
    head = cand[:n]
    head["id"] = ids
    head["logit"] = logits
    head["p"] = 0.0
    array.size, array.selected, array.sorted = n, -1, False
    return array


@functools.lru_cache(maxsize=8)
def _piece_starts(whole: int, width: int):
    """The first position of each piece of :func:`best_ids`, as a column."""
    import numpy as np

    starts = np.arange(0, whole, width, dtype=np.intp)[:, None]
    starts.flags.writeable = False
    return starts


@functools.cache
def _token_data_dtype():
    """``llama_token_data`` as a numpy dtype (numpy is imported with the first model)."""
    import numpy as np

    return np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


def _bias_arrays(bias: Mapping[int, float], ban: float):
    """The biased ids, ascending, and their biases as llama.cpp's bias sampler adds them."""
    import numpy as np

    items = sorted(
        (int(token), ban if value <= BAN_BIAS else float(value)) for token, value in bias.items()
    )
    ids = np.array([token for token, _ in items], dtype=np.intp)
    return ids, np.array([value for _, value in items], dtype=np.float32)


def _logit_bias_sampler(lib, n_vocab: int, bias: Mapping[int, float], ban: float):
    entries = (lib.llama_logit_bias * len(bias))()
    for i, (token, value) in enumerate(bias.items()):
        token = int(token)
        if not 0 <= token < n_vocab:
            raise InvalidRequest(
                f"logit_bias: token id {token} is not in the vocabulary (0..{n_vocab - 1})",
                "logit_bias",
            )
        entries[i].token = token
        entries[i].bias = ban if value <= BAN_BIAS else float(value)
    return lib.llama_sampler_init_logit_bias(n_vocab, len(bias), entries)


class LogprobReader:
    """Log-probabilities of the model's raw distribution at the last decoded position
    (before bias, penalties, grammar and temperature), as OpenAI reports them."""

    def __init__(self, ctx, n_vocab: int, piece, top: int):
        import numpy as np

        self._np = np
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._piece = piece
        self._top = top

    def read(self, token: int, index: int = -1) -> TokenLogprob:
        """The log-probability of ``token`` (and the top ones) at batch position ``index``."""
        from ..llama.logits import log_total, row_logits

        np = self._np
        logits = row_logits(self._ctx, index, self._n_vocab)
        total = log_total(logits)
        top = ()
        if self._top > 0:
            ids = np.argpartition(logits, -self._top)[-self._top :]
            ids = ids[np.argsort(logits[ids])[::-1]]
            top = tuple(self._entry(TopLogprob, int(i), float(logits[i]) - total) for i in ids)
        token_lp = float(logits[token]) - total
        return self._entry(TokenLogprob, token, token_lp, top)

    def _entry(self, cls, token: int, logprob: float, *extra):
        raw = self._piece(token)
        return cls(raw.decode("utf-8", errors="replace"), logprob, tuple(raw), *extra)
