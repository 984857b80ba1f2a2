"""Tool calls as a streaming surface sends them: each call's deltas in order (its name
first, then argument pieces), from the chunks' :attr:`~hoshikage_core.protocol.Chunk.tool_deltas`.

A backend that streams no deltas sets only the last chunk's ``tool_calls``: each such call
becomes deltas of its own there (the name, then all its arguments at once), so a surface
writes calls one way whichever the backend does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from hoshikage_core.protocol import Chunk, ToolCallDelta


def _text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


class CallDeltas:
    """One choice's calls so far. ``whole(arguments)``: the argument text of a call that
    came whole (a surface whose arguments must be an object renders it here)."""

    __slots__ = ("started", "_whole")

    def __init__(self, whole: Callable[[Any], str] = _text):
        #: The indexes of the calls whose first delta went out.
        self.started: set[int] = set()
        self._whole = whole

    def of(self, chunk: Chunk) -> list[ToolCallDelta]:
        """The deltas to send for ``chunk``, in order."""
        out = list(chunk.tool_deltas or ())
        started = self.started
        for delta in out:
            if delta.name is not None:
                started.add(delta.index)
        for index, call in enumerate(chunk.tool_calls or ()):
            if index in started:
                continue
            started.add(index)
            function = call.get("function") or {}
            call_id = str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}")
            out.append(ToolCallDelta(index, id=call_id, name=str(function.get("name", ""))))
            arguments = self._whole(function.get("arguments", ""))
            if arguments:
                out.append(ToolCallDelta(index, arguments=arguments))
        return out
