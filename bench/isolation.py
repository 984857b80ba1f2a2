"""Single-stream decode through a model in a child process against the same model in-process,
and (with ``--rpc-server``) with its layers on a ggml-rpc-server over loopback.

    .venv/bin/python bench/isolation.py [--model PATH] [--reps 5] [--tokens 128] [--rpc-server PATH]

Each variant is loaded once; the reps are interleaved (in-process, child, RPC, in-process,
...) so that load from other processes on the machine hits every variant alike. Decode
tok/s counts the tokens after the first one over the time after the first chunk, as
bench/run.py does. Reported: the median and spread of each, and the median ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "The history of the printing press begins",
    "A short guide to growing tomatoes at home:",
    "Once upon a time, in a small village by the sea,",
]


def decode_tps(model, prompt: str, tokens: int) -> float:
    from hoshikage_core.protocol import GenerationRequest, stream

    request = GenerationRequest(prompt=prompt, max_tokens=tokens, temperature=0)
    first = None
    count = 0
    for _index, chunk in stream(model, request):
        if first is None:
            first = time.perf_counter()
        if chunk.finish_reason:
            count = chunk.completion_tokens or 0
    return (count - 1) / (time.perf_counter() - first)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF file (default: Gemma 3 270M from the demo extra)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--rpc-server", help="ggml-rpc-server executable: also measure over loopback RPC"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from hoshikage_llamacpp.lifecycle.isolation import ProcessModel
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    path = args.model
    if path is None:
        from tests.support.models import gemma_path

        path = str(gemma_path())
    common = dict(n_ctx=1024, parallel=1, n_threads=args.threads, cache_ram=0)
    variants = {
        "in-process": LlamaCppModel.load("local", path, LlamaOptions(**common)),
        "child process": ProcessModel.load(
            "child", path, LlamaOptions(isolation="process", **common)
        ),
    }
    rpc = None
    if args.rpc_server:
        from tests.support.rpc import RpcServer

        rpc = RpcServer(args.rpc_server, threads=args.threads or 1).start(
            Path("/tmp/bench-rpc-server.log")
        )
        variants["rpc loopback"] = ProcessModel.load(
            "rpc", path, LlamaOptions(rpc_servers=rpc.endpoint, **common)
        )
    results: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for model in variants.values():  # warm-up
            decode_tps(model, PROMPTS[0], 16)
        for rep in range(args.reps):
            for name, model in variants.items():
                tps = decode_tps(model, PROMPTS[rep % len(PROMPTS)], args.tokens)
                results[name].append(tps)
            print(
                f"rep {rep + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in results.items()),
                flush=True,
            )
    finally:
        for model in variants.values():
            model.close()
        if rpc is not None:
            rpc.stop()
    base = results["in-process"]
    print(f"\ndecode tok/s, single stream, {args.tokens} tokens, {args.reps} interleaved reps")
    for name, values in results.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"  {name:14s} median {statistics.median(values):7.1f}  min {min(values):7.1f}  max {max(values):7.1f}"(
                f"  ratio to in-process: median {statistics.median(ratios):.3f} (per rep "
                f"{min(ratios):.3f}..{max(ratios):.3f})"
            )
        )


if __name__ == "__main__":
    main()
