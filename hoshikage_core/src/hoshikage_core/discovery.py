"""``models_dir``: every ``*.gguf`` under a folder served as a model, as llama.cpp's
``--models-dir`` and LM Studio's models folder do.

- **Names** come from the file name: lower-case, ``.gguf`` dropped, and for the first shard
  of a split model the ``-00001-of-00003`` part dropped too (``Qwen3-8B-Q4_K_M.gguf`` is
  ``qwen3-8b-q4_k_m``).
- **Skipped**: ``mmproj-*`` projector files, the second and later shards of a split model
  (llama.cpp loads them from the first), and hidden files and folders (``.cache/``,
  macOS' ``._name.gguf``).
- **Explicit ``[[models]]`` entries win**: a file that a ``[[models]]`` entry names by path
  is not discovered again (that entry, with its own options, stands for it), and a name
  taken by a ``[[models]]`` entry or an earlier discovered file is not reused.
- **Clashes** (two files that give the same name, or a name already taken) are settled by a
  deterministic suffix: folders in config order, files in path order (ignoring case); the
  first keeps the name, the next is ``name-2``, then ``name-3``. Each renaming is reported as a note
  (``config check``, ``doctor``, the server log).
- A folder that does not exist is a config problem, reported with every other.
- ``"ollama"``, ``"huggingface"`` and ``"lmstudio"`` are not folders but other tools'
  stores, adopted in place (:mod:`hoshikage_core.pull.adopt`); one that is not on this
  machine is a note, not a problem.

Discovery is backend-independent: the entries it makes carry the folder's ``backend``
(``llamacpp`` by default), whose plugin loads them like any configured model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

from .registry import ModelEntry

#: ``name-00002-of-00003`` (llama.cpp's ``gguf-split`` naming), case-insensitive.
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})$", re.IGNORECASE)
SOURCE = "models_dir"
#: ``models_dir`` words that name another tool's store (:mod:`hoshikage_core.pull.adopt`).
PLACES = ("ollama", "huggingface", "lmstudio")


@attrs.frozen
class Discovery:
    """What a scan found: the entries to register, and notes for the user."""

    entries: tuple[ModelEntry, ...] = ()
    #: ``path: what happened`` for each renamed or overridden file.
    notes: tuple[str, ...] = ()
    #: Config problems (a folder that does not exist), ``key.path: message`` each.
    problems: tuple[str, ...] = ()


def model_name(file_name: str) -> str | None:
    """The model name for a GGUF file name, or None when the file is skipped (not a GGUF,
    hidden, a projector, a later shard)."""
    if file_name.startswith(".") or not file_name.lower().endswith(".gguf"):
        return None
    stem = file_name[: -len(".gguf")]
    if stem.lower().startswith("mmproj"):
        return None
    shard = _SHARD.match(stem)
    if shard is not None:
        if int(shard["part"]) != 1:
            return None
        stem = shard["stem"]
    return stem.lower() or None


def gguf_files(folder: Path) -> list[Path]:
    """Every GGUF file under ``folder``, recursively, in path order (ignoring case, as a file
    manager lists them). Symlinked folders are
    followed once each (a link loop is not walked twice); hidden folders are skipped."""
    found: list[Path] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(root) / name
            if name.lower().endswith(".gguf") and path.is_file():
                found.append(path)
    return sorted(found, key=lambda p: (str(p.relative_to(folder)).casefold(), str(p)))


def discover(config) -> Discovery:
    """Scan ``config.models_dir``; the entries skip files and names that ``config.models``
    already has (see the module docstring)."""
    if not config.models_dir:
        return Discovery()
    taken: dict[str, str] = {}
    for model in config.models:
        for label in (model.name, *model.aliases):
            taken[label] = f"[[models]] '{model.name}'"
    explicit = {_real(model.path): model.name for model in config.models}
    entries: list[ModelEntry] = []
    notes: list[str] = []
    problems: list[str] = []
    discovered: set[str] = set()
    for i, folder in enumerate(config.models_dir):
        if folder.path in PLACES:  # another tool's store, adopted in place
            from .pull.adopt import find

            found, place_notes = find(folder.path)
            notes.extend(place_notes)
            candidates = [(f.path, f.name, f.options, f.aliases) for f in found]
        else:
            root = Path(folder.path).expanduser()
            if not root.is_dir():
                what = "not a folder" if root.exists() else "no such folder"
                problems.append(f"models_dir[{i}].path: {what}: {root}")
                continue
            candidates = [(p, model_name(p.name), {}, ()) for p in gguf_files(root)]
        for path, name, extra, aliases in candidates:
            if name is None:
                continue
            real = _real(str(path))
            if real in explicit:
                notes.append(f"{path}: served as the [[models]] entry '{explicit[real]}'")
                continue
            if real in discovered:  # under two listed folders
                continue
            discovered.add(real)
            unique = name
            n = 2
            while unique in taken:
                unique = f"{name}-{n}"
                n += 1
            if unique != name:
                notes.append(f"{path}: served as '{unique}': '{name}' is taken by {taken[name]}")
            taken[unique] = str(path)
            aliases = tuple(a for a in aliases if a not in taken)
            for alias in aliases:
                taken[alias] = str(path)
            entries.append(
                ModelEntry(
                    name=unique,
                    path=str(path),
                    aliases=aliases,
                    backend=folder.backend,
                    options=_with(folder.options, extra, path, notes),
                    idle_ttl=folder.idle_ttl,
                    source=SOURCE,
                )
            )
    return Discovery(tuple(entries), tuple(notes), tuple(problems))


def _with(options, extra: dict, path, notes: list[str]):
    """The folder's options with what the file's own place sets (Ollama's params) on top;
    the folder's alone, with a note, when the backend refuses one of them."""
    if not extra:
        return options
    if isinstance(options, dict):
        return {**options, **extra}
    try:
        return attrs.evolve(options, **extra)
    except (TypeError, ValueError) as exc:
        notes.append(f"{path}: its own parameters are not applied: {exc}")
        return options


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))
