"""Speculation on ÷ off at 1, 2, 4 and 8 concurrent streams, in-process (no server): the
workloads of bench/speculative.py and the batching benchmark's greedy stories, on Gemma 3
270M with 4 slots, on and off interleaved per repetition on the same loaded model.

Usage::

    .venv/bin/python bench/speculative_streams.py [--reps 2] [--tokens 120] [--streams 1,2,4,8]
        [--workload NAME ...]

Reports per workload and stream count, on and off: tokens per step, the modelled decode
cost per token (each step priced by the engine's own :class:`StepCost` for the ubatches
llama.cpp split it into, with the table as measured at the end of the run, so on and off
are priced alike; a figure other load on the machine changes only through that table),
and wall decode tok/s (first token anywhere to last anywhere; noisy on a shared machine).
The ratios on ÷ off are the lines to read. Issue 31's target: >= 0.98 everywhere.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import speculative as bench  # noqa: E402
from batching import SCHEMA  # noqa: E402  (the story schema of its json_schema ÷ plain row)

#: Gemma 3's end-of-generation ids, banned as the batching benchmark bans them.
GEMMA_EOG = {1: -100.0, 106: -100.0}


def workloads() -> dict[str, dict]:
    out = {
        name: {
            "prompt": body["prompt"],
            "temperature": body["temperature"],
            "seed": body.get("seed"),
        }
        for name, body in bench.workloads().items()
    }
    story = "Write a long story about a lighthouse keeper"
    out["chat_story"] = {"messages": [{"role": "user", "content": f"{story}."}], "temperature": 0.0}
    out["chat_json"] = {
        "messages": [{"role": "user", "content": f"{story}, as JSON."}],
        "temperature": 0.0,
        "response_format": {"type": "json_schema", "schema": SCHEMA},
    }
    out["story_greedy"] = {
        "prompt": "Write a long story about a lighthouse keeper number {i}.",
        "temperature": 0.0,
        "seed": None,
        "logit_bias": GEMMA_EOG,
    }
    return out


class Steps:
    """Every generation step's split, as the engine's speculation recorded it."""

    def __init__(self, speculation):
        from hoshikage_llamacpp.engine.spec.length import ubatches

        self.shapes: list = []
        record = speculation.record
        steps = self

        def logged(n, sequences, seconds):
            rows = speculation._rows  # noqa: SLF001 - a bench's look inside
            if rows is not None and len(rows) == sequences and sum(t for _, t in rows) == n:
                steps.shapes.append(ubatches(rows, speculation.step_cost.n_ubatch))
            record(n, sequences, seconds)

        speculation.record = logged


def run(model, body: dict, streams: int, tokens: int, speculative: bool):
    """Tokens generated after each stream's first, and the seconds from the first token
    anywhere to the last anywhere (decode only, as the batching benchmark times it)."""
    from hoshikage_core.protocol import (
        BlockingStream,
        CancelToken,
        GenerationRequest,
        ResponseFormat,
    )

    counts = [0] * streams
    firsts, lasts = [0.0] * streams, [0.0] * streams

    def one(i: int) -> None:
        fmt = body.get("response_format")
        req = GenerationRequest(
            prompt=body["prompt"].replace("{i}", str(i)) if "prompt" in body else None,
            messages=tuple(body["messages"]) if "messages" in body else None,
            response_format=ResponseFormat(**fmt) if fmt else None,
            temperature=body["temperature"],
            seed=body.get("seed"),
            max_tokens=tokens,
            logit_bias=body.get("logit_bias"),
            speculative=speculative,
        )
        sink = BlockingStream()
        model.generate(req, CancelToken(), sink, 1)
        for _index, chunk in sink:
            now = time.perf_counter()
            if not firsts[i]:
                firsts[i] = now
            lasts[i] = now
            if chunk.finish_reason is not None:
                counts[i] = chunk.completion_tokens - 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), max(lasts) - min(firsts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--workload", action="append")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    from tests.support.models import gemma_path

    options = LlamaOptions(
        n_ctx=4096, parallel=4, n_threads=args.threads, cache_ram=0, extra_buffers=False
    )
    model = LlamaCppModel.load("gemma", str(gemma_path()), options)
    speculation = model._engine.speculation  # noqa: SLF001 - a bench's look inside
    steps = Steps(speculation)
    names = args.workload or list(workloads())
    results: dict = {}
    try:
        for rep in range(args.reps):
            for name in names:
                for streams in (int(s) for s in args.streams.split(",")):
                    # Off and on alternate which goes first from one repetition to the next.
                    order = (False, True) if rep % 2 == 0 else (True, False)
                    for speculative in order:
                        first = len(steps.shapes)
                        n, wall = run(model, workloads()[name], streams, args.tokens, speculative)
                        shapes = steps.shapes[first:]
                        key = (name, streams, speculative)
                        results.setdefault(key, []).append((n, wall, shapes))
        cost = speculation.step_cost
        print(
            f"{'workload':13s} {'streams':>7s} {'tok/step on/off':>16s} "
            f"{'cost/tok off÷on':>16s} {'wall tps on÷off':>16s}"
        )
        for name in names:
            for streams in (int(s) for s in args.streams.split(",")):
                line = {}
                for speculative in (False, True):
                    runs = results[(name, streams, speculative)]
                    tokens = sum(r[0] for r in runs)
                    shapes = [s for r in runs for s in r[2]]
                    line[speculative] = {
                        "tok/step": tokens / max(len(shapes), 1),
                        "cost/tok": sum(cost.price(s) for s in shapes) / max(tokens, 1),
                        "tps": statistics.median(r[0] / r[1] for r in runs),
                        "tps_all": [round(r[0] / r[1], 1) for r in runs],
                    }
                on, off = line[True], line[False]
                print(
                    f"{name:13s} {streams:7d} {on['tok/step']:7.2f}/{off['tok/step']:<7.2f} "
                    f"{off['cost/tok'] / on['cost/tok']:16.3f} "
                    f"{on['tps'] / off['tps']:16.3f}   on {on['tps_all']} off {off['tps_all']}",
                    flush=True,
                )
        if "chat_json" in names and "chat_story" in names:
            for streams in (int(s) for s in args.streams.split(",")):
                for speculative in (False, True):
                    tps = [
                        statistics.median(r[0] / r[1] for r in results[(w, streams, speculative)])
                        for w in ("chat_json", "chat_story")
                    ]
                    print(
                        f"json ÷ plain at {streams} streams, speculation "
                        f"{'on ' if speculative else 'off'}: {tps[0] / tps[1]:.3f}"
                    )
        print(
            "payoff:",
            {n: (round(p.ratio, 3), p.pause, p.wait) for n, p in speculation.payoff.items()},
        )
    finally:
        model.close()


if __name__ == "__main__":
    main()
