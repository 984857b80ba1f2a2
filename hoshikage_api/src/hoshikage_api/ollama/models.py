"""Model names as Ollama clients write them, and the facts ``/api/tags``, ``/api/ps`` and
``/api/show`` report.

**Names.** Ollama names are ``name:tag``. A name registered here (or an alias) is served
both as written and with the tag ``:latest`` (``gemma-3-270m`` and ``gemma-3-270m:latest``
are one model); any other tag is an unknown model, a 404. A registered name that contains
a colon itself (an alias ``llama3:8b`` for Ollama clients) matches as written.

**Facts** come from the GGUF header (:func:`hoshikage_core.gguf_info.read_info`, read once
per file version and cached) and the config. The ``digest`` is the SHA-256 of the file's
real path, size and modification time: stable while the file is unchanged, different when
it is replaced. It is not the hash of the file's bytes (hashing gigabytes on a listing would
be too slow), so it does not match Ollama's blob digest of the same file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from hoshikage_core.protocol import BUSY
from hoshikage_core.registry import ModelEntry

from ..kernel.deps import context_length
from . import schemas as s
from .errors import not_found

LATEST = ":latest"
#: What ``expires_at`` says for a model that never unloads: Go's largest duration from now,
#: as Ollama reports it.
NEVER = timedelta(microseconds=(2**63 - 1) // 1000)


def resolve(runtime, name: str) -> str:
    """The name to ask the runtime for (a registered name or alias), or a 404 in Ollama's words."""
    registry = runtime.registry
    if name in registry:
        return name
    base, sep, tag = name.rpartition(":")
    if sep and tag == "latest" and base in registry:
        return base
    raise not_found(name, [tagged(n) for n in registry.names()])


def tagged(name: str) -> str:
    """The name as Ollama lists it: with ``:latest`` unless it has a tag already."""
    return name if ":" in name else name + LATEST


def rfc3339(when: float | datetime) -> str:
    """A UTC timestamp as RFC 3339 with microseconds (``2026-11-25T17:00:00.123456Z``)."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now() -> str:
    return rfc3339(time.time())


# ---- facts --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _gguf(path: str, size: int, mtime_ns: int):
    """The file's GGUF facts, or None when it cannot be read (keyed by its version)."""
    from hoshikage_core.gguf_info import GGUFError, read_info

    try:
        return read_info(path)
    except GGUFError:
        return None


#: Text in a chat template that means a thinking mode (``hoshikage_llamacpp.dialects.reasoning``'s
#: signs; a test keeps the two equal).
THINKING_SIGNS = (
    "<|channel|>analysis",
    "<|channel>thought",
    "<seed:think>",
    "[THINK]",
    "START_THINKING",
    "<think>",
)


class Facts:
    """One registered model's file facts."""

    def __init__(self, runtime, entry: ModelEntry):
        self.runtime = runtime
        self.entry = entry
        try:
            stat = os.stat(entry.path)
        except OSError:  # not there yet (assembled on first load) or gone
            self.size, self.mtime, self.info = 0, runtime.started_at, None
            real = entry.path
            mtime_ns = 0
        else:
            self.size, self.mtime, mtime_ns = stat.st_size, stat.st_mtime, stat.st_mtime_ns
            real = os.path.realpath(entry.path)
            self.info = _gguf(real, stat.st_size, mtime_ns)
        self.digest = hashlib.sha256(f"{real}\0{self.size}\0{mtime_ns}".encode()).hexdigest()

    @property
    def metadata(self) -> dict[str, Any]:
        return self.info.metadata if self.info is not None else {}

    def details(self) -> s.ModelDetails:
        family = str(self.metadata.get("general.architecture") or "")
        size = self.metadata.get("general.size_label")
        if self.info is not None and self.info.parameter_count:
            size = human_number(self.info.parameter_count)
        return s.ModelDetails(
            parent_model="",
            format="gguf",
            family=family,
            families=[family] if family else None,
            parameter_size=str(size or ""),
            quantization_level=(self.info.quantization if self.info else None) or "",
        )

    def template(self) -> str:
        """The Jinja chat template the model renders chats with: the config's
        ``chat_template``, else the GGUF's; empty when it uses a built-in ``chat_format`` or
        the plain fallback."""
        if self.entry.option("chat_template"):
            return str(self.entry.option("chat_template"))
        if self.entry.option("chat_format"):
            return ""
        return str(self.metadata.get("tokenizer.chat_template") or "")

    def capabilities(self) -> list[str]:
        if self.entry.option("embedding", False):
            return ["embedding"]
        out = ["completion"]
        if "tools" in self.template():
            out.append("tools")
        if self.thinks():
            out.append("thinking")
        out += self.entry.modalities()  # "vision", "audio": Ollama's names
        return out

    def thinks(self) -> bool:
        """Whether the model has a thinking mode: its template writes one of the reasoning
        forms the backend detects (the same signs as ``hoshikage_llamacpp.dialects.reasoning``,
        which this package does not import), and the ``reasoning`` option is not "off"."""
        if self.entry.option("reasoning") == "off":
            return False
        template = self.template()
        return any(sign in template for sign in THINKING_SIGNS)

    def model_info(self) -> dict[str, Any]:
        """Scalar and string GGUF metadata (arrays such as the vocabulary are left out; the
        chat template is under ``template``), plus ``general.parameter_count``.
        ``<arch>.context_length`` is the context a request gets here (the loaded model's,
        else what it will get once loaded), not the training length the GGUF states: clients
        read it to know how long a conversation may grow before it must be compacted."""
        info = {k: v for k, v in self.metadata.items() if k != "tokenizer.chat_template"}
        if self.info is not None and self.info.parameter_count:
            info["general.parameter_count"] = self.info.parameter_count
        arch = info.get("general.architecture")
        context = context_length(self.runtime, self.entry)
        if isinstance(arch, str) and context:
            info[f"{arch}.context_length"] = context
        return dict(sorted(info.items()))

    def parameters(self) -> str:
        """Ollama's ``parameters`` text: the context a request gets (``num_ctx``, as
        ``model_info`` says it) and the config's sampling defaults."""
        lines = []
        keys = ("n_ctx", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")
        names = {"n_ctx": "num_ctx", "max_tokens": "num_predict"}
        for key in (*keys, "max_tokens"):
            if key == "n_ctx":
                value = context_length(self.runtime, self.entry)
            else:
                value = self.entry.option(key)
            if value is not None:
                lines.append(f"{names.get(key, key):<30} {value}")
        return "\n".join(lines)

    def modelfile(self) -> str:
        lines = [
            "# Served by Hoshikage: this model is registered in its config; there is no Modelfile.",
            f"FROM {self.entry.path}",
        ]
        template = self.template()
        if template:
            lines.append(f'TEMPLATE """{template}"""')
        system = self.entry.option("system")
        if system:
            lines.append(f'SYSTEM """{system}"""')
        lines += [f"PARAMETER {line}" for line in self.parameters().splitlines()]
        return "\n".join(lines) + "\n"


def human_number(n: int) -> str:
    """A parameter count as Ollama writes it: ``268.10M``, ``7.6B``, ``8B``."""
    for size, unit, digits in ((10**12, "T", 1), (10**9, "B", 1), (10**6, "M", 2), (10**3, "K", 0)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{digits}f}{unit}"
    return str(n)


# ---- the three listings -------------------------------------------------------------------


def tags(runtime) -> s.TagsResponse:
    """Every registered name and alias as ``name:latest`` (an alias has its model's digest,
    like an ``ollama cp`` copy)."""
    models = []
    for entry in runtime.registry:
        facts = Facts(runtime, entry)
        details = facts.details()
        for name in (entry.name, *entry.aliases):
            models.append(
                s.ListedModel(
                    name=tagged(name),
                    model=tagged(name),
                    modified_at=rfc3339(facts.mtime),
                    size=facts.size,
                    digest=facts.digest,
                    details=details,
                )
            )
    return s.TagsResponse(models=models)


def _expires_at(view) -> str:
    """The real unload deadline: the pool's for an idle model, or what it will be once a
    busy model's requests end; far in the future for never."""
    wall = datetime.now(UTC)
    if view.state == BUSY:
        ttl = view.idle_ttl
        return rfc3339(wall + (NEVER if ttl < 0 else timedelta(seconds=ttl)))
    if view.expires_at is None:
        return rfc3339(wall + NEVER)
    return rfc3339(wall + timedelta(seconds=max(0.0, view.expires_at - time.monotonic())))


def ps(runtime) -> s.PsResponse:
    """The loaded models (idle or busy), with their memory and unload deadline."""
    models = []
    for view in runtime.views():
        if not view.is_loaded:
            continue
        entry = view.entry
        facts = Facts(runtime, entry)
        memory = int(view.memory_bytes or 0)
        models.append(
            s.RunningModel(
                name=tagged(entry.name),
                model=tagged(entry.name),
                size=memory,
                digest=facts.digest,
                details=facts.details(),
                expires_at=_expires_at(view),
                size_vram=max(0, view.device_memory_bytes),
                context_length=view.n_ctx or 0,
            )
        )
    return s.PsResponse(models=models)


def show(runtime, label: str) -> s.ShowResponse:
    facts = Facts(runtime, runtime.resolve(label))
    return s.ShowResponse(
        modelfile=facts.modelfile(),
        parameters=facts.parameters(),
        template=facts.template(),
        details=facts.details(),
        model_info=facts.model_info(),
        capabilities=facts.capabilities(),
        modified_at=rfc3339(facts.mtime),
        system=str(facts.entry.option("system") or ""),
    )
