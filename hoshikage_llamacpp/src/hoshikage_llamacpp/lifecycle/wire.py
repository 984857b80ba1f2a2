"""What travels between the server and a model process (:mod:`.isolation`, :mod:`.child`)
besides pickled requests and chunks: an exception, as plain data that any exception class
survives."""

from __future__ import annotations


def dump_error(exc: BaseException) -> tuple:
    """An exception as plain data that any exception class survives (some domain errors
    take other ``__init__`` arguments than the message, so they do not unpickle)."""
    cls = type(exc)
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if _plain(v)}
    return (cls.__module__, cls.__qualname__, str(exc), state)


def load_error(data: tuple) -> BaseException:
    """The exception :func:`dump_error` described; a HoshikageError when its class is not
    importable here."""
    import importlib

    from hoshikage_core.errors import HoshikageError

    module, qualname, message, state = data
    try:
        cls = getattr(importlib.import_module(module), qualname)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(qualname)
    except Exception:
        return HoshikageError(message)
    exc = cls.__new__(cls)
    BaseException.__init__(exc, message)
    try:
        exc.__dict__.update(state)
    except AttributeError:
        pass
    return exc


def _plain(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))
