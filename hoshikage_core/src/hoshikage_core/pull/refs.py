"""Model references as people type them, read into what to fetch.

- ``hf.co/{org}/{repo}:{quant}`` and ``{org}/{repo}:{quant}`` (also ``huggingface.co/...``):
  a Hugging Face repo, and the quant tag that picks its GGUF file (``Q4_K_M``, ``Q8_0``,
  ``IQ4_XS``…, any case). No tag: ``Q4_K_M`` when the repo has it, as Ollama chooses.
- ``hf.co/{org}/{repo}/{path/to/file.gguf}``: that file.
- Ollama names: ``qwen3:8b``, ``library/qwen3:8b``, ``ollama.com/{user}/{model}:{tag}``,
  ``registry.ollama.ai/library/qwen3:8b``. No tag: ``latest``.

A name with one slash is Hugging Face's (``org/repo``) unless it starts with ``library/``;
a bare name (no slash) is Ollama's. ``hf.co/`` or ``ollama.com/`` in front settles any doubt.
"""

from __future__ import annotations

import re

import attrs

from ..errors import HoshikageError

HF_HOSTS = ("hf.co", "huggingface.co")
OLLAMA_HOSTS = ("ollama.com", "registry.ollama.ai")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class BadReference(HoshikageError, ValueError):
    """A reference that names nothing we can fetch, with what was expected."""

    code = "invalid_reference"
    http_status = 400


@attrs.frozen(kw_only=True)
class HfRef:
    """A Hugging Face repo and either a quant tag or one file path."""

    repo: str
    quant: str | None = None
    file: str | None = None
    revision: str = "main"
    #: As the user typed it.
    text: str = ""

    @property
    def canonical(self) -> str:
        if self.file:
            return f"hf.co/{self.repo}/{self.file}"
        return f"hf.co/{self.repo}" + (f":{self.quant}" if self.quant else "")


@attrs.frozen(kw_only=True)
class OllamaRef:
    """A model in an Ollama registry: ``namespace/model:tag`` on ``host``."""

    namespace: str = "library"
    model: str
    tag: str = "latest"
    host: str = ""
    text: str = ""

    @property
    def name(self) -> str:
        """The name Ollama lists it under: ``qwen3:8b``, ``user/model:tag``."""
        base = self.model if self.namespace == "library" else f"{self.namespace}/{self.model}"
        return f"{base}:{self.tag}"

    @property
    def canonical(self) -> str:
        return self.name


Reference = HfRef | OllamaRef


def parse(text: str) -> Reference:
    """The reference ``text`` names, or BadReference saying what is wrong."""
    raw = text.strip()
    if not raw:
        raise BadReference("A model reference is required, e.g. hf.co/org/repo:Q4_K_M or qwen3:8b.")
    lowered = raw.lower()
    for scheme in ("https://", "http://"):
        if lowered.startswith(scheme):
            raw, lowered = raw[len(scheme) :], lowered[len(scheme) :]
    for host in HF_HOSTS:
        if lowered.startswith(host + "/"):
            return _hf(raw[len(host) + 1 :], text)
    for host in OLLAMA_HOSTS:
        if lowered.startswith(host + "/"):
            return _ollama(raw[len(host) + 1 :], text)
    path = raw.split(":", 1)[0]
    if path.count("/") >= 1 and not path.startswith("library/"):
        return _hf(raw, text)
    return _ollama(raw, text)


def _check(part: str, what: str, text: str) -> str:
    if not _PART.match(part):
        raise BadReference(f"{text!r}: {what} {part!r} is not a valid name.")
    return part


def _hf(rest: str, text: str) -> HfRef:
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise BadReference(
            f"{text!r}: a Hugging Face reference is org/repo, org/repo:QUANT or "
            "hf.co/org/repo/file.gguf."
        )
    org = _check(parts[0], "organisation", text)
    if len(parts) > 2:  # a file path
        repo = _check(parts[1], "repository", text)
        file = "/".join(parts[2:])
        if not file.lower().endswith(".gguf") or ".." in parts[2:]:
            raise BadReference(f"{text!r}: the file must be a .gguf file in the repository.")
        return HfRef(repo=f"{org}/{repo}", file=file, text=text)
    name, _, quant = parts[1].partition(":")
    repo = _check(name, "repository", text)
    if _ and not _TAG.match(quant):
        raise BadReference(f"{text!r}: {quant!r} is not a quant tag (e.g. Q4_K_M).")
    if quant.lower() == "latest":
        quant = ""
    return HfRef(repo=f"{org}/{repo}", quant=quant or None, text=text)


def _ollama(rest: str, text: str) -> OllamaRef:
    path, sep, tag = rest.partition(":")
    if sep and not _TAG.match(tag):
        raise BadReference(f"{text!r}: {tag!r} is not a tag.")
    parts = path.split("/")
    if len(parts) == 1:
        namespace, model = "library", parts[0]
    elif len(parts) == 2:
        namespace, model = parts
    else:
        raise BadReference(f"{text!r}: an Ollama name is model:tag or namespace/model:tag.")
    return OllamaRef(
        namespace=_check(namespace, "namespace", text).lower(),
        model=_check(model, "model", text).lower(),
        tag=tag or "latest",
        text=text,
    )
