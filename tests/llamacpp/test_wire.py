"""The model process's wire (hoshikage_llamacpp.lifecycle.wire): what the server reads is
what the model process sent, through a real socket pair and multiprocessing's Connection."""

from __future__ import annotations

import pickle
import socket
import threading
import time
from multiprocessing.connection import Connection

import pytest
from hoshikage_core.errors import ContextLengthExceeded
from hoshikage_core.protocol import Chunk, Scores, TokenLogprob, ToolCallDelta
from hoshikage_llamacpp.lifecycle.wire import (
    Inbox,
    dump_error,
    dump_output,
    load_chunk,
    load_error,
)


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    server, child = Connection(ours.detach()), Connection(theirs.detach())
    yield server, child
    server.close()
    if not child.closed:
        child.close()


def test_the_inbox_reads_what_a_connection_sent_in_order(pair):
    server, child = pair
    sent = [("reply", 1, True, None), ("reply", 2, True, "x" * 200_000), ("stage", "up", {})]
    for message in sent:
        child.send(message)
    child.send_bytes(dump_output([(3, 0, Chunk(text="hi"))], [], (1, 2, 3, 4, 5)))
    inbox = Inbox(server)
    assert [inbox.read(5) for _ in sent] == sent
    kind, items, closes, stats = inbox.read(5)
    assert (kind, closes, stats) == ("out", [], (1, 2, 3, 4, 5))
    assert [(job, index, load_chunk(chunk)) for job, index, chunk in items] == [
        (3, 0, Chunk(text="hi"))
    ]


def test_the_inbox_times_out_and_sees_the_other_end_close(pair):
    server, child = pair
    inbox = Inbox(server)
    started = time.monotonic()
    assert inbox.read(0.05) is None
    assert 0.04 <= time.monotonic() - started < 2
    child.send(("progress", 0.5))
    assert inbox.read(None) == ("progress", 0.5)  # no timeout: waits
    child.close()
    with pytest.raises(EOFError):
        inbox.read(None)


def test_an_event_loops_inbox_takes_what_has_arrived_without_waiting(pair):
    """The loop's inbox (``own``) reads whatever the socket holds when told it is readable:
    the whole messages in it, none while a long one is still arriving, None once the other
    end has closed; its descriptor is its own, and the connection stays blocking."""
    server, child = pair
    inbox = Inbox(server, own=True)
    assert inbox.fileno() != server.fileno()
    assert inbox.read_ready() == []  # nothing yet: no wait
    child.send(("reply", 1, True, None))
    child.send(("stage", "up", {}))
    time.sleep(0.05)
    assert inbox.read_ready() == [("reply", 1, True, None), ("stage", "up", {})]
    big = ("reply", 2, True, "x" * 3_000_000)  # far over a socket's buffer: in pieces
    sender = threading.Thread(target=child.send, args=(big,))
    sender.start()
    got, deadline = [], time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        got = inbox.read_ready()
        if not got:
            time.sleep(0.001)
    sender.join(10)
    assert got == [big]
    server.send(("cancel", 3))  # the server's end still sends as a blocking connection
    assert child.recv() == ("cancel", 3)
    child.close()
    time.sleep(0.05)
    assert inbox.read_ready() is None
    inbox.close()


def test_every_kind_of_output_survives_the_step_message():
    chunks = [
        Chunk(text="a"),
        Chunk(
            text="b",
            finish_reason="tool_calls",
            logprobs=(TokenLogprob(token="b", logprob=-0.5, bytes=(98,)),),
            tool_calls=({"id": "c1", "type": "function", "function": {"name": "f"}},),
            prompt_tokens=3,
            completion_tokens=2,
            cached_tokens=1,
            reasoning="r",
            reasoning_tokens=1,
            tool_deltas=(ToolCallDelta(index=0, id="c1", name="f"),),
        ),
        Scores(logprobs=((-1.0, -2.0),), token_counts=((1, 2),), prompt_tokens=4, cached_tokens=0),
    ]
    error = ContextLengthExceeded(300, 256)
    items = [(1, i, chunk) for i, chunk in enumerate(chunks)]
    kind, sent, closes, stats = pickle.loads(dump_output(items, [(1, dump_error(error))], ()))
    assert [load_chunk(chunk) for _, _, chunk in sent] == chunks
    again = load_error(closes[0][1])
    assert type(again) is ContextLengthExceeded and again.n_ctx == 256
