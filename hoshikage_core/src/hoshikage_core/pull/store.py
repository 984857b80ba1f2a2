"""Where pulled models are kept, and how they join the registry.

The store is a folder, ``[pull].dir`` (default ``$XDG_DATA_HOME/hoshikage/models``, that is
``~/.local/share/hoshikage/models``)::

    hf.co/{org}/{repo}/{file}.gguf       Hugging Face files, under their own names (split
                                         models' shards side by side, as llama.cpp wants)
    blobs/sha256-{hex}                   Ollama registry layers, by digest (shared by tags),
                                         and files uploaded for ``/api/create``
    manifests/{name}.json                one record per pulled model: what the registry serves

A model is served only once its record is written, and the record is written only after
every file is verified and renamed into place (:mod:`.landing`); a ``.partial`` file is
never a model. :func:`entries` turns the records into registry entries (the catalog calls
it after ``[[models]]`` and ``models_dir``); a name already taken there is left out with a
note.

A record (JSON)::

    {"name": "smollm2-135m-instruct.q4_1", "aliases": ["hf.co/org/repo:Q4_1"],
     "reference": "hf.co/org/repo:Q4_1", "path": ".../SmolLM2-135M-Instruct.Q4_1.gguf",
     "files": [...], "projector": null, "size": 98178720, "digest": "sha256:...",
     "options": {"temperature": 0.6}, "template": "", "system": "", "license": "",
     "pulled_at": 1764950000.0}

A record's ``system`` (an Ollama model's SYSTEM layer, or the ``system`` of ``/api/create``)
is the model's ``system`` option: the system message of the chats that bring none. A model
created from another (``/api/create`` with ``from``) has a record of its own that names the
other's files, so neither's removal takes the other's files.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..registry import ModelEntry

SOURCE = "pulled"

#: Ollama ``params`` keys that map onto backend options (others are kept in the record).
OLLAMA_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "seed": "seed",
    "num_ctx": "n_ctx",
    "num_predict": "max_tokens",
}


def default_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "hoshikage" / "models"


def root_of(config) -> Path:
    """The store folder of ``config`` (``[pull].dir``), expanded."""
    pull = getattr(config, "pull", None)
    configured = getattr(pull, "dir", None)
    return Path(configured).expanduser() if configured else default_dir()


def _file_name(name: str) -> str:
    return urllib.parse.quote(name, safe="") + ".json"


def records(root: Path) -> list[dict[str, Any]]:
    """Every readable record, in name order (an unreadable one is skipped)."""
    folder = root / "manifests"
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for file in names:
        if not file.endswith(".json"):
            continue
        try:
            with open(folder / file, encoding="utf-8") as f:
                record = json.load(f)
            if isinstance(record, dict) and record.get("name") and record.get("path"):
                out.append(record)
        except (OSError, ValueError):
            continue
    return out


def find(root: Path, label: str) -> dict[str, Any] | None:
    """The record whose name or alias is ``label`` (``:latest`` optional), or None."""
    bare = label[: -len(":latest")] if label.endswith(":latest") else label
    for record in records(root):
        labels = {record["name"], *record.get("aliases", ())}
        if label in labels or bare in labels:
            return record
    return None


def write(root: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` atomically (a reader sees the old one or the new one)."""
    folder = root / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _file_name(record["name"])
    tmp = path.with_name(path.name + ".partial")
    record = {**record, "pulled_at": record.get("pulled_at") or time.time()}
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def remove(root: Path, label: str) -> dict[str, Any] | None:
    """Delete the record named ``label`` and every file no other record uses; the record
    removed, or None when there was none."""
    record = find(root, label)
    if record is None:
        return None
    os.unlink(root / "manifests" / _file_name(record["name"]))
    kept = {str(p) for r in records(root) for p in _owned(r)}
    for path in _owned(record):
        if str(path) not in kept:
            for leftover in (path, Path(f"{path}.partial.lock")):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
    return record


def replace(root: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` over the one of its name, if any, then delete the files only the
    old one used (an ``ollama create`` of a name again)."""
    old = find(root, record["name"])
    path = write(root, record)
    if old is not None and old["name"] == record["name"]:
        kept = {str(p) for r in records(root) for p in _owned(r)}
        for gone in _owned(old):
            if str(gone) not in kept:
                try:
                    os.unlink(gone)
                except OSError:
                    pass
    return path


def blob_path(root: Path, digest: str) -> Path:
    """Where the blob ``sha256:<64 hex>`` is (or goes); ValueError for another digest."""
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or value.strip("0123456789abcdef"):
        raise ValueError(f"'{digest}' is not a digest: expected sha256:<64 hex digits>")
    return root / "blobs" / f"sha256-{value}"


def options_of(params: dict[str, Any]) -> dict[str, Any]:
    """The backend options Ollama ``params`` (a params layer, or the ``parameters`` of
    ``/api/create``) set: :data:`OLLAMA_OPTIONS`, numbers only (``stop`` and the like have no
    option here)."""
    out = {}
    for key, option in OLLAMA_OPTIONS.items():
        value = params.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[option] = value
    return out


def _owned(record: dict[str, Any]) -> list[Path]:
    paths = [*record.get("files", ()), record.get("projector")]
    return [Path(p) for p in paths if p]


def entries(root: Path, taken: dict[str, str]) -> tuple[list[ModelEntry], list[str]]:
    """Registry entries for the store's records whose files exist, and notes for those left
    out (a name taken by the config, a missing file)."""
    out: list[ModelEntry] = []
    notes: list[str] = []
    for record in records(root):
        name = record["name"]
        if not os.path.exists(record["path"]):
            notes.append(f"pulled model '{name}': its file {record['path']} is gone")
            continue
        if name in taken:
            notes.append(f"pulled model '{name}': the name is taken by {taken[name]}")
            continue
        aliases = tuple(a for a in record.get("aliases", ()) if a not in taken and a != name)
        for label in (name, *aliases):
            taken[label] = f"pulled model '{name}'"
        options = dict(record.get("options") or {})
        system = record.get("system")
        if isinstance(system, str) and system.strip() and "system" not in options:
            options["system"] = system  # an Ollama model's SYSTEM
        projector = record.get("projector")
        if projector and "mmproj" not in options and os.path.exists(projector):
            options["mmproj"] = projector  # the vision projector pulled with it
        out.append(
            ModelEntry(
                name=name,
                path=record["path"],
                aliases=aliases,
                options=options,
                source=SOURCE,
            )
        )
    return out, notes
