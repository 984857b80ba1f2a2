"""Adopt the models a user already has, in place, with no copy: ``models_dir`` entries
``"ollama"``, ``"huggingface"`` and ``"lmstudio"`` (see :mod:`hoshikage_core.discovery`).

- **ollama**: Ollama's store, ``$OLLAMA_MODELS`` or ``~/.ollama/models``. Each manifest
  (``manifests/{host}/{namespace}/{model}/{tag}``) names its GGUF layer, a blob
  ``blobs/sha256-{hex}``; the model is served under Ollama's own name (``qwen3:8b``,
  ``user/model:tag``), and its ``params`` layer's sampling defaults and ``num_ctx``, and its
  ``system`` layer (the ``system`` option), become its options. (Its Go ``template`` layer
  is not used: the GGUF's own Jinja chat template is.)
- **huggingface**: the Hugging Face cache, ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or
  ``~/.cache/huggingface/hub``. Each ``models--{org}--{repo}`` folder's snapshot of
  ``refs/main`` (else its newest snapshot) is scanned for GGUF files (symlinks into
  ``blobs/``, followed), named like any ``models_dir`` file.
- **lmstudio**: LM Studio's models folder, ``~/.lmstudio/models`` (or the older
  ``~/.cache/lm-studio/models``), scanned like any ``models_dir`` folder.

A place that does not exist adopts nothing and says so in a note; it is not an error (the
same config works on a machine without Ollama).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

PLACES = ("ollama", "huggingface", "lmstudio")
_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_OLLAMA_PARAMS = "application/vnd.ollama.image.params"
_OLLAMA_SYSTEM = "application/vnd.ollama.image.system"
_DEFAULT_HOST = "registry.ollama.ai"


@attrs.frozen
class Found:
    path: Path
    name: str
    #: Backend options the place sets (Ollama's params).
    options: dict[str, Any] = attrs.Factory(dict)
    #: Other names of the same file (Ollama's ``cp`` copies, tags of one blob).
    aliases: tuple[str, ...] = ()


def ollama_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def hf_root() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "huggingface" / "hub"


def lmstudio_roots() -> list[Path]:
    return [Path("~/.lmstudio/models").expanduser(), Path("~/.cache/lm-studio/models").expanduser()]


def root(place: str) -> Path | None:
    """Where ``place``'s models are on this machine, or None when it has none."""
    if place == "ollama":
        candidates = [ollama_root()]
    elif place == "huggingface":
        candidates = [hf_root()]
    else:
        candidates = lmstudio_roots()
    return next((c for c in candidates if c.is_dir()), None)


def find(place: str) -> tuple[list[Found], list[str]]:
    """The models ``place`` holds, and notes (a missing place, an unreadable manifest)."""
    folder = root(place)
    if folder is None:
        where = {"ollama": ollama_root(), "huggingface": hf_root()}.get(place)
        where = where or " or ".join(str(p) for p in lmstudio_roots())
        return [], [f"models_dir '{place}': nothing to adopt, no {where}"]
    if place == "ollama":
        return _ollama(folder)
    if place == "huggingface":
        return _huggingface(folder), []
    from ..discovery import gguf_files, model_name

    out = []
    for path in gguf_files(folder):
        name = model_name(path.name)
        if name:
            out.append(Found(path, name))
    return out, []


def ollama_name(host: str, namespace: str, model: str, tag: str) -> str:
    if host == _DEFAULT_HOST:
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def _ollama(folder: Path) -> tuple[list[Found], list[str]]:
    from .fetch import ollama_options

    manifests = folder / "manifests"
    out: list[Found] = []
    notes: list[str] = []
    for dirpath, dirs, files in os.walk(manifests):
        dirs.sort()
        for tag in sorted(files):
            path = Path(dirpath) / tag
            parts = path.relative_to(manifests).parts
            if len(parts) != 4 or tag.startswith("."):
                continue
            host, namespace, model, _ = parts
            try:
                layers = json.loads(path.read_text(encoding="utf-8"))["layers"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                notes.append(f"{path}: not adopted, unreadable manifest ({exc})")
                continue
            by_kind = {layer.get("mediaType"): layer.get("digest", "") for layer in layers}
            digest = by_kind.get(_OLLAMA_MODEL)
            if not digest:
                continue  # an embedding adapter or a model Ollama keeps in another form
            blob = folder / "blobs" / digest.replace(":", "-")
            if not blob.is_file():
                notes.append(f"{path}: not adopted, its model blob {blob.name} is missing")
                continue
            options = {}
            params = by_kind.get(_OLLAMA_PARAMS)
            if params:
                try:
                    text = (folder / "blobs" / params.replace(":", "-")).read_text(encoding="utf-8")
                    options = ollama_options(text)
                except OSError:
                    pass
            system = by_kind.get(_OLLAMA_SYSTEM)
            if system:
                try:
                    text = (folder / "blobs" / system.replace(":", "-")).read_text(encoding="utf-8")
                except OSError:
                    text = ""
                if text.strip():
                    options["system"] = text
            out.append(Found(blob, ollama_name(host, namespace, model, tag), options))
    return _merged(out), notes


def _merged(found: list[Found]) -> list[Found]:
    """One model per blob: the first name found, the others its aliases."""
    by_blob: dict[Path, Found] = {}
    for f in found:
        first = by_blob.get(f.path)
        if first is None:
            by_blob[f.path] = f
        else:
            by_blob[f.path] = attrs.evolve(first, aliases=(*first.aliases, f.name))
    return list(by_blob.values())


def _huggingface(folder: Path) -> list[Found]:
    from ..discovery import gguf_files, model_name

    out = []
    for repo in sorted(folder.glob("models--*")):
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        try:
            commit = (repo / "refs" / "main").read_text().strip()
            snapshot = snapshots / commit
        except OSError:
            snapshot = None
        if snapshot is None or not snapshot.is_dir():
            candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
            if not candidates:
                continue
            snapshot = candidates[-1]
        for path in gguf_files(snapshot):
            name = model_name(path.name)
            if name and path.exists():  # a link to a blob that is gone is skipped
                out.append(Found(path, name))
    return out
