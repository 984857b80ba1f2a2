"""What travels between the server (:mod:`.isolation`) and a model process (:mod:`.child`).

Messages are tuples sent as :mod:`multiprocessing.connection` messages over a socket pair
(a length, then a pickle), the first item naming the message.

From the server: ``("load", name, path, options, default_max_tokens)`` once (answered by
``("progress", share)`` while the weights load, ``("stage", "warming up", placement)`` and
then ``("loaded", ok, facts)``), then ``("generate", call_id, job_id, request, n)``,
``("score", call_id, job_id, request)``, ``("cancel", job_id)``, ``("call", call_id,
method, args)`` and ``("close",)``.

From the model process: ``("reply", call_id, ok, value)`` for each call, a submission
included; and once per engine step, from the engine's thread, every job's output in one
``("out", items, closes, stats)`` (:func:`dump_output`): ``items`` are ``(job_id, index,
chunk)``, ``closes`` ``(job_id, error)``, ``stats`` the engine's counters. An error (a
failed call or load, a job closed with one) travels as :func:`dump_error`'s plain data.
"""

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
