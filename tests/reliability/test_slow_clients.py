"""Slow clients do not hold the server: a client that never reads has its slot released when
generation ends (and its connection closed after ``send_timeout``), and connections that
trickle their headers or body (slowloris) are closed after ``header_timeout`` /
``body_timeout``; beyond ``max_connections`` a request is a 503. A client that keeps up is
written to from the app's own ``send``, and one that falls behind gets every byte in order
through the buffer."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import psutil
import pytest
import uvicorn
from hoshikage_api.connections import buffered_send, timed_protocol

from tests.support.server import running_server, wait_for

pytestmark = pytest.mark.timeout(180)


def _config(tiny_model_path, **server):
    return {
        "server": {"concurrency": 8, **server},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 1024, "parallel": 8}],
    }


def _never_reading_stream(server, max_tokens: int, n: int = 1) -> socket.socket:
    """A streamed chat with logprobs (big events) on a socket with a tiny receive buffer,
    that is never read."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, int(port)))
    body = json.dumps(
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": max_tokens,
            "n": n,
            "stream": True,
            "logprobs": True,
            "top_logprobs": 20,
            "temperature": 1.5,
            "logit_bias": {"2": -100},
        }
    ).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def _established(pid: int, local_port: int) -> bool:
    return any(
        c.raddr and c.raddr.port == local_port and c.status == psutil.CONN_ESTABLISHED
        for c in psutil.Process(pid).net_connections(kind="tcp")
    )


def _running(server) -> int:
    return server.status()["running"]


def test_a_never_reading_client_does_not_keep_its_slot(tiny_model_path):
    config = _config(tiny_model_path, send_timeout="3s", send_buffer="64KiB")
    with running_server(config) as server:
        # 8 choices × 800 events of 1.5 kB: 9.6 MB, far more than the socket buffers (the
        # kernel's may grow to 4 MB) and send_buffer.
        sock = _never_reading_stream(server, 800, n=8)
        try:
            started = time.monotonic()
            wait_for(lambda: _running(server) >= 1, 10, "the stream to start")
            wait_for(lambda: _running(server) == 0, 120, "the slot to be released")
            held = time.monotonic() - started
            print(f"a never-reading client's slot was held {held:.1f} s (send_timeout 3 s)")
            port = sock.getsockname()[1]
            wait_for(lambda: not _established(server.process.pid, port), 10, "the close")
            # It was cut short by the send timeout: the generation was cancelled.
            assert "closed a connection: the client read nothing" in server.log()
            # The server is free for everyone else at once.
            r = httpx.post(
                server.base_url + "/v1/chat/completions",
                json={
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 2,
                },
                timeout=10,
            )
            assert r.status_code == 200
            assert "Traceback" not in server.log()
        finally:
            sock.close()


def test_the_slot_is_released_when_generation_ends(tiny_model_path):
    """An answer that fits the buffer: the slot goes back when the engine is done, long
    before the send timeout, although the client has read nothing."""
    config = _config(tiny_model_path, send_timeout="30s", send_buffer="8MiB")
    with running_server(config) as server:
        sock = _never_reading_stream(server, 400)
        try:
            started = time.monotonic()
            wait_for(
                lambda: _running(server) == 0 and server.status()["models"][0]["requests"],
                20,
                "the end",
            )
            assert time.monotonic() - started < 15
            port = sock.getsockname()[1]
            assert _established(server.process.pid, port)  # still open: the client may read
            wait_for(lambda: not _established(server.process.pid, port), 60, "the send timeout")
        finally:
            sock.close()


def _trickle(server, payload: bytes) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(payload)
    return sock


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(65536) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_slowloris_connections_are_closed(tiny_model_path):
    config = _config(tiny_model_path, header_timeout="2s", body_timeout="3s", max_connections=64)
    with running_server(config) as server:
        headers = [
            _trickle(server, b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-A: ")
            for _ in range(40)
        ]
        bodies = [
            _trickle(
                server,
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
            )
            for _ in range(10)
        ]
        idle = [_trickle(server, b"") for _ in range(5)]
        try:
            started = time.monotonic()
            while time.monotonic() - started < 8:
                for sock in headers + bodies:  # a byte a second keeps none of them alive
                    try:
                        sock.send(b"a")
                    except OSError:
                        pass
                assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
                if all(_closed(s) for s in headers + bodies + idle):
                    break
                time.sleep(1)
            took = time.monotonic() - started
            assert all(_closed(s) for s in headers + idle), "a trickled header kept its connection"
            assert all(_closed(s) for s in bodies), "a trickled body kept its connection"
            assert took < 8
        finally:
            for sock in headers + bodies + idle:
                sock.close()


def test_beyond_max_connections_a_request_is_503(tiny_model_path):
    config = _config(tiny_model_path, header_timeout="3s", max_connections=8)
    with running_server(config) as server:
        socks = [_trickle(server, b"") for _ in range(10)]
        try:
            time.sleep(0.2)
            assert httpx.get(server.base_url + "/v1/models", timeout=5).status_code == 503
        finally:
            for sock in socks:
                sock.close()
        wait_for(
            lambda: httpx.get(server.base_url + "/v1/models", timeout=5).status_code == 200,
            10,
            "room",
        )


async def _serve_in_process(app):
    """``app`` behind ``hoshikage serve``'s wrapping (buffered sends, the timed protocol) on
    uvicorn in this loop: (server, its task, port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        buffered_send(app, 5.0, 64 * 1024),
        log_config=None,
        access_log=False,
        http=timed_protocol(5.0, 5.0, 5.0),
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


def _numbered_stream(events: int, seen: list, width: int = 7):
    """An ASGI app that streams ``events`` numbered lines of ``width`` bytes, noting after
    each write whether a writer task (the buffered send's own) exists."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(events):
            line = f"{i:06d}".ljust(width - 1, ".").encode() + b"\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})
            seen.append(any(t.get_name() == "hoshikage-send" for t in asyncio.all_tasks()))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_a_reading_client_is_written_to_in_the_apps_own_turn():
    """A client that keeps up is written to by the app's ``send`` itself: no writer task, so
    no turn of the loop a token beyond the app's (the writer task costs one, with its timer
    and events); the buffer and its task take over only once the socket's buffer is full."""
    seen: list[bool] = []
    server, task, port = await _serve_in_process(_numbered_stream(300, seen))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"http://127.0.0.1:{port}/")
        assert r.text.splitlines() == [f"{i:06d}" for i in range(300)]
        assert len(seen) == 300 and not any(seen)
    finally:
        server.should_exit = True
        await task


async def test_a_client_that_stops_reading_gets_every_byte_in_order_once_it_reads():
    """The socket's buffer fills while the client reads nothing: the writes go through the
    buffer and its task from then on (the app waits once ``send_buffer`` is full), and
    what the client reads later is whole and in order."""
    seen: list[bool] = []
    events = 10000  # 10 MB, more than the socket buffers (the kernel's may grow to 4 MB)
    server, task, port = await _serve_in_process(_numbered_stream(events, seen, 1000))
    try:
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("GET", f"http://127.0.0.1:{port}/") as response,
        ):
            for _ in range(500):  # the app writes until the socket's buffer is full
                if any(seen):
                    break
                await asyncio.sleep(0.01)
            assert any(seen), "the writer task never took over"
            lines = [line[:6] async for line in response.aiter_lines()]
        assert len(seen) == events
        assert lines == [f"{i:06d}" for i in range(events)]
    finally:
        server.should_exit = True
        await task
