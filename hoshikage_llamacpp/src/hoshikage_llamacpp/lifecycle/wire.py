"""What travels between the server and a model process (:mod:`.isolation`, :mod:`.child`)
besides pickled requests: a step's output, as plain tuples, and an exception, as plain data
that any exception class survives."""

from __future__ import annotations

import operator
import pickle

import attrs
from hoshikage_core.protocol import Chunk

_CHUNK_FIELDS = operator.attrgetter(*(field.name for field in attrs.fields(Chunk)))


def dump_output(items: list, closes: list, stats: tuple) -> bytes:
    """One engine step's output for every job, as one message: ``("out", items, closes,
    stats)`` with each :class:`Chunk` as the tuple of its fields.

    It is sent once per step, on the engine's thread, so it is built for speed: plain
    tuples pickle and unpickle in about a twentieth of the time of the frozen attrs objects
    (whose state goes through Python code both ways), and :func:`pickle.dumps` skips the
    per-call set-up of :mod:`multiprocessing`'s pickler. What is not a chunk (a scoring
    job's one ``Scores``) travels as itself."""
    items = [
        (job, index, _CHUNK_FIELDS(chunk) if type(chunk) is Chunk else chunk)
        for job, index, chunk in items
    ]
    return pickle.dumps(("out", items, closes, stats), pickle.HIGHEST_PROTOCOL)


def load_chunk(payload) -> object:
    """An item's output as :func:`dump_output` sent it: a :class:`Chunk` again."""
    return Chunk(*payload) if type(payload) is tuple else payload


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
