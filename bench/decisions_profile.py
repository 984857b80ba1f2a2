"""Where a Decisions request's time goes, engine-side, counted: bench/decisions.py's 20
questions over its ~1,000-token input, in-process on Gemma 3 270M (no server), against the
per-question way (20 one-token completions with the input cached and ``logit_bias`` on the
first tokens of the labels).

Usage::

    .venv/bin/python bench/decisions_profile.py [--reps 3] [--profile]

Reports for each way: the decode steps, the tokens put into batches, the rows with logits,
the engine thread's CPU time (``time.thread_time``: other load on the machine does not count,
but llama.cpp's second thread is not in it either) apart from and inside ``llama_decode``,
and the wall time. The token and row counts do not depend on the load; the times do, a
little. Relative figures for comparing changes, not the benchmark's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import decisions as bench  # noqa: E402

#: The context's ``n_ubatch`` (the model's default).
UBATCH = 512


def ubatches(seqs: list[int], n_ubatch: int) -> int:
    """How many ubatches (graph passes) llama.cpp splits a batch into whose token ``i`` is
    in sequence ``seqs[i]``, with one KV stream per sequence (``kv_unified = false``):
    ``llama_batch_allocr::split_equal(n_ubatch, sequential=true)``, which takes the same
    number of tokens from each sequence of a ubatch, and only sequences whose ids follow
    each other in the order they first come in the batch."""
    left = list(range(len(seqs)))
    count = 0
    while left:
        chosen: list[int] = []
        for i in left:
            s = seqs[i]
            if s not in chosen and (not chosen or s == chosen[-1] + 1):
                chosen.append(s)
        each = {s: [i for i in left if seqs[i] == s] for s in chosen}
        take = min(min(len(v) for v in each.values()), max(1, n_ubatch // len(chosen)))
        used = {i for v in each.values() for i in v[:take]}
        left = [i for i in left if i not in used]
        count += 1
    return count


class Counter:
    """Totals over the engine thread's decodes."""

    def __init__(self):
        self.reset()
        self.profile: cProfile.Profile | None = None
        self.trace = False
        #: One KV pool for every slot: llama.cpp splits a batch only by ``n_ubatch``.
        self.unified = False

    def reset(self) -> None:
        self.steps = 0
        self.tokens = 0
        self.rows = 0
        self.ubatches = 0
        self.step_cpu = 0.0
        self.decode_cpu = 0.0
        self.decode_wall = 0.0

    def install(self, engine_cls, llama_cpp) -> None:
        step = engine_cls._step
        decode = llama_cpp.llama_decode
        counter = self

        def counted_step(engine, out):
            if counter.profile is not None:
                counter.profile.enable()
            t0 = time.thread_time()
            try:
                return step(engine, out)
            finally:
                counter.step_cpu += time.thread_time() - t0
                if counter.profile is not None:
                    counter.profile.disable()

        def counted_decode(ctx, batch):
            n = batch.n_tokens
            counter.steps += 1
            counter.tokens += n
            seqs = [batch.seq_id[i][0] for i in range(n)] if batch.seq_id else [0] * n
            passes = -(-n // UBATCH) if counter.unified else ubatches(seqs, UBATCH)
            counter.ubatches += passes
            if counter.trace:
                runs = []
                for q in seqs:
                    if runs and runs[-1][0] == q:
                        runs[-1][1] += 1
                    else:
                        runs.append([q, 1])
                print("batch", runs, "ubatches", passes)
            # (a batch without a logits array asks for the last row's)
            counter.rows += sum(batch.logits[i] != 0 for i in range(n)) if batch.logits else 1
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return decode(ctx, batch)
            finally:
                counter.decode_cpu += time.thread_time() - c0
                counter.decode_wall += time.perf_counter() - w0

        engine_cls._step = counted_step
        llama_cpp.llama_decode = counted_decode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile the Decisions steps")
    parser.add_argument("--trace", action="store_true", help="print each batch's sequences")
    parser.add_argument(
        "--kv-unified", action="store_true", help="one KV pool for all slots (split_simple)"
    )
    parser.add_argument(
        "--pass-tokens", type=int, help="scoring.PASS_TOKENS for this run (0: steps not evened)"
    )
    args = parser.parse_args()

    import llama_cpp
    import msgspec
    from hoshikage_api.decisions import schemas, translate
    from hoshikage_core.protocol import BlockingStream, CancelToken, GenerationRequest
    from hoshikage_llamacpp.engine.core import Engine
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    from tests.support.models import gemma_path

    if args.pass_tokens is not None:
        from hoshikage_llamacpp.engine import scoring

        scoring.PASS_TOKENS = args.pass_tokens
    counter = Counter()
    counter.unified = args.kv_unified
    counter.install(Engine, llama_cpp)
    # No disk cache: a state an earlier run left would make the cold request warm.
    options = LlamaOptions(
        n_ctx=4096,
        parallel=4,
        n_threads=args.threads,
        isolation="none",
        cache_disk=0,
        kv_unified=args.kv_unified,
    )
    model = LlamaCppModel.load("gemma", str(gemma_path()), options)
    qs = bench.questions()

    def request_for(text: str):
        data = msgspec.convert(
            {"model": "gemma", "input": text, "questions": qs}, schemas.DecisionRequest
        )
        return data, translate.score_request(data)[0]

    def decide(text: str):
        data, request = request_for(text)
        sink = BlockingStream()
        model.score(request, CancelToken(), sink)
        ((_index, scores),) = list(sink)
        return translate.answers(data, scores), scores

    def one_token(prompt: str, bias: dict) -> None:
        req = GenerationRequest(
            prompt=prompt,
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=4,
            logit_bias=bias,
        )
        sink = BlockingStream()
        model.generate(req, CancelToken(), sink)
        list(sink)

    def per_question_prompts(text: str) -> tuple[list[str], list[dict]]:
        _data, request = request_for(text)
        prompts = [model.chat.render(p.messages, None) for p in request.prompts]
        biases = []
        for prompt, p in zip(prompts, request.prompts, strict=True):
            tokens = model.prompt_tokens(prompt)
            firsts = {model._continuation(tokens, c, {})[0] for c in p.continuations}
            biases.append({t: 50.0 for t in firsts})
        return prompts, biases

    def measure(fn) -> dict:
        counter.reset()
        wall = time.perf_counter()
        fn()
        wall = time.perf_counter() - wall
        return {
            "steps": counter.steps,
            "tokens": counter.tokens,
            "rows": int(counter.rows),
            "ubatches": counter.ubatches,
            "python_cpu_s": counter.step_cpu - counter.decode_cpu,
            "decode_cpu_s": counter.decode_cpu,
            "decode_wall_s": counter.decode_wall,
            "wall_s": wall,
        }

    ways: dict[str, list[dict]] = {"decisions": [], "decisions_cached": [], "per_question": []}
    engine = model._engine
    try:
        decide(bench.long_input(999))  # warm up
        for rep in range(args.reps):
            text = bench.long_input(rep * 3 + 2)
            if args.profile and rep == 0:
                counter.profile = cProfile.Profile()
            counter.trace = args.trace and rep == 0
            before = (engine.pool.window_misses, engine.pool.checkpoint_restores)
            ways["decisions"].append(measure(lambda text=text: decide(text)))
            counter.profile, profile = None, counter.profile
            counter.trace = False
            ways["decisions"][-1]["window_misses"] = engine.pool.window_misses - before[0]
            ways["decisions"][-1]["checkpoint_restores"] = (
                engine.pool.checkpoint_restores - before[1]
            )
            ways["decisions_cached"].append(measure(lambda text=text: decide(text)))
            prompts, biases = per_question_prompts(bench.long_input(rep * 3 + 3))

            def each(prompts=prompts, biases=biases):
                for p, b in zip(prompts, biases, strict=True):
                    one_token(p, b)

            ways["per_question"].append(measure(each))
            if profile is not None:
                buf = io.StringIO()
                pstats.Stats(profile, stream=buf).sort_stats("cumulative").print_stats(30)
                print(buf.getvalue())
        _answers, scores = decide(bench.long_input(2))
        print(
            f"input+questions as usage counts them: {scores.prompt_tokens} tokens, "
            f"shared prefix {scores.prefix_tokens}"
        )
    finally:
        model.close()
    for name, runs in ways.items():
        last = runs[-1]
        med = {k: statistics.median(r[k] for r in runs) for k in last}
        print(
            f"{name:17s} steps={last['steps']:3d} tokens={last['tokens']:5d} rows={last['rows']:4d} "
            f"ubatches={last['ubatches']:3d} "
            f"py_cpu={1e3 * med['python_cpu_s']:7.1f}ms decode_cpu={1e3 * med['decode_cpu_s']:7.1f}ms "
            f"decode_wall={1e3 * med['decode_wall_s']:7.1f}ms wall={1e3 * med['wall_s']:7.1f}ms"
            + (
                f" window_misses={last['window_misses']} restores={last['checkpoint_restores']}"
                if "window_misses" in last
                else ""
            )
        )


if __name__ == "__main__":
    main()
