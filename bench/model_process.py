"""Each model in a process of its own (``isolation = "process"``, the default) beside the same
model inside the server (``"none"``), through the server's HTTP API with the official
client, reps interleaved (process, in-process, in-process, process, ...):

- **load** of a model on an idle server, and **switch** (a request for B right after one for
  A, ``max_loaded = 1``) minus the same request with B loaded; **switch again**, back to A a
  second later, the same way (with a process per model, the first switch starts a spare
  process beside B's load, and this one loads there);
- **single stream**: time to first token and decode tok/s of a streamed completion;
- **aggregate** decode tok/s of 4 and of 16 concurrent streaming clients (4 slots).

Usage: ``.venv/bin/python bench/model_process.py [--model PATH] [--reps 3] [--max-tokens 96]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from run import (  # noqa: E402
    HttpEngine,
    default_model,
    physical_cores,
    prompt_for,
    summary,
    timed,
)
from run import hoshikage_server as server_for  # noqa: E402

MODES = ("process", "none")


def aggregate(base_url: str, clients: int, max_tokens: int) -> float:
    """Decode tok/s of ``clients`` streams at once: every streamed token over the wall time."""
    counts = [0] * clients

    def client(i: int) -> None:
        for _ in HttpEngine(base_url, "a").stream(prompt_for(i), max_tokens):
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def one_rep(model: Path, args, isolation: str) -> dict:
    import httpx

    server, _ = server_for(model, args, concurrency=16, parallel=4, isolation=isolation)
    try:
        http = httpx.Client(base_url=server.base_url, timeout=600)
        t0 = time.perf_counter()
        http.post("/api/models/a/load").raise_for_status()
        load = time.perf_counter() - t0
        a, b = HttpEngine(server.base_url, "a"), HttpEngine(server.base_url, "b")
        timed(a, prompt_for(999), 4)
        t0 = time.perf_counter()
        timed(b, "Hi", 1)  # a unloads, b loads
        switch = time.perf_counter() - t0
        t0 = time.perf_counter()
        timed(b, "Hi", 1)
        switch -= time.perf_counter() - t0
        # Back to a: with a process per model, the second switch loads into the spare that
        # started beside b's load (lifecycle/spare.py); the first had none.
        time.sleep(1.0)
        t0 = time.perf_counter()
        timed(a, "Hi", 1)
        switch_again = time.perf_counter() - t0
        t0 = time.perf_counter()
        timed(a, "Hi", 1)
        switch_again -= time.perf_counter() - t0
        ttft, tps = timed(a, prompt_for(7), args.max_tokens)
        return {
            "load_s": load,
            "switch_s": switch,
            "switch_again_s": switch_again,
            "ttft_s": ttft,
            "decode_tps": tps,
            "aggregate_4_tps": aggregate(server.base_url, 4, args.max_tokens),
            "aggregate_16_tps": aggregate(server.base_url, 16, args.max_tokens),
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=physical_cores())
    args = parser.parse_args(argv)
    model = args.model or default_model()
    samples: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for rep in range(args.reps):
        for mode in MODES if rep % 2 == 0 else reversed(MODES):
            samples[mode].append(one_rep(model, args, mode))
    rows = {
        mode: {key: summary([s[key] for s in runs]) for key in runs[0]}
        for mode, runs in samples.items()
    }
    ratios = {
        key: statistics.median(
            p[key] / n[key] for p, n in zip(samples["process"], samples["none"], strict=True)
        )
        for key in samples["process"][0]
    }
    print(
        json.dumps({"model": str(model), "rows": rows, "process_over_in_process": ratios}, indent=1)
    )
    print("\nmodel process ÷ in-process (median of interleaved reps):")
    for key, value in ratios.items():
        print(f"  {key:18s} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
