"""Facts for ``hoshikage doctor``: can this llama.cpp build offload to a GPU and to RPC
servers, does each configured RPC server accept connections, does the dynamic loader find
the CUDA libraries it links. (The core checks each model file.)

A CUDA build of llama-cpp-python links libcudart, libcublas and libcuda dynamically; when
the loader cannot find them, importing llama_cpp itself fails. Missing CUDA libraries are a
problem only for a CUDA build: on a CPU build they are reported as information.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import subprocess

from hoshikage_core.doctor import Check

from ..llama.build import is_cuda_build, is_gpu_build

SOURCE = "llamacpp"
CUDA_LIBRARIES = ("cudart", "cublas", "cuda")
_SONAME_VERSIONS = ("", ".13", ".12", ".11", ".1")


def checks(config) -> list[Check]:
    out = _build_checks(_rpc_models(config))
    cuda_build = is_cuda_build()
    out += [_library_check(name, cuda_build) for name in CUDA_LIBRARIES]
    out += safe_mode_checks()
    return out


def safe_mode_checks(path: str | None = None) -> list[Check]:
    """The CPU's features, the safe-mode verdicts remembered on this machine, and a
    self-test: ``path`` (by default the embedded SmolLM2, a quantized model) loaded in a model
    process as a model is served, with the extra buffer types decided as for any load, and
    one token decoded."""
    from .safe_mode import cpu_facts, read_verdicts, verdicts_path

    tested = self_test(path)  # first: its load may add a verdict
    cpu = cpu_facts()
    out = [
        Check(
            name="CPU",
            ok=None,
            detail=f"{cpu.model}: {' '.join(cpu.flags) or 'no vector extensions'}"
            + (" (AMX: llama.cpp's AMX kernels may crash; see safe mode)" if cpu.amx else ""),
            source=SOURCE,
        )
    ]
    verdicts = read_verdicts()
    for entry in verdicts.values():
        crashed = entry.get("verdict") == "crash"
        out.append(
            Check(
                name="safe mode" if crashed else "extra buffer types",
                ok=None,
                detail=(
                    f"weights {', '.join(entry.get('types', []))} on {entry.get('build')}: "
                    + (
                        f"loaded without the extra buffer types since {entry.get('time')}, "
                        f"after: {entry.get('reason')}"
                        if crashed
                        else f"in use, known to work since {entry.get('time')}"
                    )
                ),
                hint=f"forget the verdicts: delete {verdicts_path()}" if crashed else "",
                source=SOURCE,
            )
        )
    out.append(tested)
    return out


def self_test(path: str | None = None) -> Check:
    """Load a model in a model process and decode one token (see :func:`safe_mode_checks`)."""
    import time

    from hoshikage_core.errors import HoshikageError
    from hoshikage_core.protocol import CancelToken, GenerationRequest

    from ..demo import smollm2_path
    from ..options import LlamaOptions
    from .isolation import ProcessModel

    path = path or (str(smollm2_path()) if smollm2_path() else None)
    if path is None:
        return Check(
            name="self-test",
            ok=None,
            detail="no model to test with (the embedded SmolLM2 is not installed)",
            source=SOURCE,
        )
    options = LlamaOptions(n_ctx=256, parallel=1, cache_ram=0, cache_disk=0, n_gpu_layers=0)
    started = time.monotonic()
    try:
        model = ProcessModel.load("doctor-self-test", path, options)
    except HoshikageError as exc:
        return Check(name="self-test", ok=False, detail=str(exc), source=SOURCE)
    try:
        sink = _OneSink()
        request = GenerationRequest(prompt="Hello", max_tokens=1, temperature=0.0)
        model.generate(request, CancelToken(), sink)
        error = sink.wait(60)
        buffers = ", ".join(sorted(model.placement)) or "unknown"
        mode = (
            "safe mode (extra buffer types off)"
            if model.safe_mode
            else ("extra buffer types on" if model.extra_buffers else "extra buffer types off")
        )
    finally:
        model.close()
    seconds = time.monotonic() - started
    if error is not None:
        return Check(name="self-test", ok=False, detail=f"{path}: {error}", source=SOURCE)
    return Check(
        name="self-test",
        ok=True,
        detail=f"loaded {os.path.basename(path)} in a model process and decoded a token in "
        f"{seconds:.1f}s; {mode}; buffers: {buffers}",
        source=SOURCE,
    )


class _OneSink:
    """A :class:`~hoshikage_core.protocol.ChunkSink` that waits for the end."""

    def __init__(self):
        import threading

        self._done = threading.Event()
        self.error = None

    def put(self, index, chunk) -> None:
        pass

    def close(self, error=None) -> None:
        self.error = error
        self._done.set()

    def flush(self) -> None:
        pass

    def wait(self, timeout: float):
        if not self._done.wait(timeout):
            return "no answer within the time"
        return self.error


def cuda_target_dir() -> str:
    """Where the CUDA toolkit keeps its libraries on this architecture."""
    machine = platform.machine() or "x86_64"
    target = "sbsa-linux" if machine in ("aarch64", "arm64") else f"{machine}-linux"
    return f"/usr/local/cuda/targets/{target}/lib"


def _rpc_models(config) -> dict[str, list[str]]:
    """``{model name: [host:port, ...]}`` for every llamacpp model with ``rpc_servers``."""
    from ..options import rpc_server_list

    found = {}
    for model in getattr(config, "models", None) or ():
        if getattr(model, "backend", "llamacpp") != "llamacpp":
            continue
        options = model.options
        value = (
            options.get("rpc_servers")
            if isinstance(options, dict)
            else getattr(options, "rpc_servers", None)
        )
        servers = rpc_server_list(value)
        if servers:
            found[model.name] = servers
    return found


def _rpc_checks(rpc: bool, models: dict[str, list[str]]) -> list[Check]:
    """RPC support in this build (a problem only when a model needs it), then whether each
    configured RPC server accepts a TCP connection."""
    from ..llama.rpc import check_reachable

    needed = ", ".join(models)
    if rpc:
        out = [
            Check(
                name="RPC offload",
                ok=True if models else None,
                detail="supported by this build",
                source=SOURCE,
            )
        ]
    else:
        out = [
            Check(
                name="RPC offload",
                ok=False if models else None,
                detail="not in this build"
                + (
                    f", but rpc_servers is set for {needed}"
                    if models
                    else " (rpc_servers unavailable)"
                ),
                hint="Rebuild: make install (builds llama-cpp-python with -DGGML_RPC=on, see docs/scaling.md)",
                source=SOURCE,
            )
        ]
    endpoints: dict[str, list[str]] = {}
    for name, servers in models.items():
        for endpoint in servers:
            endpoints.setdefault(endpoint, []).append(name)
    for endpoint, names in endpoints.items():
        down = check_reachable([endpoint], timeout=2.0)
        used_by = ", ".join(names)
        out.append(
            Check(
                name=f"RPC server {endpoint}",
                ok=not down,
                detail=f"reachable (used by {used_by})"
                if not down
                else f"unreachable: {down[0]} (used by {used_by})",
                hint=""
                if not down
                else "Start ggml-rpc-server there (make rpc-server, docs/scaling.md) and check the firewall",
                source=SOURCE,
            )
        )
    return out


def _build_checks(rpc_models: dict[str, list[str]] | None = None) -> list[Check]:
    try:
        import llama_cpp
    except Exception as exc:  # a CUDA build without its libraries fails right here
        return [
            Check(
                name="llama-cpp-python",
                ok=False,
                detail=f"cannot be imported: {exc}",
                hint=f"If the CUDA libraries are missing below, set LD_LIBRARY_PATH={cuda_target_dir()}",
                source=SOURCE,
            )
        ]
    # Not llama_supports_gpu_offload(): it is true for any build with RPC, GPU or not.
    gpu = is_gpu_build()
    return [
        Check(
            name="llama-cpp-python",
            ok=True,
            detail=f"version {llama_cpp.__version__}",
            source=SOURCE,
        ),
        Check(
            name="GPU offload",
            ok=True if gpu else None,
            detail="supported by this build"
            if gpu
            else "not supported: this build runs on the CPU only",
            hint=""
            if gpu
            else 'For CUDA: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir '
            "llama-cpp-python==0.3.36",
            source=SOURCE,
        ),
    ] + _rpc_checks(bool(llama_cpp.llama_supports_rpc()), rpc_models or {})


def loader_path(name: str) -> str | None:
    """Where the dynamic loader finds ``lib<name>.so``, or None: load it and read the
    mapping back from /proc/self/maps."""
    for version in _SONAME_VERSIONS:
        soname = f"lib{name}.so{version}"
        try:
            ctypes.CDLL(soname)
        except OSError:
            continue
        return _mapped_path(f"lib{name}.so") or soname
    return None


def _mapped_path(prefix: str) -> str | None:
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if os.path.basename(path).startswith(prefix):
                    return path
    except OSError:
        pass
    return None


def search_dirs() -> list[str]:
    """Directories worth looking in: LD_LIBRARY_PATH, the ldconfig cache, CUDA toolkits."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    try:
        listing = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=5
        ).stdout
        dirs += sorted(
            {
                os.path.dirname(line.rsplit("=>", 1)[-1].strip())
                for line in listing.splitlines()
                if "=>" in line
            }
        )
    except (OSError, subprocess.SubprocessError):
        pass
    dirs += sorted(glob.glob("/usr/local/cuda*/targets/*/lib")) + sorted(
        glob.glob("/usr/local/cuda*/lib64")
    )
    return list(dict.fromkeys(dirs))


def find_on_disk(name: str) -> list[str]:
    found = []
    for directory in search_dirs():
        found += sorted(glob.glob(os.path.join(directory, f"lib{name}.so*")))
    return list(dict.fromkeys(found))


def _library_check(name: str, cuda_build: bool) -> Check:
    label = f"lib{name}"
    path = loader_path(name)
    if path:
        return Check(
            name=label, ok=True if cuda_build else None, detail=f"found at {path}", source=SOURCE
        )
    on_disk = find_on_disk(name)
    if on_disk:
        detail = f"not on the loader's path, but present at {on_disk[0]}"
        hint = f"export LD_LIBRARY_PATH={os.path.dirname(on_disk[0])}:$LD_LIBRARY_PATH"
    else:
        detail = "not found"
        hint = (
            "libcuda comes with the NVIDIA driver: install the driver"
            if name == "cuda"
            else f"Install the CUDA toolkit, then export LD_LIBRARY_PATH={cuda_target_dir()}:$LD_LIBRARY_PATH"
        )
    if not cuda_build:
        return Check(
            name=label,
            ok=None,
            detail=f"{detail} (not needed: this llama.cpp build is CPU-only)",
            source=SOURCE,
        )
    return Check(name=label, ok=False, detail=detail, hint=hint, source=SOURCE)
