"""What a model process sends the server, counted where the server takes it in."""

from __future__ import annotations


def output_messages(proxy) -> list[int]:
    """From now on, each message with output that ``proxy`` (a model in its own process,
    ``ProcessModel``) takes in from its child: the list it returns grows by each one's
    number of chunks, as the server delivers them."""
    dispatch, counts = proxy._dispatch, []

    def counted(message):
        if message[0] == "out" and message[1]:
            counts.append(len(message[1]))
        return dispatch(message)

    proxy._dispatch = counted
    return counts
