"""The ``llamacpp`` plugin: hook implementations registered through the ``hoshikage``
entry-point group.

Importing this module is cheap: llama_cpp (and numpy) load only when a model does. It
takes the fingerprint of the sources this server runs, which its model processes check
theirs against (:mod:`.lifecycle.sources`, about 2 ms).
"""

from __future__ import annotations

from hoshikage_core.hookspecs import hookimpl

from .lifecycle import sources

sources.take()

BACKEND = "llamacpp"


@hookimpl
def backend_options(backend):
    """:class:`~hoshikage_llamacpp.options.LlamaOptions` for ``backend = "llamacpp"``."""
    if backend != BACKEND:
        return None
    from .options import LlamaOptions

    return LlamaOptions


@hookimpl
def create_backend(entry, config):
    """Load a ``llamacpp`` model entry; None for any other backend."""
    if entry.backend != BACKEND:
        return None
    from hoshikage_core.errors import ModelLoadError

    from .demo import materialise
    from .options import LlamaOptions

    options = entry.options
    if isinstance(options, dict):  # an entry built in code rather than from the config
        try:
            options = LlamaOptions(**options)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(entry.name, f"{entry.path}: bad options: {exc}") from None
    try:
        materialise(entry)
    except (ImportError, OSError) as exc:
        raise ModelLoadError(
            entry.name, f"{entry.path}: could not assemble the file: {exc}"
        ) from None
    if options.isolated():
        from .lifecycle.isolation import ProcessModel

        return ProcessModel.load(
            entry.name, entry.path, options, default_max_tokens(options, config)
        )
    from hoshikage_core.load_progress import reporter

    from .lifecycle.model import LlamaCppModel  # llama.cpp in this process: isolation = "none"

    return LlamaCppModel.load(
        entry.name, entry.path, options, default_max_tokens(options, config), reporter()
    )


@hookimpl
def model_unloaded(name, reason, seconds):
    """A spare model process is kept for the next load after an eviction, and goes with
    the last model process otherwise (:mod:`.lifecycle.spare`)."""
    from .lifecycle import spare

    spare.unloaded(reason)


@hookimpl
def cached_prompts(entry, config):
    """Prompt prefixes this model's disk cache holds for its file and options now."""
    if entry.backend != BACKEND:
        return None
    from .engine.cache.disk import count
    from .options import LlamaOptions

    options = entry.options
    if isinstance(options, dict):
        try:
            options = LlamaOptions(**options)
        except (TypeError, ValueError):
            return 0
    return count(entry.name, entry.path, options)


def default_max_tokens(options, config) -> int | None:
    """The model's ``max_tokens``, else the config's ``[server].max_tokens``; None (no
    default, up to the context) for 0. The backend reads the server default from the config
    it is given, so it never needs the API."""
    value = options.max_tokens
    if value is None:
        value = getattr(getattr(config, "server", None), "max_tokens", None)
    return value or None


@hookimpl
def doctor_checks(config):
    """GPU offload and the CUDA libraries (the core checks each model file)."""
    from .lifecycle.doctor import checks

    return checks(config)


@hookimpl
def register_models(register, config):
    """The embedded demo models when the config has no models nor models folder (see :mod:`.demo`):
    SmolLM2-135M-Instruct as ``default``, used in place from its package, and Gemma 3 270M,
    whose file is assembled on first load. Registering writes nothing."""
    from .demo import register_demo

    register_demo(register, config)
