"""Safe mode: whether llama.cpp may use its extra weight buffer types on this machine.

llama.cpp repacks quantized weights into "extra" buffer types for faster CPU kernels: AMX on
Intel CPUs that have it (Sapphire Rapids and later), CPU_REPACK (interleaved Q4_0 and
others) elsewhere. On CPUs with ``amx_int8`` the AMX kernels segfault at the first decode
(llama.cpp #20824, Ollama #17205), with any thread count; ``use_extra_bufts = False``
(llama-server's ``--no-repack``) avoids it. Safe mode is a load with them off.

This module imports neither llama_cpp nor numpy: the server process decides with it.
"""

from __future__ import annotations

import attrs

#: CPU flags that decide which kernels llama.cpp's CPU backend runs, as /proc/cpuinfo
#: spells them.
CPU_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


@attrs.frozen
class CpuFacts:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has."""

    model: str
    flags: tuple[str, ...]

    @property
    def amx(self) -> bool:
        return "amx_int8" in self.flags


def cpu_facts(cpuinfo: str | None = None) -> CpuFacts:
    """The facts of this machine's CPU (or of ``cpuinfo``, the text of a /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return CpuFacts(model=model or "unknown", flags=tuple(f for f in CPU_FLAGS if f in flags))
