"""Safe mode: whether llama.cpp may use its extra weight buffer types on this machine.

llama.cpp repacks quantized weights into "extra" buffer types for faster CPU kernels: AMX on
Intel CPUs that have it (Sapphire Rapids and later), CPU_REPACK (interleaved Q4_0 and
others) elsewhere. On CPUs with ``amx_int8`` the AMX kernels segfault at the first decode
(llama.cpp #20824, Ollama #17205), with any thread count; ``use_extra_bufts = False``
(llama-server's ``--no-repack``) avoids it. Safe mode is a load with them off.

This module imports neither llama_cpp nor numpy: the server process decides with it.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import os
import threading

import attrs

log = logging.getLogger("hoshikage.llamacpp.safe_mode")

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


#: ggml type names, for verdicts a person reads.
GGML_TYPE_NAMES = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    6: "q5_0",
    7: "q5_1",
    8: "q8_0",
    10: "q2_K",
    11: "q3_K",
    12: "q4_K",
    13: "q5_K",
    14: "q6_K",
    15: "q8_K",
    20: "iq4_nl",
    23: "iq4_xs",
    30: "bf16",
}

#: A model's verdicts: "crash" (extra buffer types crashed it: load it in safe mode), "ok"
#: (a load with them on warmed up and decoded).
CRASH, OK = "crash", "ok"


@functools.cache
def llama_build() -> str:
    """Which llama.cpp this is, without importing it (the server process never maps its
    libraries): llama-cpp-python's version and a hash of its CPU backend's libraries (the
    same wheel installed twice is the same build; other build flags are another)."""
    import importlib.metadata
    import importlib.util

    try:
        version = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    spec = importlib.util.find_spec("llama_cpp")
    digest = hashlib.sha256()
    found = False
    if spec is not None and spec.submodule_search_locations:
        lib = os.path.join(list(spec.submodule_search_locations)[0], "lib")
        try:
            names = sorted(n for n in os.listdir(lib) if n.startswith("libggml-cpu"))
        except OSError:
            names = []
        for name in names:
            try:
                with open(os.path.join(lib, name), "rb") as f:
                    digest.update(f.read())
                found = True
            except OSError:
                pass
    return f"llama-cpp-python {version}" + (f" ({digest.hexdigest()[:8]})" if found else "")


def tensor_types(path: str) -> tuple[str, ...]:
    """The weight types of the GGUF at ``path`` (empty when it cannot be read)."""
    from hoshikage_core.gguf_info import GGUFError, cached_info

    try:
        types = cached_info(path).tensor_types
    except (GGUFError, OSError):
        return ()
    return tuple(sorted(GGML_TYPE_NAMES.get(t, f"type{t}") for t in types))


@attrs.frozen
class Subject:
    """What a verdict is about: a llama.cpp build on a CPU with weights of some types."""

    build: str
    cpu: CpuFacts
    types: tuple[str, ...]

    @classmethod
    def of(cls, path: str) -> Subject:
        return cls(build=llama_build(), cpu=cpu_facts(), types=tensor_types(path))

    @property
    def key(self) -> str:
        text = json.dumps([self.build, self.cpu.model, self.cpu.flags, self.types])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        flags = " ".join(self.cpu.flags) or "no vector extensions"
        return f"{self.cpu.model} ({flags}); {self.build}; weights {', '.join(self.types)}"


def verdicts_path() -> str:
    """``$HOSHIKAGE_VERDICTS``, else ``$XDG_CACHE_HOME/hoshikage/verdicts.json`` (else
    ``~/.cache/...``)."""
    if explicit := os.environ.get("HOSHIKAGE_VERDICTS"):
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hoshikage", "verdicts.json")


_LOCK = threading.Lock()


def read_verdicts() -> dict[str, dict]:
    try:
        with open(verdicts_path(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def verdict(subject: Subject) -> dict | None:
    """The remembered verdict on ``subject`` (``{"verdict", "reason", "time", ...}``)."""
    found = read_verdicts().get(subject.key)
    return found if isinstance(found, dict) else None


def remember(subject: Subject, value: str, reason: str = "") -> None:
    """Write the verdict on ``subject`` (atomically: a crash mid-write keeps the old file).
    A "crash" is never overwritten by "ok": only a user's ``extra_buffers = true`` load,
    or deleting the file, tries the extra buffer types again."""
    path = verdicts_path()
    with _LOCK:
        data = read_verdicts()
        old = data.get(subject.key)
        if value == OK and isinstance(old, dict) and old.get("verdict") == CRASH:
            return
        data[subject.key] = {
            "verdict": value,
            "reason": reason,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpu": subject.cpu.model,
            "flags": list(subject.cpu.flags),
            "build": subject.build,
            "types": list(subject.types),
        }
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write the safe-mode verdict to %s: %s", path, exc)


@attrs.frozen
class Decision:
    """Whether a load uses the extra buffer types, and why."""

    extra: bool
    why: str
    #: Whether a crash of this load should be retried in safe mode (``extra_buffers`` is
    #: "auto" and the extra buffer types were on).
    may_fall_back: bool = False
    #: Off because a verdict says they crash here: the load is in safe mode.
    safe: bool = False


def decide(setting, subject: Subject, isolated: bool) -> Decision:
    """``extra_buffers`` (``setting``) for a load of ``subject``: true/false as set; "auto"
    follows the remembered verdict. With none yet, a model in a process of its own tries
    them (a crash there costs one reload in safe mode, and is remembered); one inside the
    server runs without them on a CPU with AMX, where a crash would end the server."""
    if setting is True or setting is False:
        return Decision(bool(setting), "set by extra_buffers")
    found = verdict(subject)
    if found is not None and found.get("verdict") == CRASH:
        reason = found.get("reason") or "crashed"
        return Decision(False, f"safe mode: {reason} ({found.get('time')})", safe=True)
    if found is not None and found.get("verdict") == OK:
        return Decision(True, "known to work here", may_fall_back=isolated)
    if isolated:
        return Decision(True, "not tried here yet", may_fall_back=True)
    if subject.cpu.amx:
        return Decision(False, "this CPU has AMX, whose llama.cpp kernels may crash; in-process")
    return Decision(True, "no AMX")
