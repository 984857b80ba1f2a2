"""The speculative-decoding benchmark: Hoshikage with speculation off and on, beside
llama-server without speculation and with each of its n-gram types, on the workloads of
docs/performance.md (input-grounded copies, a sampled story, 4 concurrent copies).

Usage::

    .venv/bin/python bench/speculative.py [--reps 2] [--tokens 200] [--llama-server PATH]

Hoshikage runs one server (``parallel = 4``); "off" is the same server with the request
extension ``"speculative": false``, so on and off share the process, the model and the
cache. Each llama-server type is a server of its own (``-np 4``). Reps are interleaved
between all of them. Decode tok/s is measured at the client over the stream, the same way
for every server: (completion tokens - 1) / (last content event - first content event).
Acceptance comes from each answer's ``timings`` (``draft_n``, ``draft_n_accepted``); the
accepted run length is the completion tokens per decode step, counted from the stream (a
step's tokens arrive together, in one burst of events).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402

SLOTS = 4
#: llama-server's n-gram types (``--spec-type``), each with ``--spec-draft-n-max 16``, which
#: ``ngram-mod`` does not read: it drafts 48 to 64 tokens or none (its own
#: ``--spec-ngram-mod-n-min`` / ``-n-max`` defaults, ``common/common.h``), from one n-gram pool
#: shared by all its sequences and requests.
LLAMA_TYPES = ("none", "ngram-simple", "ngram-map-k", "ngram-mod")
#: Events closer than this belong to one decode step.
BURST_S = 0.002


def prose() -> str:
    """About 600 tokens of English prose: the history section of Python's LICENSE."""
    path = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    text = (path / "LICENSE.txt").read_text()
    start = text.index("Python was created")
    return text[start : start + 2600].rsplit("\n\n", 1)[0]


CODE = '''def summarize(records, threshold=0.5, limit=None):
    """Group records by their category and report totals above a threshold."""
    totals = {}
    seen = 0
    for x in records:
        if limit is not None and seen >= limit:
            break
        seen += 1
        category = x.get("category", "unknown")
        value = float(x.get("value", 0))
        if value < threshold:
            continue
        entry = totals.setdefault(category, {"count": 0, "sum": 0.0, "max": None})
        entry["count"] += 1
        entry["sum"] += value
        if entry["max"] is None or value > entry["max"]:
            entry["max"] = value
    report = []
    for category, entry in sorted(totals.items()):
        mean = entry["sum"] / entry["count"] if entry["count"] else 0.0
        report.append(
            {
                "category": category,
                "count": entry["count"],
                "mean": round(mean, 3),
                "max": entry["max"],
            }
        )
    x = len(report)
    if x == 0:
        return {"categories": [], "seen": seen, "empty": True}
    best = max(report, key=lambda item: item["mean"])
    worst = min(report, key=lambda item: item["mean"])
    return {
        "categories": report,
        "seen": seen,
        "best": best["category"],
        "worst": worst["category"],
        "spread": round(best["mean"] - worst["mean"], 3),
        "empty": False,
    }
'''

RECORD = {
    "id": 48213,
    "title": "Replace the worn bearings on conveyor line 3",
    "status": "open",
    "priority": "high",
    "assignee": {"name": "Marta Jensen", "team": "maintenance", "shift": "night"},
    "created": "2026-03-14T08:21:00Z",
    "due": "2026-03-21T17:00:00Z",
    "tags": ["mechanical", "conveyor", "safety", "line-3"],
    "parts": [
        {"sku": "BRG-6204", "name": "deep groove ball bearing", "quantity": 4},
        {"sku": "SEAL-47", "name": "shaft seal", "quantity": 2},
        {"sku": "GRS-EP2", "name": "lithium grease cartridge", "quantity": 1},
    ],
    "location": {"building": "B", "floor": 1, "bay": 12},
    "estimate_hours": 6.5,
    "notes": "Noise reported by the day shift; vibration above the alarm limit twice.",
}


def workloads() -> dict[str, dict]:
    """name -> completion request body (without model/stream)."""
    text = prose()
    return {
        "repeat_prose": {
            "prompt": f"Repeat the following text exactly.\n\nText:\n{text}\n\nRepeated text:\n",
            "temperature": 0,
        },
        "rename_code": {
            "prompt": "Rewrite this Python function with the variable `x` renamed to `count`.\n\n"
            f"```python\n{CODE}```\n\nRewritten:\n```python\n",
            "temperature": 0,
        },
        "json_edit": {
            "prompt": 'Here is a JSON object. Output the same object with "status" changed to '
            f'"closed".\n\n{json.dumps(RECORD, indent=2)}\n\nOutput:\n',
            "temperature": 0,
        },
        "story_t08": {
            "prompt": "Once upon a time, in a small village by the sea, there lived",
            "temperature": 0.8,
            "seed": 42,
        },
    }


GROUNDED = ("repeat_prose", "rename_code", "json_edit")
#: The input-grounded prompts as this many concurrent streams (``grounded_xN``: the three in
#: turn; with 4 slots, 8 streams means 4 wait).
CONCURRENT = (2, 4, 8)


def stream(http, body: dict) -> dict:
    """One streamed completion: decode tok/s, tokens, steps and the draft counts."""
    arrivals, usage, timings = [], None, None
    with http.stream(
        "POST",
        "/v1/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        headers={"Connection": "close"},
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage = data["usage"]
            if data.get("timings"):
                timings = data["timings"]
            choice = (data.get("choices") or [{}])[0]
            if choice.get("text"):
                arrivals.append(time.perf_counter())
    tokens = (usage or {}).get("completion_tokens") or len(arrivals)
    steps = 1 + sum(1 for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a > BURST_S)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else math.nan
    return {
        "tps": (tokens - 1) / span if span > 0 else math.nan,
        "tokens": tokens,
        "steps": steps,
        "draft_n": (timings or {}).get("draft_n", 0),
        "draft_n_accepted": (timings or {}).get("draft_n_accepted", 0),
    }


def concurrent(factory, bodies: list[dict]) -> dict:
    """Aggregate decode tok/s of the bodies streamed at once."""
    results: list = [None] * len(bodies)
    spans: list = [None] * len(bodies)

    def one(i: int) -> None:
        with factory() as http:
            t0 = time.perf_counter()
            results[i] = stream(http, bodies[i])
            spans[i] = (t0, time.perf_counter())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tokens = sum(r["tokens"] for r in results)
    wall = max(e for _s, e in spans) - min(s for s, _e in spans)
    return {
        "tps": tokens / wall,
        "tokens": tokens,
        "steps": sum(r["steps"] for r in results),
        "draft_n": sum(r["draft_n"] for r in results),
        "draft_n_accepted": sum(r["draft_n_accepted"] for r in results),
    }


def start_llama(binary: str, model: Path, args, spec_type: str) -> bench.Server:
    port = bench.free_port()
    argv = [
        binary,
        "-m",
        str(model),
        "-c",
        str(args.n_ctx * SLOTS),
        "-np",
        str(SLOTS),
        "-t",
        str(args.threads),
        "-fa",
        "on",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *bench.peer_flags(),
    ]
    if spec_type != "none":
        argv += ["--spec-type", spec_type, "--spec-draft-n-max", "16"]
    # Its own libraries first, wherever its build put them (a copied build keeps working).
    return bench.Server(argv, port, env={"LD_LIBRARY_PATH": str(Path(binary).resolve().parent)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--llama-server", default=None, help="llama.cpp's llama-server binary")
    p.add_argument("--only", nargs="*", default=None, help="workload names (default: all)")
    p.add_argument(
        "--llama-types",
        nargs="*",
        default=list(LLAMA_TYPES),
        help="llama-server --spec-type values",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    bench.flash_attn_argument(p)
    args = p.parse_args(argv)
    import httpx

    model = args.model or bench.default_model()
    loads = workloads()
    names = args.only or [*loads, *(f"grounded_x{n}" for n in CONCURRENT)]
    servers: dict[str, bench.Server] = {}
    engines: dict[str, tuple[str, dict]] = {}  # engine -> (server name, extra body)
    try:
        hk, _cfg = bench.hoshikage_server(model, args, concurrency=SLOTS, parallel=SLOTS)
        servers["hoshikage"] = hk
        engines["hoshikage off"] = ("hoshikage", {"speculative": False})
        engines["hoshikage on"] = ("hoshikage", {})
        if args.llama_server:
            for kind in args.llama_types:
                servers[kind] = start_llama(args.llama_server, model, args, kind)
                engines[f"llama-server {kind}"] = (kind, {})
        factories = {
            name: (lambda url=s.base_url: httpx.Client(base_url=url, timeout=900))
            for name, s in servers.items()
        }
        for factory in factories.values():  # warm-up
            with factory() as http:
                http.post(
                    "/v1/completions", json={"model": "a", "prompt": "Hi", "max_tokens": 4}
                ).raise_for_status()
        # Every server reads each prompt once before the reps: a concurrent workload's
        # wall holds its prefill, and "on" ran right after "off" on the same server, so
        # its first rep found the prompts cached where the others read them cold.
        for factory in factories.values():
            with factory() as http:
                for body in loads.values():
                    http.post(
                        "/v1/completions", json={"model": "a", **body, "max_tokens": 1}
                    ).raise_for_status()
        samples: dict = {(w, e): [] for w in names for e in engines}
        for rep in range(args.reps):
            for workload in names:
                for engine, (server, extra) in engines.items():
                    base = {"model": "a", "max_tokens": args.tokens, **extra}
                    if workload.startswith("grounded_x"):
                        n = int(workload.removeprefix("grounded_x"))
                        bodies = [{**base, **loads[GROUNDED[i % len(GROUNDED)]]} for i in range(n)]
                        result = concurrent(factories[server], bodies)
                    else:
                        with factories[server]() as http:
                            result = stream(http, {**base, **loads[workload]})
                    samples[(workload, engine)].append(result)
                    print(
                        f"rep {rep} {workload:13} {engine:26} {result['tps']:7.1f} tok/s "
                        f"drafts {result['draft_n_accepted']}/{result['draft_n']} "
                        f"tokens/step {result['tokens'] / max(result['steps'], 1):.2f}",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    table = summarize(samples, names, list(engines))
    report(table, names, list(engines), args)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


def summarize(samples: dict, names: list[str], engines: list[str]) -> dict:
    out: dict = {}
    for w in names:
        for e in engines:
            runs = samples[(w, e)]
            drafted = sum(r["draft_n"] for r in runs)
            accepted = sum(r["draft_n_accepted"] for r in runs)
            out.setdefault(w, {})[e] = {
                "tps": statistics.median(r["tps"] for r in runs),
                "tps_range": [min(r["tps"] for r in runs), max(r["tps"] for r in runs)],
                "acceptance": accepted / drafted if drafted else None,
                "tokens_per_step": sum(r["tokens"] for r in runs)
                / max(sum(r["steps"] for r in runs), 1),
            }
    return out


def report(table: dict, names: list[str], engines: list[str], args) -> None:
    print(
        f"\nGemma 3 270M, {args.threads} threads, {args.tokens} tokens, median of {args.reps} "
        f"interleaved reps; decode tok/s (x: over hoshikage off), acceptance, tokens per step\n"
    )
    print("| workload | " + " | ".join(engines) + " |")
    print("|---" * (len(engines) + 1) + "|")
    for w in names:
        off = table[w]["hoshikage off"]["tps"]
        cells = []
        for e in engines:
            r = table[w][e]
            acc = f", {r['acceptance']:.0%} acc." if r["acceptance"] is not None else ""
            lo, hi = r["tps_range"]
            cells.append(
                f"{r['tps']:.1f} [{lo:.1f}–{hi:.1f}] ({r['tps'] / off:.2f}x{acc}, "
                f"{r['tokens_per_step']:.2f} tok/step)"
            )
        print(f"| {w} | " + " | ".join(cells) + " |")
    grounded = [w for w in GROUNDED if w in table]
    if grounded:
        ratios = [
            table[w]["hoshikage on"]["tps"] / table[w]["hoshikage off"]["tps"] for w in grounded
        ]
        gmean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"\ninput-grounded single stream, on / off, geometric mean: {gmean:.2f}x")
    for w in names:
        peers = [table[w][e]["tps"] for e in engines if e.startswith("llama-server ngram")]
        if peers:
            print(
                f"{w}: hoshikage on / best llama-server n-gram = {table[w]['hoshikage on']['tps'] / max(peers):.2f}x"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
