"""The batched engine: the step loop (``core``), its batch and slots (``batch``, ``slots``,
``prefix``), each choice's decoding state (``decoding``), sampler chains (``sampling``),
scoring (``scoring``), speculation (``spec``), the prompt caches (``cache``), and
the protocols of what it calls outside itself (``protocols``). Imports ``llama`` and
``grammar`` of the package, never ``dialects``, ``frontend`` or ``options``."""


def __getattr__(name: str):
    """``hoshikage_llamacpp.engine`` was the module that is now ``engine.core``: its public
    names still come from here for one release, with a DeprecationWarning."""
    import importlib

    core = importlib.import_module(f"{__name__}.core")
    if name.startswith("_") or not hasattr(core, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"{__name__}.{name} moved to {__name__}.core.{name}; the old path goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(core, name)
