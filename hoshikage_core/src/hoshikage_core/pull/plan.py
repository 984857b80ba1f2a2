"""Know before downloading whether a model fits: its GGUF header read remotely with HTTP
``Range`` requests (the first MB, more only while the header goes on: never the weights),
and this machine's free memory.

For each file (each quant of a repo, or the one a reference names) :func:`estimate` gives:

- ``weights_bytes``: the file's size (every shard of a split model);
- ``kv_bytes_per_token``: the KV cache one more token of context takes in one slot, for the
  model's ``type_k``/``type_v``: ``n_head_kv × (key_length × bytes(type_k) + value_length ×
  bytes(type_v))`` per layer, as the backend computes it, over the layers that grow with the
  context (sliding-window layers, in the families whose pattern is known, hold only their
  window plus a micro-batch, a fixed amount counted in ``kv_bytes_at_n_ctx``);
- ``context_max``: the largest context per slot (a multiple of 256, at most the model's
  trained context) whose KV cache for ``parallel`` slots fits beside the weights;
- ``fits``: ``"yes"`` at the configured ``n_ctx``, ``"smaller context"`` (only below it),
  or ``"no"``; with a GPU, ``gpu_layers``: how many layers its free memory holds.

The budget is the memory available now (``MemAvailable``; with an NVIDIA GPU, its free memory
from ``nvidia-smi``) less an allowance for llama.cpp's compute buffers (5 % of the weights
plus 256 MB). It is an estimate made before a download, not a promise: other programs'
memory changes, and the load's own report is what ``max_memory`` admits a model with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..fit import Shape
from ..gguf_info import GGUFError, GGUFInfo, _parse
from . import hub, refs, registry
from .fetch import Settings, _token
from .landing import PullError, human

FIRST_READ = 1 << 20
LARGEST_READ = 64 << 20
OVERHEAD = 256_000_000


@attrs.frozen(kw_only=True)
class Budget:
    """Memory this machine has for a model now."""

    ram: int
    vram: int | None = None

    @classmethod
    def here(cls) -> Budget:
        return cls(ram=available_ram(), vram=free_vram())


def available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def free_vram() -> int | None:
    """Free memory of the first NVIDIA GPU, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return int(out.split()[0]) * 1024 * 1024
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def read_remote(url: str, headers: dict[str, str] | None = None) -> tuple[GGUFInfo, int, int]:
    """``(header facts, the file's size, bytes read)`` of the GGUF at ``url``, read by
    ``Range`` from its start: 1 MB, then as much again (the next bytes only) while the
    header goes on, up to 64 MB."""
    import httpx

    buf, total = b"", None
    want = FIRST_READ
    with httpx.Client(follow_redirects=True, timeout=30.0) as client:
        while True:
            more, size = _range(client, url, headers or {}, len(buf), want)
            total = size if total is None else total
            buf += more
            try:
                return _parse(buf, total), total, len(buf)
            except GGUFError as exc:
                if "ends inside its header" not in str(exc) or len(buf) >= total or not more:
                    raise PullError(f"{url}: not a readable GGUF file: {exc}") from exc
                if want >= LARGEST_READ:
                    raise PullError(f"{url}: its GGUF header is over {human(want)}") from exc
                want *= 2


def _range(client, url: str, headers: dict[str, str], start: int, end: int) -> tuple[bytes, int]:
    """Bytes ``start`` to ``end`` (exclusive) and the whole size. A server that ignores
    ``Range`` answers from the start: that is skipped, and the read stops at ``end``."""
    import httpx

    try:
        ranged = {**headers, "Range": f"bytes={start}-{end - 1}"}
        with client.stream("GET", url, headers=ranged) as r:
            if r.status_code not in (200, 206):
                raise PullError(f"{url}: the server answered {r.status_code}")
            total = None
            rng = r.headers.get("Content-Range", "")
            if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
                total = int(rng.rsplit("/", 1)[1])
            elif r.status_code == 200 and r.headers.get("Content-Length", "").isdigit():
                total = int(r.headers["Content-Length"])
            skip = start if r.status_code == 200 else 0
            data = bytearray()
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) >= skip + end - start:
                    break
    except httpx.HTTPError as exc:
        raise PullError(f"Could not read {url}: {exc}") from exc
    return bytes(data[skip : skip + end - start]), total if total is not None else len(data)


def estimate(
    info: GGUFInfo, weights: int, options: Any, budget: Budget, label: str = ""
) -> dict[str, Any]:
    """The plan of one file (see the module docstring); ``options`` are the backend's
    (``n_ctx``, ``parallel``, ``type_k``, ``type_v``, ``n_ubatch``, ``swa_full``)."""
    shape = Shape.of(info, options)
    n_ctx, parallel, trained = shape.n_ctx, shape.parallel, shape.trained
    kv_bytes = shape.kv_bytes
    n_layer = shape.n_layer
    overhead = int(weights * 0.05) + OVERHEAD
    context_max = shape.largest_context(budget.ram + (budget.vram or 0) - weights - overhead)
    wanted = min(n_ctx, trained)
    fits = "yes" if context_max >= wanted else "smaller context" if context_max >= 256 else "no"
    out: dict[str, Any] = {
        "file": label,
        "quantization": info.quantization,
        "architecture": info.architecture,
        "parameters": info.parameter_count,
        "weights_bytes": weights,
        "kv_bytes_per_token": int(shape.per_token),
        "kv_bytes_at_n_ctx": int(kv_bytes(wanted)),
        "context_trained": trained,
        "n_ctx": n_ctx,
        "parallel": parallel,
        "context_max": context_max,
        "fits": fits,
        "gpu_layers": None,
    }
    if budget.vram is not None and n_layer:
        per_layer = weights / n_layer + kv_bytes(wanted) / n_layer
        out["gpu_layers"] = max(0, min(n_layer, int((budget.vram - OVERHEAD) // per_layer)))
    return out


def plan(
    text: str, settings: Settings, options: Any, budget: Budget | None = None
) -> dict[str, Any]:
    """The plan of every quant a reference may mean (one for a quant tag, a file or an
    Ollama name), read remotely; with ``suggestion``, the largest that fits."""
    budget = budget or Budget.here()
    ref = refs.parse(text)
    rows = []
    if isinstance(ref, refs.HfRef):
        token = _token(settings)
        base = hub.endpoint(settings.hf_endpoint)
        found = hub.files(ref, base, token)
        if ref.file or ref.quant:
            choices = {ref.quant or ref.file: hub.choose(ref, found)[0]}
        else:
            choices = {q: hub.shards(found, f[0]) for q, f in hub.quants(found).items()}
        from huggingface_hub.utils import build_hf_headers

        headers = build_hf_headers(token=token)
        for tag, files in sorted(choices.items(), key=lambda kv: sum(f.size or 0 for f in kv[1])):
            url, _etag = hub.resolve_url(ref, files[0].path, base, token)
            same = urlsplit(url).netloc == urlsplit(base).netloc  # no token to a CDN
            info, size, _read = read_remote(url, headers if same else {})
            weights = sum(f.size or 0 for f in files) or size
            rows.append(estimate(info, weights, options, budget, files[0].path) | {"tag": tag})
    else:
        base = registry.base(settings.registry)
        manifest = registry.manifest(ref, base)
        layer = next((x for x in manifest["layers"] if x.get("mediaType") == registry.MODEL), None)
        if layer is None:
            raise PullError(f"{ref.name} has no GGUF model layer.")
        info, size, _read = read_remote(registry.blob_url(ref, base, layer["digest"]))
        rows.append(estimate(info, size, options, budget, ref.name) | {"tag": ref.tag})
    fitting = [r for r in rows if r["fits"] == "yes"]
    suggestion = max(fitting, key=lambda r: r["weights_bytes"])["tag"] if fitting else None
    return {
        "reference": text,
        "memory_available_bytes": budget.ram,
        "gpu_free_bytes": budget.vram,
        "quants": rows,
        "suggestion": suggestion,
    }


def backend_defaults(pm, backend: str = "llamacpp") -> Any:
    """The backend's default options (what a pulled model gets), or an empty dict."""
    from ..config import structure_options

    try:
        return structure_options(pm, backend, {}, "plan")
    except Exception:
        return {}


def print_plan(args, ctx) -> int:
    result = plan(args.reference, Settings.of(ctx.config), backend_defaults(ctx.pm))
    if args.json:
        ctx.print_json(result)
        return 0
    from rich.table import Table

    gpu = result["gpu_free_bytes"]
    title = f"Plan for {args.reference}: {human(result['memory_available_bytes'])} RAM available"
    title += f", {human(gpu)} GPU memory free" if gpu is not None else ", no GPU"
    table = Table(title=title, title_justify="left")
    for col in ("quant", "weights", "KV/token", "n_ctx", "largest ctx", "fits", "GPU layers"):
        table.add_column(col, justify="left" if col in ("quant", "fits") else "right")
    colours = {"yes": "green", "smaller context": "yellow", "no": "red"}
    for r in result["quants"]:
        table.add_row(
            r["tag"],
            human(r["weights_bytes"]),
            human(r["kv_bytes_per_token"]),
            f"{r['n_ctx']} × {r['parallel']}",
            str(r["context_max"]),
            f"[{colours[r['fits']]}]{r['fits']}[/]",
            "-" if r["gpu_layers"] is None else str(r["gpu_layers"]),
        )
    ctx.console.print(table)
    if result["suggestion"]:
        ctx.console.print(f"Largest that fits: [bold]{result['suggestion']}[/]", highlight=False)
    else:
        ctx.console.print("[red]None fits at the configured n_ctx.[/]")
    return 0
