"""Speculative decoding on real llama.cpp (the tiny model): with and without drafts the
output is the same, token for token, and everything per token (stop strings, max_tokens,
log-probs, grammar, n > 1, concurrent streams, cancel) stays right for drafted tokens.

Two copies of the tiny model serve the same requests: ``spec`` with the default options
(n-gram speculation on) and ``plain`` with ``speculative = "off"``. The tiny model's greedy
output falls into loops, which the n-gram lookup drafts, so these runs really accept drafts
(each test checks it did)."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.config import FieldError  # noqa: E402
from hoshikage_core.protocol import (  # noqa: E402
    BlockingStream,
    CancelToken,
    GenerationRequest,
    ResponseFormat,
)
from hoshikage_llamacpp.engine import sampling  # noqa: E402
from hoshikage_llamacpp.engine.spec import (  # noqa: E402
    DraftLength,
    NgramDrafter,
    NgramPool,
    Payoff,
    Speculation,
    StepCost,
    best_length,
    ubatches,
)
from hoshikage_llamacpp.engine.spec.ngram import POOL_CONTEXT  # noqa: E402
from hoshikage_llamacpp.lifecycle import model as model_module  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import DRAFT_MAX, LlamaOptions  # noqa: E402

EOS = 2
#: Prompts whose greedy continuations loop (they draft a lot) or wander (they draft little).
PROMPTS = [
    "the cat sat on the mat the cat sat on the mat the cat",
    "hello world",
    "red blue green one two red blue green one",
    "json data name",
    "yes no stop here",
]


# ---- the guesser and the draft length, alone -----------------------------------------


def test_ngram_drafter_continues_the_latest_match():
    drafter = NgramDrafter()
    drafter.begin([5, 6, 7, 8, 9, 1, 2, 5, 6, 7])
    assert drafter.propose(3) == [8, 9, 1]
    drafter.accept([4])  # 6 7 4 was never seen; "7 4" neither: no draft
    assert drafter.propose(3) == []
    assert drafter.propose(0) == []


def test_ngram_drafter_follows_a_loop_past_the_end_of_the_history():
    drafter = NgramDrafter()
    drafter.begin([3, 4, 3, 4, 3, 4])
    assert drafter.propose(7) == [3, 4, 3, 4, 3, 4, 3]


def test_a_question_asked_again_drafts_its_answer_from_the_pool():
    pool = NgramPool()
    prompt = list(range(1000, 1300))  # 300 tokens; the answer is not in it
    answer = list(range(2000, 2040))
    first = NgramDrafter(pool)
    first.begin(prompt)
    assert first.propose(16) == []
    first.accept(answer)
    first.end()
    assert pool.tokens == POOL_CONTEXT + len(answer)
    first.end()  # told twice: pooled once
    assert pool.tokens == POOL_CONTEXT + len(answer)
    again = NgramDrafter(pool)
    again.begin(prompt)
    assert again.propose(16) == answer[:16]
    # The copy continued reaches back into the prompt, as far as the pool kept it.
    assert again.matched == POOL_CONTEXT
    again.accept(answer[:30])
    assert again.propose(16) == answer[30:]  # the source's end: what is there
    # A prompt that ends otherwise finds nothing; one sharing only the last 12 does.
    other = NgramDrafter(pool)
    other.begin([*range(5000, 5100), *prompt[-12:]])
    assert other.propose(4) == answer[:4] and other.matched == 12
    stranger = NgramDrafter(pool)
    stranger.begin([*range(5000, 5100), *prompt[-11:]])
    assert stranger.propose(4) == []


def test_the_pool_drafts_only_where_it_continues_a_longer_copy_than_the_own_history():
    pool = NgramPool()
    text = list(range(100, 160))
    first = NgramDrafter(pool)
    first.begin([1, 2, *text[:20]])
    first.accept([777, 778, 779])  # a copy of 20 tokens, then its own way
    first.end()
    # Own history: the text and a 30-token copy of it, which the pool's does not reach.
    drafter = NgramDrafter(pool)
    drafter.begin([*text, 7, 8, *text[:30]])
    assert drafter.propose(4) == text[30:34] and drafter.matched == 30
    # Where the pool's agrees on more (22: "1 2" before the text), its continuation is
    # drafted; on a tie the own history's.
    drafter = NgramDrafter(pool)
    drafter.begin([*text[:20], *range(300, 330), 1, 2, *text[:20]])
    assert drafter.propose(4) == [777, 778, 779] and drafter.matched == 22
    drafter = NgramDrafter(pool)
    drafter.begin([9, 1, 2, *text[:20], *range(300, 330), 1, 2, *text[:20]])
    assert drafter.propose(4) == [300, 301, 302, 303] and drafter.matched == 22


def test_the_pool_keeps_its_budget_of_the_newest_outputs_and_never_drafts_a_stale_entry():
    pool = NgramPool(budget=130)  # two of 20 + 40 tokens
    prompts, answers = [], []
    for i in range(5):
        prompt = list(range(10_000 * (i + 1), 10_000 * (i + 1) + 20))
        answer = list(range(10_000 * (i + 1) + 500, 10_000 * (i + 1) + 540))
        drafter = NgramDrafter(pool)
        drafter.begin(prompt)
        drafter.accept(answer)
        drafter.end()
        prompts.append(prompt)
        answers.append(answer)
    assert pool.tokens == 120  # the last two
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        drafter = NgramDrafter(pool)
        drafter.begin(prompt)
        assert drafter.propose(8) == (answer[:8] if i >= 3 else [])
    # An answer larger than the whole budget is not kept (nor does it evict the rest).
    big = NgramDrafter(pool)
    big.begin(list(range(90_000, 90_020)))
    big.accept(list(range(91_000, 91_200)))
    big.end()
    assert pool.tokens == 120


def test_draft_length_falls_to_zero_when_drafts_fail_and_grows_when_they_hold():
    length = DraftLength(16)
    for _ in range(6):
        length.update(length.next(0, 16) or 1, 0)
    assert length.next(0, 16) == 0
    for _ in range(6):
        length.update(8, 8)
    assert length.next(0, 16) >= 8
    assert length.next(0, 3) <= 3


def test_a_sequence_whose_drafts_fail_retries_ever_more_rarely():
    length = DraftLength(16)
    for _ in range(4):
        length.update(length.next(0, 16) or 1, 0)
    tries = []
    for step in range(600):
        k = length.next(0, 16)
        if k:
            tries.append(step)
            length.update(k, 0)
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] == DraftLength.RETRY_MAX
    length.update(1, 1)  # a try that holds: tries come every RETRY steps again...
    ks = [length.next(0, 16) for _ in range(DraftLength.RETRY)]
    k = ks[-1]
    assert k == 1
    for _ in range(4):  # ...and drafts that hold grow the length back
        length.update(max(k, 1), max(k, 1))
        k = length.next(0, 16)
    assert k >= 4


def test_ngram_drafter_reports_how_long_a_copy_its_draft_continues():
    text = list(range(100, 160))
    drafter = NgramDrafter()
    drafter.begin([*text, 7, 8, *text[:40]])  # the text, then a copy of its first 40 tokens
    assert drafter.propose(16) == text[40:56]
    assert drafter.matched == 40
    drafter.accept([9])  # the copy breaks: no n-gram ending in 9 was seen before
    assert drafter.propose(16) == [] and drafter.matched == 0
    drafter.begin([1, 2, 3, 4, 9, 9, 2, 3, 4])  # found by a 3-token key, one more agrees
    assert drafter.propose(2) == [9, 9] and drafter.matched == 3


def test_a_long_copy_drafts_long_at_once_and_a_short_match_after_a_rejection_does_not():
    fresh = DraftLength(16)
    assert fresh.next(0, 16) == 3  # no evidence yet: the prior's length
    assert fresh.next(0, 16, matched=40) >= 14  # continuing a 40-token copy
    # A sampled draw leaves a copy as easily after 40 agreeing tokens: no such trust.
    assert DraftLength(16, greedy=False).next(0, 16, matched=40) == 3
    assert DraftLength(16).next(7, 16, matched=40) <= DraftLength(16).next(0, 16, matched=40)
    trusted = DraftLength(16)
    for _ in range(10):
        trusted.update(16, 16)
    assert trusted.next(0, 16) == 16 and trusted.rate > 0.98
    trusted.update(16, 4)  # rejected; what follows matches a 3-token key only
    assert trusted.next(0, 16, matched=3) == 3
    assert trusted.next(0, 16, matched=60) == 16  # the copy is back


def test_a_fuller_batch_needs_more_acceptance_for_the_same_draft_length():
    for p in (0.6, 0.8, 0.9, 0.95):
        assert best_length(p, 16, others=7) <= best_length(p, 16, others=0)
    assert best_length(0.7, 16, others=7) == 0
    assert best_length(0.3, 16, others=0) == 0


def test_ubatches_are_the_split_llama_cpp_makes_with_a_stream_per_slot():
    # Equal counts on consecutive slots: one ubatch.
    assert ubatches([(0, 2), (1, 2), (2, 2), (3, 2)]) == ((4, 2),)
    # One sequence's draft beside single tokens: the shared width, then the rest alone.
    assert ubatches([(0, 5), (1, 1), (2, 1), (3, 1)]) == ((4, 1), (1, 4))
    assert ubatches([(0, 1), (1, 5), (2, 3), (3, 1)]) == ((4, 1), (2, 2), (1, 2))
    # A ubatch takes sequences of consecutive ids only (split_equal's "sequential").
    assert ubatches([(0, 1), (2, 1)]) == ((1, 1), (1, 1))
    assert ubatches([(0, 2), (1, 1), (2, 2), (3, 1)]) == ((4, 1), (1, 1), (1, 1))
    # At most n_ubatch tokens in a ubatch.
    assert ubatches([(0, 9)], n_ubatch=4) == ((1, 4), (1, 4), (1, 1))
    assert ubatches([(0, 3), (1, 3)], n_ubatch=4) == ((2, 2), (2, 1))


def step_cost(measured):
    cost = StepCost()
    for shapes, seconds in measured:
        cost.record(shapes, 1.0)  # the first step of a split builds its graph: not counted
        for _ in range(3):
            cost.record(shapes, seconds)
    return cost


def test_step_cost_is_measured_per_split_and_decides_the_draft_length():
    assert StepCost()(4) == pytest.approx(2.05)  # nothing measured: linear
    cost = step_cost(
        (((1, n),), seconds) for n, seconds in ((1, 0.010), (2, 0.021), (4, 0.031), (8, 0.038))
    )
    assert cost(2) == pytest.approx(2.1) and cost(8) == pytest.approx(3.8)
    # Beyond the widest measured: a token more costs what it did in the last measured step
    # up (4 -> 8: 0.7 for 4 tokens), at most TOKEN_COST; it grows cheaper as a ubatch widens.
    assert cost(10) == pytest.approx(3.8 + 2 * 0.175)
    assert step_cost([(((1, 1),), 0.010), (((1, 4),), 0.031)])(6) == pytest.approx(3.1 + 2 * 0.35)
    # Two tokens cost 2.1 steps here: a draft of one never pays, a long one may.
    assert best_length(0.8, 1, cost=cost) == 0 and best_length(0.8, 1) == 1
    assert best_length(0.95, 16, cost=cost) >= 7
    assert DraftLength(16, cost=cost).next(0, 1) == 0


def test_a_step_of_another_shape_than_the_last_is_counted_as_a_graph_rebuild():
    cost = step_cost([(((1, 1),), 0.010), (((1, 4),), 0.030)])
    assert cost.switch() == pytest.approx(0.3)  # not measured yet
    for _ in range(5):  # alternating: each step rebuilds the graph, 4 ms here
        cost.record(((1, 1),), 0.014)
        cost.record(((1, 4),), 0.034)
    assert cost.switch() == pytest.approx(0.4)
    assert cost.price(((1, 1),)) == pytest.approx(1.0)
    assert cost.price(((1, 4),)) == pytest.approx(3.0)
    assert cost.last == ((1, 4),)


def test_a_stalled_step_does_not_price_drafting_out_for_good():
    # A stall of the machine (another process on the core) in a drafting step, and in a
    # step that rebuilt the graph: each sample raises an estimate to at most twice what it
    # was, and a rebuild counts as one step at most. Drafting stops no longer than it takes
    # the next samples to bring the estimates back; undamped, the first stall stopped it for
    # good (a draft not made is never measured again).
    cost = step_cost([(((1, 1),), 0.010), (((1, 17),), 0.050)])
    cost.record(((1, 17),), 5.0)
    assert cost.price(((1, 17),)) <= 2 * 5.0
    assert best_length(1.0, 16, cost=cost) == 16  # a sure copy still drafts all 16
    cost.record(((1, 1),), 0.010)
    cost.record(((1, 17),), 0.050)
    cost.record(((1, 1),), 2.0)  # the rebuild back to one token, stalled
    assert cost.switch() <= 1.0


def test_a_step_measured_while_the_machine_was_slower_keeps_its_price():
    # Every step was slower while a draft's step was measured (a first request's cold
    # caches, another process on the cores); then one-token steps get faster again, and no
    # draft is made to measure a drafting step anew. Priced in today's one-token steps, its
    # old seconds kept drafting out for good (the tiny model stopped drafting in a server
    # that way); its price in one-token steps is what was measured.
    cost = step_cost([(((1, 1),), 0.015), (((1, 4),), 0.030), (((1, 8),), 0.045)])
    assert cost.price(((1, 8),)) == pytest.approx(3.0)
    chosen = [best_length(p, 16, cost=cost) for p in (0.7, 0.8, 0.9, 0.95)]
    cost.record(((1, 1),), 0.015)  # back to one token: a rebuilt graph
    for _ in range(40):
        cost.record(((1, 1),), 0.010)
    assert cost.seconds(((1, 1),)) == pytest.approx(0.010, rel=1e-3)
    assert cost.price(((1, 4),)) == pytest.approx(2.0) and cost.price(((1, 8),)) == pytest.approx(
        3.0
    )
    assert cost.seconds(((1, 8),)) == pytest.approx(0.030, rel=1e-3)  # at today's speed
    assert [best_length(p, 16, cost=cost) for p in (0.7, 0.8, 0.9, 0.95)] == chosen


def test_an_uneven_step_is_priced_as_its_ubatches_and_what_a_split_adds():
    cost = step_cost(
        [
            (((1, 1),), 0.010),
            (((1, 4),), 0.031),
            (((4, 1),), 0.013),
            (((4, 2),), 0.020),
            # measured: 4 streams, one drafting 4 (two ubatches and a rebuilt graph)
            (((4, 1), (1, 4)), 0.067),
        ]
    )
    assert cost(8, 4) == pytest.approx(6.7)  # measured as that split
    assert cost.price(((4, 2),)) == pytest.approx(2.0)  # 2+2+2+2: one ubatch
    # Not measured: its parts, and what a further ubatch was seen to add (2.3 steps).
    assert cost.price(((4, 1), (1, 2))) == pytest.approx(1.3 + (1.0 + 0.35) + 2.3)
    # So one stream drafting among four pays only where it is nearly always right.
    assert best_length(0.9, 4, others=3, cost=cost) == 0 < best_length(0.9, 4, others=3)


def test_a_try_after_failures_is_the_shortest_draft_that_could_pay():
    cost = step_cost(
        (((1, n),), seconds)
        for n, seconds in ((1, 0.010), (2, 0.021), (3, 0.027), (4, 0.031), (8, 0.038))
    )
    length = DraftLength(16, cost=cost)
    for _ in range(6):
        length.update(4, 0)
    tries = [length.next(0, 16, matched=20) for _ in range(DraftLength.RETRY)]
    assert tries[:-1] == [0] * (DraftLength.RETRY - 1)
    assert tries[-1] == best_length(DraftLength.RETRY_P, tries[-1], cost=cost) > 1


def test_a_retry_waits_for_a_draft_that_continues_a_longer_copy():
    length = DraftLength(16)
    for _ in range(6):
        length.update(length.next(0, 16) or 1, 0)
    short = [length.next(0, 16, matched=3) for _ in range(3 * DraftLength.RETRY)]
    assert not any(short)  # free text's 3-token matches: no tries
    assert length.next(0, 16, matched=DraftLength.RETRY_MATCH) == 1


def test_draft_needs_a_draft_model():
    with pytest.raises(FieldError, match="draft_model"):
        LlamaOptions(speculative="draft")


# ---- a step's drafts, planned together -----------------------------------------------------

LOOP = [7, 8, 9, 10, 11, 12] * 8  # a prompt the n-gram lookup drafts from at once
FREE = list(range(100, 148))  # one it finds nothing in


def choices(speculation, prompts, budget=200):
    """Generating choices on slots 0, 1, … as the engine hands them to ``plan``."""
    out = []
    for slot, prompt in enumerate(prompts):
        plan = SimpleNamespace(budget=budget, media=[])
        choice = SimpleNamespace(
            slot=SimpleNamespace(id=slot), job=SimpleNamespace(plan=plan), n_gen=0, drafts=()
        )
        speculation.begin(choice, prompt, greedy=True)
        out.append(choice)
    return out


def measured(speculation):
    """Step costs like Gemma 3 270M's on this CPU: a wider ubatch costs little more, a
    split of four sequences with one drafting costs five one-token steps."""
    record = speculation.step_cost.record
    for shapes, seconds in (
        (((1, 1),), 0.010),
        (((4, 1),), 0.013),
        (((4, 2),), 0.016),
        (((4, 3),), 0.019),
        (((4, 4),), 0.022),
        (((4, 5),), 0.025),
        (((4, 1), (1, 4)), 0.065),
    ):
        for _ in range(3):
            record(shapes, seconds)


def test_a_full_batch_of_copies_drafts_equal_lengths_in_one_ubatch():
    speculation = Speculation(16)
    measured(speculation)
    batch = choices(speculation, [LOOP] * 4)
    speculation.plan(batch, room=500, waiting=False)
    lengths = {len(c.drafts) for c in batch}
    assert len(lengths) == 1 and lengths.pop() > 0


def test_one_sequence_without_a_draft_keeps_the_others_from_drafting_alone():
    speculation = Speculation(16)
    measured(speculation)
    batch = choices(speculation, [LOOP, LOOP, LOOP, FREE])
    speculation.plan(batch, room=500, waiting=False)
    assert [c.drafts for c in batch] == [()] * 4  # the free one sets the pace
    # One that is further along does not: the others' drafts speed up the batch's end.
    batch[3].n_gen = 100
    speculation.plan(batch, room=500, waiting=False)
    assert all(c.drafts for c in batch[:3]) and not batch[3].drafts
    assert len({len(c.drafts) for c in batch[:3]}) == 1


def test_with_requests_waiting_a_draft_goes_in_only_where_the_split_pays():
    speculation = Speculation(16)
    measured(speculation)
    batch = choices(speculation, [LOOP, FREE, FREE, FREE])
    for choice in batch[1:]:
        choice.drafting = None
    speculation.plan(batch, room=500, waiting=True)
    assert not batch[0].drafts  # 3 + E(k) tokens for 5+ one-token steps: never
    alone = choices(Speculation(16), [LOOP])
    speculation.plan(alone, room=500, waiting=True)
    assert len(alone[0].drafts) > 1


#: One sequence's steps as Gemma 3 270M's on 2 threads of this CPU, (split, seconds): 17
#: tokens cost 5.2 one-token steps, 33 tokens 8.6.
WIDE = ((((1, 1),), 0.0192), (((1, 17),), 0.100), (((1, 33),), 0.164))


def wide(speculation):
    """:data:`WIDE`'s step costs, measured."""
    for shapes, seconds in WIDE:
        for _ in range(3):
            speculation.step_cost.record(shapes, seconds)


def test_a_long_copy_alone_drafts_past_llama_servers_16():
    speculation = Speculation(DRAFT_MAX)
    wide(speculation)
    (choice,) = choices(speculation, [LOOP])
    speculation.plan([choice], room=500, waiting=False)
    assert 16 < len(choice.drafts) <= DRAFT_MAX
    capped = Speculation(16)  # draft_max as llama-server's --draft-max
    wide(capped)
    (choice,) = choices(capped, [LOOP])
    capped.plan([choice], room=500, waiting=False)
    assert len(choice.drafts) == 16


def test_a_copy_drafts_one_short_of_a_multiple_of_4_where_a_row_more_costs_more():
    # llama.cpp's CPU kernel takes a step's rows in tiles of 4: 16 rows cost 4.4 one-token
    # steps, 17 rows 5.2, so a draft of 15 beats llama-server's 16.
    speculation = Speculation(16)
    for shapes, seconds in ((((1, 16),), 0.0848), (((1, 17),), 0.100), (((1, 1),), 0.0192)):
        for _ in range(3):
            speculation.step_cost.record(shapes, seconds)
    (choice,) = choices(speculation, [LOOP])
    speculation.plan([choice], room=500, waiting=False)
    assert len(choice.drafts) == 15


def test_a_step_drafts_no_more_rows_of_logits_than_four_slots_of_16_held():
    # Each draft token is a row of logits over the vocabulary that llama.cpp's buffers keep
    # once a step asked for it: 4 copies drafting 32 each would hold 125 MB more on Gemma 3.
    speculation = Speculation(DRAFT_MAX)
    wide(speculation)
    record = speculation.step_cost.record
    for shapes, seconds in ((((4, 1),), 0.025), (((4, 16),), 0.19), (((4, 33),), 0.3)):
        for _ in range(3):
            record(shapes, seconds)
    batch = choices(speculation, [LOOP] * 4)
    speculation.plan(batch, room=500, waiting=False)
    drafted = sum(len(c.drafts) for c in batch)
    assert 48 <= drafted <= 64


def test_drafting_that_does_not_pay_pauses_and_comes_back_ever_later():
    payoff = Payoff()
    pauses = []
    for _ in range(3):
        for _ in range(Payoff.TRIAL):
            assert payoff.allows()
            payoff.add(0.8)
        paused = 0
        while not payoff.allows():
            paused += 1
        pauses.append(paused)
    assert pauses == [Payoff.PAUSE, 2 * Payoff.PAUSE, 4 * Payoff.PAUSE]
    for _ in range(4 * Payoff.TRIAL):  # drafting that pays brings the pause back down
        payoff.add(1.5)
    assert payoff.allows() and payoff.pause == Payoff.PAUSE


def test_the_old_module_path_still_imports_with_a_warning():
    import importlib
    import sys
    import warnings

    from hoshikage_llamacpp.engine import spec

    sys.modules.pop("hoshikage_llamacpp.engine.speculative", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("hoshikage_llamacpp.engine.speculative")
    assert old is spec and old.Speculation is Speculation
    assert any("engine.speculative moved to" in str(w.message) for w in caught)


# ---- on llama.cpp ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec(tiny_model_path):
    m = LlamaCppModel.load("tiny", str(tiny_model_path), LlamaOptions(n_ctx=1024, parallel=4))
    yield m
    m.close()


@pytest.fixture(scope="module")
def plain(tiny_model_path):
    options = LlamaOptions(n_ctx=1024, parallel=4, speculative="off")
    m = LlamaCppModel.load("tiny", str(tiny_model_path), options)
    yield m
    m.close()


@pytest.fixture
def chains(monkeypatch):
    """Every sampler chain a request makes, each recording the tokens it drew: the token
    ids of the output (a chain draws only tokens that are kept)."""
    made = []
    original = sampling.sampler_chain
    sample = sampling.SamplerChain.sample

    def sampler(plan, vocab, n_vocab, index):
        chain = original(plan, vocab, n_vocab, index)
        chain.drawn = []
        made.append(chain)
        return chain

    def recording(self, ctx, index=-1, drawn=None):
        token = sample(self, ctx, index, drawn)
        self.drawn.append(token)
        return token

    monkeypatch.setattr(model_module, "sampler_chain", sampler)
    monkeypatch.setattr(sampling.SamplerChain, "sample", recording)
    return made


def request(prompt, **fields):
    fields.setdefault("max_tokens", 80)
    fields.setdefault("temperature", 0)
    fields.setdefault("logit_bias", {EOS: -100})
    return GenerationRequest(prompt=prompt, **fields)


def start(model, req, n=1, cancel=None):
    sink = BlockingStream()
    model.generate(req, cancel or CancelToken(), sink, n)
    return sink


def collect(sink):
    """Per choice: its text and its last chunk."""
    texts, last = {}, {}
    for index, chunk in sink:
        texts[index] = texts.get(index, "") + chunk.text
        if chunk.finish_reason is not None:
            last[index] = chunk
    return texts, last


def both(spec, plain, chains, req, n=1):
    """The request on both models: (ids, texts, last chunks) of each."""
    out = []
    for model in (plain, spec):
        del chains[:]
        texts, last = collect(start(model, req, n))
        out.append(([list(c.drawn) for c in chains], texts, last))
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_output_is_the_same_token_ids_with_and_without_drafts(spec, plain, chains, prompt):
    (ids0, texts0, last0), (ids1, texts1, last1) = both(spec, plain, chains, request(prompt))
    assert ids1 == ids0
    assert texts1 == texts0
    assert last1[0].completion_tokens == last0[0].completion_tokens == 80
    assert last0[0].draft_tokens is None  # the plain model never drafts
    assert last1[0].draft_tokens >= last1[0].draft_accepted >= 0


class Steady(StepCost):
    """Step costs as Gemma 3 270M's (:data:`WIDE`), no longer recorded: the drafts' lengths
    then depend on the tokens alone, not on how busy the machine is while a test runs."""

    __slots__ = ()

    def __init__(self, n_ubatch: int) -> None:
        super().__init__(n_ubatch)
        for shapes, seconds in WIDE:
            for _ in range(3):
                super().record(shapes, seconds)

    def record(self, shapes, seconds) -> None:
        pass


def steady(model, monkeypatch):
    """``model``'s speculation prices its steps by :class:`Steady`."""
    speculation = model._engine.speculation
    monkeypatch.setattr(speculation, "step_cost", Steady(speculation.step_cost.n_ubatch))


def test_the_looping_prompts_really_accept_drafts(spec, chains, monkeypatch):
    steady(spec, monkeypatch)
    accepted = 0
    for prompt in PROMPTS:
        _texts, last = collect(start(spec, request(prompt)))
        accepted += last[0].draft_accepted
        assert len(chains[-1].drawn) == last[0].completion_tokens  # no draw wasted
    assert accepted > 80


#: An answer no prompt here holds, forced by a grammar (its tokens are the model's choice).
ANSWER = (
    "Quiet rivers carry amber leaves past seven old mills, where millers once weighed "
    "barley, rye and oats before dawn; now herons wait there alone."
)


@pytest.fixture(scope="module")
def pooled(tiny_model_path):
    options = LlamaOptions(n_ctx=1024, parallel=4, ngram_pool=True)
    m = LlamaCppModel.load("tiny", str(tiny_model_path), options)
    yield m
    m.close()


def asked_twice(model) -> tuple:
    """The ANSWER request twice: (text, last chunk) of each."""
    req = GenerationRequest(
        prompt="Write one sentence about autumn.",
        grammar=f"root ::= {json.dumps(ANSWER)}",
        max_tokens=200,
        temperature=0,
    )
    out = []
    for _ in range(2):
        texts, last = collect(start(model, req))
        out.append((texts[0], last[0]))
    return tuple(out)


def test_with_ngram_pool_an_answer_asked_for_again_is_drafted_from_the_first(
    pooled, plain, monkeypatch
):
    steady(pooled, monkeypatch)
    (text0, last0), _ = asked_twice(plain)
    (text1, last1), (text2, last2) = asked_twice(pooled)
    assert text0 == text1 == text2 == ANSWER
    tokens = last2.completion_tokens
    assert last1.completion_tokens == tokens == last0.completion_tokens > 60
    # The first time, its own history holds none of it: next to nothing is drafted. The
    # second time, the model's pool drafts all but the first token, and all is accepted.
    assert last1.draft_accepted < tokens // 10
    assert last2.draft_accepted >= tokens - 8
    assert last2.draft_tokens - last2.draft_accepted <= 2


def test_by_default_an_answer_asked_for_again_drafts_little_as_the_first_did(spec):
    (text1, last1), (text2, last2) = asked_twice(spec)
    assert text1 == text2 == ANSWER
    assert last1.draft_accepted < last1.completion_tokens // 10
    assert last2.draft_accepted < last2.completion_tokens // 10


def test_a_seeded_sampled_output_is_the_same_with_and_without_drafts(spec, plain, chains):
    for seed in (1, 2, 3):
        req = request(PROMPTS[0], temperature=0.7, seed=seed, max_tokens=120)
        (ids0, texts0, _), (ids1, texts1, _) = both(spec, plain, chains, req)
        assert ids1 == ids0 and texts1 == texts0


def test_a_stop_string_inside_an_accepted_run_ends_it_there(spec, plain, chains, monkeypatch):
    steady(spec, monkeypatch)
    texts, last = collect(start(spec, request(PROMPTS[0], max_tokens=120)))
    assert last[0].draft_accepted > 10
    text = texts[0]
    # a stop taken from late in the loop, where the run is drafted and accepted
    stop = text[len(text) * 3 // 4 : len(text) * 3 // 4 + 5]
    (ids0, texts0, last0), (ids1, texts1, last1) = both(
        spec, plain, chains, request(PROMPTS[0], max_tokens=120, stop=(stop,))
    )
    assert last1[0].finish_reason == last0[0].finish_reason == "stop"
    assert last1[0].stop_sequence == stop
    assert texts1 == texts0 and stop not in texts1[0]
    assert last1[0].completion_tokens == last0[0].completion_tokens
    assert ids1 == ids0


@pytest.mark.parametrize("max_tokens", [1, 2, 7, 13, 33])
def test_max_tokens_is_exact_when_it_falls_inside_a_draft(spec, plain, chains, max_tokens):
    req = request(PROMPTS[0], max_tokens=max_tokens)
    (ids0, texts0, last0), (ids1, texts1, last1) = both(spec, plain, chains, req)
    assert last1[0].completion_tokens == max_tokens == last0[0].completion_tokens
    assert last1[0].finish_reason == "length"
    assert ids1 == ids0 and texts1 == texts0


def test_logprobs_of_drafted_tokens_equal_the_plain_ones(spec, plain):
    def logprobs(model):
        entries = []
        for _index, chunk in start(model, request(PROMPTS[0], logprobs=True, top_logprobs=3)):
            entries += chunk.logprobs or ()
        return entries

    with_drafts, without = logprobs(spec), logprobs(plain)
    assert len(with_drafts) == len(without) == 80
    for a, b in zip(with_drafts, without, strict=True):
        assert a.bytes == b.bytes
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
        assert [t.bytes for t in a.top_logprobs] == [t.bytes for t in b.top_logprobs]


def test_json_schema_output_still_validates_and_drafts(spec, plain, chains):
    value = "the cat sat on the mat " * 6
    fmt = ResponseFormat(type="json_schema", schema={"const": value})
    req = request("json data", response_format=fmt, max_tokens=200, logit_bias=None)
    (ids0, texts0, _), (ids1, texts1, last1) = both(spec, plain, chains, req)
    assert json.loads(texts1[0]) == value
    assert ids1 == ids0
    assert last1[0].draft_accepted > 0


def test_a_drafted_tool_call_is_parsed_as_without_drafts(spec, plain, chains):
    note = "the cat sat on the mat " * 5
    tools = (
        {
            "type": "function",
            "function": {
                "name": "remember",
                "parameters": {
                    "type": "object",
                    "properties": {"note": {"const": note}},
                    "required": ["note"],
                },
            },
        },
    )
    req = GenerationRequest(
        messages=({"role": "user", "content": "the cat"},),
        max_tokens=200,
        temperature=0,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "remember"}},
    )
    (ids0, _, last0), (ids1, texts1, last1) = both(spec, plain, chains, req)
    assert ids1 == ids0 and texts1[0] == ""
    assert last1[0].finish_reason == last0[0].finish_reason == "tool_calls"
    (call,) = last1[0].tool_calls
    assert call["function"]["name"] == "remember"
    assert json.loads(call["function"]["arguments"]) == {"note": note}
    assert [c["function"] for c in last0[0].tool_calls] == [call["function"]]
    assert last1[0].draft_accepted > 0


# ---- the greedy fast path ----------------------------------------------------------------
#
# A greedy chain without penalties draws with numpy's argmax over all of a step's rows at
# once (sampling.SamplerChain.best), a logit bias applied to the few tokens it names.
# ``plain`` is made to draw through llama.cpp's chain (FAST_GREEDY off) as the reference.

FAST_CASES = {
    "no bias": {},
    "a ban and a bias": {"logit_bias": {EOS: -100, 5: 3.5}},
    "a bias that wins": {"logit_bias": {7: 40.0, 9: 40.0}, "max_tokens": 20},
    "json schema": {
        "response_format": ResponseFormat(
            type="json_schema", schema={"const": "the cat sat on the mat " * 4}
        ),
        "max_tokens": 120,
    },
    "a grammar": {"grammar": 'root ::= ("the cat " | "sat on " | "the mat ")+', "max_tokens": 60},
}


def fast_and_chain(spec, plain, chains, monkeypatch, req):
    """``req`` drafted with the fast path, then without drafts through the whole chain:
    (ids, texts, argmax flags) of each."""
    out = []
    for model, fast in ((spec, True), (plain, False)):
        monkeypatch.setattr(sampling, "FAST_GREEDY", fast)
        del chains[:]
        texts, last = collect(start(model, req))
        out.append(([list(c.drawn) for c in chains], texts, [c.argmax for c in chains], last))
    return out


@pytest.mark.parametrize("case", FAST_CASES)
@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_the_greedy_fast_path_draws_what_the_chain_draws(
    spec, plain, chains, monkeypatch, case, prompt
):
    req = request(prompt, **{"logit_bias": None, **FAST_CASES[case]})
    (ids1, texts1, fast1, last1), (ids0, texts0, fast0, _) = fast_and_chain(
        spec, plain, chains, monkeypatch, req
    )
    assert fast1 == [True] and fast0 == [False]
    assert ids1 == ids0 and texts1 == texts0
    assert len(ids1[0]) == last1[0].completion_tokens + (last1[0].finish_reason == "stop")


def test_the_looping_prompt_drafts_on_the_fast_path(spec, chains, monkeypatch):
    steady(spec, monkeypatch)
    monkeypatch.setattr(sampling, "FAST_GREEDY", True)
    _texts, last = collect(start(spec, request(PROMPTS[0], logit_bias=None, max_tokens=60)))
    assert chains[0].argmax and last[0].draft_accepted > 20


def test_a_ban_on_the_tokens_the_model_wants_draws_what_the_chain_draws(
    spec, plain, chains, monkeypatch
):
    # The row's best raw logit is banned at every step it would be drawn: those rows go
    # through the whole chain, the others compare the biased tokens with the argmax.
    monkeypatch.setattr(sampling, "FAST_GREEDY", False)
    del chains[:]
    collect(start(plain, request(PROMPTS[0], logit_bias=None, max_tokens=12)))
    favourites = sorted(set(chains[0].drawn))[:3]
    req = request(PROMPTS[0], logit_bias={t: -100 for t in favourites} | {EOS: -100})
    (ids1, texts1, fast1, last1), (ids0, texts0, _, _) = fast_and_chain(
        spec, plain, chains, monkeypatch, req
    )
    assert fast1 == [True]
    assert ids1 == ids0 and texts1 == texts0
    assert not set(favourites) & set(ids1[0]) and last1[0].completion_tokens == 80


@pytest.mark.parametrize(
    "fields",
    [
        {"repeat_penalty": 1.3},
        {"presence_penalty": 0.5, "grammar": 'root ::= ("the cat " | "the mat ")+'},
    ],
    ids=["penalty", "penalty and grammar"],
)
def test_a_penalty_keeps_the_whole_chain(spec, plain, chains, monkeypatch, fields):
    (ids1, texts1, fast1, _), (ids0, texts0, _, _) = fast_and_chain(
        spec, plain, chains, monkeypatch, request(PROMPTS[0], **fields)
    )
    assert fast1 == [False]
    assert ids1 == ids0 and texts1 == texts0


def test_n_choices_each_draft_on_their_own(spec, plain, chains):
    req = request(PROMPTS[2], temperature=0.9, seed=11, max_tokens=60)
    (ids0, texts0, last0), (ids1, texts1, last1) = both(spec, plain, chains, req, n=3)
    assert ids1 == ids0 and texts1 == texts0
    assert len(set(texts1.values())) > 1  # the choices really differ
    assert all(last1[i].draft_tokens is not None for i in range(3))


def test_four_concurrent_streams_mixing_drafting_and_not_keep_to_their_own(spec, plain):
    reqs = [
        request(PROMPTS[0], max_tokens=100),
        request(PROMPTS[1], max_tokens=100, speculative=False),
        request(PROMPTS[2], max_tokens=100),
        request(PROMPTS[3], max_tokens=100, speculative=False),
    ]
    alone = [collect(start(plain, r))[0][0] for r in reqs]
    sinks = [start(spec, r) for r in reqs]
    results = [collect(s) for s in sinks]
    assert [texts[0] for texts, _ in results] == alone
    drafted = [last[0].draft_tokens for _texts, last in results]
    assert drafted[1] is None and drafted[3] is None  # the requests that asked for none
    # The others speculate (their counts are reported); how much they draft depends on the
    # step costs measured on this machine (a loaded one may find no draft pays).
    assert drafted[0] is not None and drafted[2] is not None


def test_cancel_mid_run_then_the_slot_serves_the_next_request_right(spec, plain):
    cancel = CancelToken()
    sink = start(spec, request(PROMPTS[0], max_tokens=100_000), cancel=cancel)
    seen = threading.Event()
    chunks = []
    for _index, chunk in sink:
        chunks.append(chunk)
        if len(chunks) == 20:
            cancel.cancel()
            seen.set()
    assert chunks[-1].finish_reason == "cancelled"
    assert chunks[-1].completion_tokens < 100_000
    # the slot keeps what it decoded for reuse: its cache must hold exactly those tokens
    follow = request(PROMPTS[0] + " the", max_tokens=60)
    assert collect(start(spec, follow))[0] == collect(start(plain, follow))[0]


def test_a_conversation_continued_from_a_drafted_answer_reuses_a_correct_cache(spec, plain):
    for model in (spec, plain):
        first = collect(start(model, request(PROMPTS[2], max_tokens=50)))[0][0]
        model._conversation = collect(start(model, request(PROMPTS[2] + first, max_tokens=50)))
    assert spec._conversation[0] == plain._conversation[0]


def test_speculation_is_counted_and_can_be_turned_off(spec, plain):
    before = spec.stats()
    _texts, last = collect(start(spec, request(PROMPTS[0])))
    after = spec.stats()
    assert after.draft_tokens - before.draft_tokens == last[0].draft_tokens > 0
    assert after.draft_accepted - before.draft_accepted == last[0].draft_accepted > 0
    _texts, last = collect(start(spec, request(PROMPTS[0], speculative=False)))
    assert last[0].draft_tokens is None
    assert spec.stats().draft_tokens == after.draft_tokens
    assert plain.stats().draft_tokens == 0


# ---- a draft model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_drafted(tiny_model_path):
    """The tiny model drafting for itself: at temperature 0 every draft is right."""
    options = LlamaOptions(
        n_ctx=1024, parallel=4, speculative="draft", draft_model=str(tiny_model_path)
    )
    m = LlamaCppModel.load("tiny", str(tiny_model_path), options)
    yield m
    m.close()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_model_drafting_for_itself_has_every_draft_accepted(self_drafted, plain, chains, prompt):
    (ids0, texts0, _), (ids1, texts1, last1) = both(self_drafted, plain, chains, request(prompt))
    assert ids1 == ids0 and texts1 == texts0
    # wandering prompts too: the draft model does not need the output to repeat
    assert last1[0].draft_tokens > 40
    assert last1[0].draft_accepted == last1[0].draft_tokens


def test_draft_model_concurrent_streams_and_n_keep_to_their_own(self_drafted, plain, chains):
    reqs = [request(p, max_tokens=60) for p in PROMPTS[:4]]
    alone = [collect(start(plain, r))[0][0] for r in reqs]
    sinks = [start(self_drafted, r) for r in reqs]
    assert [collect(s)[0][0] for s in sinks] == alone
    req = request(PROMPTS[1], temperature=0.9, seed=5, max_tokens=40)
    (ids0, texts0, _), (ids1, texts1, _) = both(self_drafted, plain, chains, req, n=2)
    assert ids1 == ids0 and texts1 == texts0


def test_a_draft_model_drafts_at_most_16_a_step(tiny_model_path, monkeypatch):
    # The tiny model drafting for itself is always right and its steps are cheap, so the
    # planner would ask it for all of draft_max (32); each of its tokens is a decode the
    # planner does not price. A model of its own: its step costs measured by this run only.
    options = LlamaOptions(n_ctx=1024, speculative="draft", draft_model=str(tiny_model_path))
    assert options.draft_max == DRAFT_MAX > 16
    model = LlamaCppModel.load("tiny", str(tiny_model_path), options)
    try:
        asked = []
        propose_all = model._draft.propose_all
        monkeypatch.setattr(
            model._draft,
            "propose_all",
            lambda wanted: (asked.extend(k for _p, k in wanted), propose_all(wanted))[1],
        )
        _texts, last = collect(start(model, request(PROMPTS[1], max_tokens=120)))
    finally:
        model.close()
    assert last[0].draft_accepted == last[0].draft_tokens > 40
    assert max(asked) == 16


def test_the_draft_model_is_counted_in_the_memory(self_drafted):
    """Its weights and its context (its KV cache as allocated: the compute buffer's
    resident part, measured from the process's resident set, varies between runs)."""
    import llama_cpp

    target, draft = self_drafted._loaded, self_drafted._draft.loaded
    draft_kv = sum(placed.get("KV", 0) for placed in draft.placement.values())
    assert draft_kv > 0 and draft.context_bytes >= draft_kv
    sizes = [llama_cpp.llama_model_size(m.model.model) + m.context_bytes for m in (target, draft)]
    assert self_drafted.memory_bytes() == sum(sizes)


def test_a_draft_model_with_another_vocabulary_is_refused(tiny_model_path, tmp_path, monkeypatch):
    from hoshikage_core.errors import ModelLoadError

    from tests.support import models

    monkeypatch.setattr(
        models, "TINY_WORDS", tuple(w.replace("cat", "dog") for w in models.TINY_WORDS)
    )
    other = models.build_tiny_gguf(tmp_path / "other-vocab.gguf")
    options = LlamaOptions(n_ctx=256, parallel=1, draft_model=str(other))
    with pytest.raises(
        ModelLoadError, match=r"cannot draft for .*token \d+ is '▁d' in it and '▁c'"
    ):
        LlamaCppModel.load("tiny", str(tiny_model_path), options)


def test_a_copy_under_way_counts_before_it_is_long():
    # The first draft of a copy often comes from a 3-token match and misses; the copy then
    # agrees token for token. Its agreement beyond the shortest key (5 tokens) counts as
    # accepted tokens, up to Laplace's rule: it drafted again only once it was 12 long.
    length = DraftLength(16)
    length.update(4, 0)
    assert length.rate < 0.4
    assert length.acceptance(4) == pytest.approx(length.rate)  # 3-4 tokens: a phrase
    assert 0.8 < length.acceptance(10) <= 11 / 12
    assert length.acceptance(8) < length.acceptance(10)
    sampled = DraftLength(16, greedy=False)  # a sampled draw leaves a copy as easily
    sampled.update(4, 0)
    assert sampled.acceptance(10) == pytest.approx(sampled.rate)
