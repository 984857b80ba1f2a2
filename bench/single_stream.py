"""Where one stream's time goes, beside llama-server: one greedy completion at a time,
speculation off, 4 slots on both servers, reps interleaved (which server goes first
alternates):

- **ms a token, given whole and streamed**: the prompt is read first (a 1-token request),
  so the timed request decodes only; wall time over the tokens. Hoshikage ÷ llama-server,
  the median of the per-rep ratios, for each;
- **each thread's CPU a token** while a streamed answer is decoded (Linux,
  ``/proc/PID/task/*/stat``): the server process, the model process's threads, and
  llama-server's, the busiest first;
- **a bare loop** over the same context in this process (one token a step, ``llama_decode``,
  numpy's argmax, nothing else): what llama-cpp-python itself reaches, the floor of the
  stack; with ``--bare``.

Both cores are busy with llama.cpp's threads during a decode, so every other CPU cost of a
token (the server's event loop, the client) is paid in wall time. Diagnostics, not targets:
the single-stream targets are ``bench/run.py``'s.

Usage: ``.venv/bin/python bench/single_stream.py --llama-server PATH [--reps 5] [--tokens
300] [--bare]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))

from batching import GEMMA_EOG  # noqa: E402
from run import default_model, hoshikage_server, physical_cores, start_llama_server, tree  # noqa: E402

SLOTS = 4


def threads_cpu(pids: list[int]) -> dict[tuple[int, str], float]:
    """(pid, thread name and id) -> CPU seconds, user and system, of every thread of
    ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            out[pid, f"{name}:{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def timed(http, body: dict, stream: bool, tokens: int) -> float:
    """ms a token of one request whose prompt is read already."""
    start = time.perf_counter()
    if stream:
        with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            r.raise_for_status()
            for _line in r.iter_lines():
                pass
    else:
        http.post("/v1/completions", json=body).raise_for_status()
    return (time.perf_counter() - start) / tokens * 1e3


def bare_loop(model: Path, args, tokens: int) -> tuple[float, float]:
    """(ms a token, µs of Python a step) of a bare greedy loop over the context Hoshikage's
    loader makes."""
    import llama_cpp
    import numpy as np
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    loaded = LlamaCppModel.load(
        "a", str(model), LlamaOptions(n_ctx=args.n_ctx, parallel=SLOTS, n_threads=args.threads)
    )
    try:
        ctx = loaded._engine._ctx
        vocab = llama_cpp.llama_model_get_vocab(llama_cpp.llama_get_model(ctx))
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        text = b"Write a long story about a lighthouse keeper."
        ids = (llama_cpp.llama_token * 64)()
        n = llama_cpp.llama_tokenize(vocab, text, len(text), ids, 64, True, False)
        batch = llama_cpp.llama_batch_init(512, 0, 1)

        def fill(tokens_: list[int], pos: int) -> None:
            batch.n_tokens = len(tokens_)
            for i, token in enumerate(tokens_):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos + i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i == len(tokens_) - 1

        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, -1, -1)
        fill(list(ids[:n]), 0)
        llama_cpp.llama_decode(ctx, batch)
        pos, decoding, start = n, 0.0, time.perf_counter()
        for _ in range(tokens):
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            fill([int(row.argmax())], pos)
            pos += 1
            began = time.perf_counter()
            llama_cpp.llama_decode(ctx, batch)
            llama_cpp.llama_synchronize(ctx)
            decoding += time.perf_counter() - began
        wall = time.perf_counter() - start
        llama_cpp.llama_batch_free(batch)
        return wall / tokens * 1e3, (wall - decoding) / tokens * 1e6
    finally:
        loaded.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--llama-server", required=True, help="llama.cpp's llama-server binary")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--bare", action="store_true", help="also the bare llama-cpp-python loop")
    args = p.parse_args(argv)
    import httpx

    model = args.model or default_model()
    settings = SimpleNamespace(n_ctx=args.n_ctx, threads=args.threads, flash_attn="auto")
    hoshikage, _cfg = hoshikage_server(model, settings, concurrency=SLOTS, parallel=SLOTS)
    peer = start_llama_server(args.llama_server, model, settings, slots=SLOTS)
    servers = {"hoshikage": (hoshikage, {"speculative": False}), "llama-server": (peer, {})}
    times: dict = {}
    cpu: dict = {}
    try:
        for server, extra in servers.values():  # warm: first-request imports, graphs
            with httpx.Client(base_url=server.base_url, timeout=600) as http:
                http.post(
                    "/v1/completions", json={"model": "a", "prompt": "Hi", "max_tokens": 8, **extra}
                ).raise_for_status()
        for rep in range(args.reps):
            for stream in (False, True):
                order = list(servers) if rep % 2 == 0 else list(servers)[::-1]
                for name in order:
                    server, extra = servers[name]
                    body = {
                        "model": "a",
                        "prompt": f"[{rep}-{stream}] Write a long story about a lighthouse keeper.",
                        "max_tokens": args.tokens,
                        "temperature": 0,
                        "logit_bias": GEMMA_EOG,  # the whole answer: no early end of text
                        **extra,
                    }
                    pids = tree(server.proc.pid)
                    with httpx.Client(base_url=server.base_url, timeout=600) as http:
                        # The prompt first, outside the times and the CPU counted.
                        http.post(
                            "/v1/completions", json={**body, "max_tokens": 1}
                        ).raise_for_status()
                        before = threads_cpu(pids)
                        ms = timed(http, body, stream, args.tokens)
                        after = threads_cpu(pids)
                    times.setdefault((name, stream), []).append(ms)
                    if stream:
                        for key, seconds in after.items():
                            spent = seconds - before.get(key, seconds)
                            cpu.setdefault((name, key), []).append(spent / args.tokens * 1e3)
    finally:
        hoshikage.stop()
        peer.stop()

    print(f"\n{model.name}, {args.threads} threads, {SLOTS} slots, {args.tokens} greedy tokens,")
    print(f"speculation off, {args.reps} interleaved reps: ms a token, median [range]\n")
    for stream in (False, True):
        ratios = [
            a / b
            for a, b in zip(times["hoshikage", stream], times["llama-server", stream], strict=True)
        ]
        cells = "  ".join(
            f"{name} {statistics.median(times[name, stream]):.2f} "
            f"[{min(times[name, stream]):.2f}-{max(times[name, stream]):.2f}]"
            for name in servers
        )
        label = "streamed" if stream else "whole   "
        print(f"{label}  {cells}  time ÷ llama-server {statistics.median(ratios):.3f}")
    print("\nCPU a streamed token, ms (median over the reps), by thread:")
    for name in servers:
        rows = sorted(
            ((statistics.median(v), key) for (server, key), v in cpu.items() if server == name),
            reverse=True,
        )
        for ms, (pid, thread) in rows:
            if ms >= 0.01:
                print(f"  {name:12s} pid {pid:<7d} {thread:28s} {ms:7.3f}")
    if args.bare:
        ms, python_us = bare_loop(model, settings, args.tokens)
        print(
            f"\nbare llama-cpp-python loop: {ms:.2f} ms a token, {python_us:.0f} µs of Python a step"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
