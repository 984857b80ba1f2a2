"""Where a speculative step's time goes, engine-side: the Python work of a step (planning
drafts, filling the batch, verifying, the per-token handling) apart from ``llama_decode``.

Usage::

    .venv/bin/python bench/speculative_profile.py [--tokens 200] [--profile] [--workload NAME]

Runs bench/speculative.py's workloads on Gemma 3 270M in-process (no server), speculation
on and off, and reports per workload: steps, tokens, the Python CPU time of the engine
thread per step and per token (``time.thread_time``, so other load on the machine does not
count), the decode's wall time per step, and the modelled decode cost per token (steps plus
``TOKEN_COST`` per drafted token, in one-token steps: how a draft-length policy fares, with
no noise from the machine). ``--profile`` adds a cProfile of the engine thread's steps.
Relative figures for comparing changes, not the benchmark's tok/s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import speculative as bench  # noqa: E402


class Clock:
    """Totals over the engine thread's steps, decode included and apart."""

    def __init__(self):
        self.steps = 0
        self.step_cpu = 0.0
        self.decode_cpu = 0.0
        self.decode_wall = 0.0
        self.profile: cProfile.Profile | None = None

    def install(self, engine_cls, llama_cpp) -> None:
        step = engine_cls._step
        decode, sync = llama_cpp.llama_decode, llama_cpp.llama_synchronize
        clock = self

        def timed_step(engine, out):
            if clock.profile is not None:
                clock.profile.enable()
            t0 = time.thread_time()
            n = engine.steps
            try:
                return step(engine, out)
            finally:
                if engine.steps != n:
                    clock.steps += 1
                    clock.step_cpu += time.thread_time() - t0
                if clock.profile is not None:
                    clock.profile.disable()

        def timed(fn):
            def call(*args):
                c0, w0 = time.thread_time(), time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    clock.decode_cpu += time.thread_time() - c0
                    clock.decode_wall += time.perf_counter() - w0

            return call

        engine_cls._step = timed_step
        llama_cpp.llama_decode = timed(decode)
        llama_cpp.llama_synchronize = timed(sync)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--workload", action="append")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--on-only", action="store_true", help="skip the runs without drafts")
    args = parser.parse_args()

    import llama_cpp
    from hoshikage_core.protocol import BlockingStream, CancelToken, GenerationRequest
    from hoshikage_llamacpp.engine.core import Engine
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    from tests.support.models import gemma_path

    clock = Clock()
    clock.install(Engine, llama_cpp)
    options = LlamaOptions(n_ctx=4096, parallel=4, n_threads=args.threads, cache_ram=0)
    model = LlamaCppModel.load("gemma", str(gemma_path()), options)
    names = args.workload or list(bench.workloads())
    try:
        for name in names:
            body = bench.workloads()[name]
            for speculative in (True,) if args.on_only else (False, True):
                req = GenerationRequest(
                    prompt=body["prompt"],
                    temperature=body["temperature"],
                    seed=body.get("seed"),
                    max_tokens=args.tokens,
                    speculative=speculative,
                )
                # The prompt once, so the measured run decodes only its answer.
                warm = GenerationRequest(prompt=body["prompt"], max_tokens=1, temperature=0)
                list(_run(model, warm, CancelToken, BlockingStream))
                clock.steps, clock.step_cpu, clock.decode_cpu, clock.decode_wall = 0, 0.0, 0.0, 0.0
                if args.profile and speculative:
                    clock.profile = cProfile.Profile()
                wall = time.perf_counter()
                last = _run(model, req, CancelToken, BlockingStream)[-1]
                wall = time.perf_counter() - wall
                tokens = last.completion_tokens
                py = clock.step_cpu - clock.decode_cpu
                print(
                    f"{name:13s} spec={'on ' if speculative else 'off'} tokens={tokens:4d} "
                    f"steps={clock.steps:4d} tok/step={tokens / max(clock.steps, 1):5.2f} "
                    f"py/step={1e6 * py / max(clock.steps, 1):6.0f}us "
                    f"py/token={1e6 * py / max(tokens, 1):6.0f}us "
                    f"decode/step={1e3 * clock.decode_wall / max(clock.steps, 1):6.2f}ms "
                    f"drafts={last.draft_accepted}/{last.draft_tokens} "
                    f"cost/token={_cost(clock.steps, last.draft_tokens or 0) / max(tokens, 1):5.3f} "
                    f"wall={wall:5.2f}s",
                    flush=True,
                )
                if clock.profile is not None:
                    text = io.StringIO()
                    stats = pstats.Stats(clock.profile, stream=text)
                    stats.sort_stats("tottime").print_stats(25)
                    print(text.getvalue())
                    clock.profile = None
    finally:
        model.close()


def _cost(steps: int, drafted: int) -> float:
    """The decode time of a run in one-token steps, as the draft-length policy models it
    (:data:`~hoshikage_llamacpp.engine.spec.length.TOKEN_COST` per extra token with logits): a
    figure the machine's load does not change."""
    from hoshikage_llamacpp.engine.spec.length import TOKEN_COST

    return steps + TOKEN_COST * drafted


def _run(model, req, CancelToken, BlockingStream) -> list:
    sink = BlockingStream()
    model.generate(req, CancelToken(), sink, 1)
    chunks = [chunk for _index, chunk in sink]
    return chunks


if __name__ == "__main__":
    main()
