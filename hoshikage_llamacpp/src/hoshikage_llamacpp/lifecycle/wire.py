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
import os
import pickle
import socket
import struct

import attrs
from hoshikage_core.protocol import Chunk

_CHUNK_FIELDS = operator.attrgetter(*(field.name for field in attrs.fields(Chunk)))


def dump_output(items: list, closes: list, stats: tuple) -> bytes:
    """One engine step's output for every job, as one message: ``("out", items, closes,
    stats)`` with each :class:`Chunk` as the tuple of its fields.

    It is sent once per step, on the engine's thread, so it is built for speed: the frozen
    attrs objects' state goes through Python code both ways, plain tuples do not, and
    :func:`pickle.dumps` skips the per-call set-up of :mod:`multiprocessing`'s pickler (with
    4 chunks: 11 µs to encode before, 2.5 now; 12 µs to decode, 6 now with the chunks
    rebuilt). What is not a chunk (a scoring job's one ``Scores``) travels as itself."""
    items = [
        (job, index, _CHUNK_FIELDS(chunk) if type(chunk) is Chunk else chunk)
        for job, index, chunk in items
    ]
    return pickle.dumps(("out", items, closes, stats), pickle.HIGHEST_PROTOCOL)


def load_chunk(payload) -> object:
    """An item's output as :func:`dump_output` sent it: a :class:`Chunk` again."""
    return Chunk(*payload) if type(payload) is tuple else payload


class Inbox:
    """The server's reading end: the model process's messages, one system call each.

    :class:`multiprocessing.connection.Connection` spends three per message (a ``poll`` for
    the timeout, then a read of the length and one of the pickle), and each gives the GIL
    away and takes it back, on a thread that competes with llama.cpp's for the cores once
    per engine step. Here the socket's own receive timeout (``SO_RCVTIMEO``) stands for the
    ``poll``, and one read takes whatever has arrived: usually exactly one message. The
    framing is ``Connection.send_bytes``'s, which the model process sends with: a 4-byte
    big-endian length (-1, then 8 bytes, over 2 GiB), then the bytes.

    Read by a thread (:meth:`read`, which waits) or by an event loop (:meth:`read_ready`,
    when the loop says the socket is readable). The loop's inbox (``own``) reads through a
    duplicate of the descriptor, which it closes itself (:meth:`close`) once the model
    process has closed its end: the loop's registration then never outlives the descriptor
    it watches, whichever thread closes ``conn`` (a kill).
    """

    #: Bytes asked for per read beyond what the message being read still needs.
    READ = 1 << 16

    def __init__(self, conn, own: bool = False) -> None:
        self._conn = conn
        # A socket object only to read with a flag (MSG_DONTWAIT): the descriptor stays
        # blocking, as the server's sends on ``conn`` need it.
        self._sock = socket.socket(fileno=os.dup(conn.fileno())) if own else None
        self._fd = conn.fileno() if self._sock is None else self._sock.fileno()
        self._buffer = bytearray()
        self._timeout: float | None = -1.0  # none set yet

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Close the duplicate descriptor of an ``own`` inbox."""
        if self._sock is not None:
            self._sock.close()

    def read_ready(self) -> list | None:
        """Every whole message that has arrived, without waiting (an ``own`` inbox, when
        its socket is readable); None once the other end has closed."""
        try:
            data = self._sock.recv(max(self.READ, self._missing()), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):  # nothing after all
            data = None
        except OSError:
            return None
        if data is not None:
            if not data:
                return None
            self._buffer += data
        messages = []
        while (found := self._take()) is not None:
            messages.append(found[0])
        return messages

    def read(self, timeout: float | None):
        """The next message; None after ``timeout`` seconds without one (``None``: wait as
        long as it takes). :class:`EOFError` once the other end has closed."""
        while True:
            found = self._take()
            if found is not None:
                return found[0]
            if self._conn.closed:  # by this process (a kill): its descriptor may be reused
                raise EOFError
            if timeout != self._timeout:
                self._set_timeout(timeout)
            try:
                data = os.read(self._fd, max(self.READ, self._missing()))
            except BlockingIOError:  # the receive timeout passed
                return None
            if not data:
                raise EOFError
            self._buffer += data

    def _set_timeout(self, timeout: float | None) -> None:
        seconds = 0.0 if timeout is None else max(timeout, 1e-6)  # 0 is "no timeout"
        sock = socket.socket(fileno=os.dup(self._fd))  # the same socket, closed apart
        try:
            sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_RCVTIMEO,
                struct.pack("ll", int(seconds), int(seconds % 1 * 1e6)),
            )
        finally:
            sock.close()
        self._timeout = timeout

    def _bounds(self) -> tuple[int, int] | None:
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        (size,) = struct.unpack_from("!i", buffer)
        if size != -1:
            return 4, 4 + size
        if len(buffer) < 12:
            return None
        (size,) = struct.unpack_from("!Q", buffer, 4)
        return 12, 12 + size

    def _missing(self) -> int:
        bounds = self._bounds()
        return 0 if bounds is None else bounds[1] - len(self._buffer)

    def _take(self) -> tuple | None:
        """``(message,)`` when the buffer holds a whole one, else None."""
        bounds = self._bounds()
        if bounds is None or len(self._buffer) < bounds[1]:
            return None
        start, end = bounds
        with memoryview(self._buffer) as view:
            message = pickle.loads(view[start:end])
        del self._buffer[:end]
        return (message,)


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
