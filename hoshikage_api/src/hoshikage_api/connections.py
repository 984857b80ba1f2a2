"""Slow clients do not hold the server: what ``hoshikage serve`` wraps around the app and
uvicorn's HTTP protocol.

- :func:`buffered_send` (ASGI): the app's writes go into a buffer of at most ``send_buffer``
  bytes that a task of its own hands to the socket, each write waiting at most
  ``send_timeout`` for the client to read. While the client keeps up (the buffer is empty
  and uvicorn has not paused writing), a write goes to the socket at once, from the app's
  own ``send``: a streamed token then costs no turn of the event loop beyond the app's.
  A response that fits is therefore done as far as the app is concerned when generation
  ends: the session closes and its slot is released, whatever the client does. A client
  that reads nothing for ``send_timeout`` has its connection closed: the app then receives
  a disconnect, which cancels the generation as when a client leaves.
- :func:`timed_protocol` (uvicorn): a request's headers must arrive within
  ``header_timeout`` of its first byte (or of the connection), and its body within
  ``body_timeout`` of the headers; otherwise the connection is closed. A client that trickles
  a byte every few seconds (slowloris) cannot keep a connection forever. And output the
  client takes nothing of for ``send_timeout`` (in the middle of a response or after it, in
  the socket's buffer) aborts the connection.
- uvicorn's own ``limit_concurrency`` (``max_connections``) answers 503 beyond that many
  connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

log = logging.getLogger("hoshikage.api")


class SlowClient(Exception):
    """The client read nothing for ``send_timeout``: its connection is closed."""


class _Writer:
    """One response's buffered writes (see the module docstring)."""

    def __init__(self, send, timeout: float, limit: int):
        self._send = send
        self._timeout = timeout
        self._limit = limit
        self._queue: deque = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._failed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ended = False
        self.failed: SlowClient | None = None

    async def receive(self, receive):
        """The app's ``receive``: a disconnect as soon as a write has failed, so the app
        stops its stream as it does when a client leaves (nothing raised through it)."""
        if self.failed is not None:
            return {"type": "http.disconnect"}
        waiting = asyncio.ensure_future(receive())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait([waiting, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        return {"type": "http.disconnect"}

    async def send(self, message) -> None:
        if self.failed is not None:
            return  # the connection is being closed: the rest goes nowhere
        if not self._queue and self._writable():
            # Nothing waits to go before it, and the socket takes it without waiting: it is
            # written now, in the app's turn of the loop, not in a turn of the writer task's
            # (one more turn of the loop a streamed token, a timer and two events).
            try:
                await self._send(message)
            except Exception as exc:  # the connection broke: nothing more to send
                self._fail(SlowClient(f"the connection failed: {exc!r}"))
                return
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                self._end()  # a writer task that took over earlier has nothing left
            return
        self._queue.append(message)
        self._bytes += len(message.get("body", b""))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="hoshikage-send")
        self._wake.set()
        while self._bytes > self._limit and self.failed is None:
            self._room.clear()
            await self._room.wait()

    async def _drain(self) -> None:
        while True:
            while self._queue:
                message = self._queue[0]
                try:
                    # In this task: wait_for would start a task per message (Python 3.11),
                    # and a send that need not wait finishes without giving the loop a turn.
                    async with asyncio.timeout(self._timeout):
                        await self._send(message)
                except TimeoutError:
                    self._fail(
                        SlowClient(f"the client read nothing for {self._timeout:g}s (send_timeout)")
                    )
                    return
                except Exception as exc:  # the connection broke: nothing more to send
                    self._fail(SlowClient(f"the connection failed: {exc!r}"))
                    return
                self._queue.popleft()
                self._bytes -= len(message.get("body", b""))
                self._room.set()
                if message.get("type") == "http.response.body" and not message.get("more_body"):
                    return
            if self._ended:
                return
            self._wake.clear()
            await self._wake.wait()

    def _writable(self) -> bool:
        """Whether the server's send would write at once: uvicorn's send waits only while its
        protocol has paused writing (the socket's buffer is full: the client is not reading).
        False where that cannot be told (another server): the writer task sends."""
        flow = getattr(getattr(self._send, "__self__", None), "flow", None)
        return flow is not None and flow.write_paused is False

    def _fail(self, failed: SlowClient) -> None:
        self.failed = failed
        self._failed.set()
        self._room.set()
        self._end()

    def _end(self) -> None:
        """Nothing more will be queued: the writer task, idle or not, ends once the queue is
        empty (:meth:`close` waits for it)."""
        self._ended = True
        self._wake.set()

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Wait until everything is written (each write within the timeout)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        if self.failed is not None and self._queue:
            raise self.failed


def buffered_send(app, send_timeout: float, send_buffer: int):
    """``app`` with each HTTP response's writes buffered (see the module docstring)."""

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        writer = _Writer(send, send_timeout, send_buffer)
        try:
            await app(scope, lambda: writer.receive(receive), writer.send)
        except BaseException as exc:
            if not _slow(exc):
                writer.abort()
                raise
            # else the stream stopped (its generation is cancelled); the connection closes below
        await writer.close()
        if writer.failed is not None:
            log.info("closed a connection: %s", writer.failed)
            raise writer.failed  # uvicorn closes the connection of a started response

    return asgi


def _slow(exc: BaseException) -> bool:
    """``exc`` is :class:`SlowClient`, alone or in the exception group of a task group."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_slow(sub) for sub in exc.exceptions)
    return isinstance(exc, SlowClient)


class _QuietSlowClient(logging.Filter):
    """uvicorn logs every exception out of the app with a traceback; a slow client is not an
    error of the server (it is logged once, above, in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _slow(record.exc_info[1]))


def quiet_slow_clients() -> None:
    logging.getLogger("uvicorn.error").addFilter(_QuietSlowClient())


def timed_protocol(header_timeout: float, body_timeout: float, send_timeout: float):
    """uvicorn's h11 protocol with the read timeouts and the write watchdog (see the module
    docstring)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _read_timer: asyncio.TimerHandle | None = None
        _read_phase = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm(h11.IDLE)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE and self.conn.their_state is h11.IDLE and data:
                if self._read_phase is not h11.IDLE:
                    self._arm(h11.IDLE)  # the first bytes of the next request
            elif state is h11.SEND_BODY:
                if self._read_phase is not h11.SEND_BODY:
                    self._arm(h11.SEND_BODY)
            else:
                self._disarm()  # the request is in: the app answers at its own pace

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # uvicorn's keep-alive timeout takes over until the next bytes
            if self.transport.get_write_buffer_size():
                self._watch_writes()  # what the client has not read yet

        def pause_writing(self) -> None:
            super().pause_writing()
            self._watch_writes()

        _watching = False

        def _watch_writes(self, last: int | None = None, progress: float | None = None) -> None:
            """Every second while output waits for the client: abort the connection once the
            client has taken nothing for ``send_timeout`` (a plain close would wait for the
            buffer to drain, which a client that never reads never lets happen)."""
            if self.transport.is_closing() and last is None:
                return
            if last is None and self._watching:
                return
            now = self.loop.time()
            size = self.transport.get_write_buffer_size()
            if size == 0:
                self._watching = False
                return
            if last is None or size < last:
                progress = now
            if now - progress >= send_timeout:
                self._watching = False
                log.info("closed a connection: the client read nothing for %gs", send_timeout)
                self.transport.abort()
                return
            self._watching = True
            self.loop.call_later(1.0, self._watch_writes, size, progress)

        def _arm(self, phase) -> None:
            self._disarm()
            self._read_phase = phase
            seconds = header_timeout if phase is h11.IDLE else body_timeout
            self._read_timer = self.loop.call_later(seconds, self._read_timed_out, phase)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
            self._read_timer = None
            self._read_phase = None

        def _read_timed_out(self, phase) -> None:
            self._read_timer = None
            if self.conn.their_state is phase and not self.transport.is_closing():
                what = "headers" if phase is h11.IDLE else "body"
                log.debug("closed a connection: its request %s were too slow", what)
                self.transport.close()

    return TimedH11Protocol
