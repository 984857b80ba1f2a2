"""Turning a stream of token bytes into text deltas that are safe to send.

Two hazards sit between the tokens and the client:

* a UTF-8 character can be split across tokens (byte-fallback tokens carry one byte each), so
  bytes are decoded incrementally and an incomplete character waits for its next byte;
* a stop string can span tokens, so the tail of the text that could still become a stop
  string is held back, and only that tail: everything before it goes out at once.

Pure Python, no llama.cpp: the model feeds it bytes and sends what it returns.
"""

from __future__ import annotations

import codecs


def partial_tail(buf: str, markers: tuple[str, ...], longest: int | None = None) -> int:
    """How long a tail of ``buf`` is a proper prefix of one of ``markers`` (it might complete
    on the next piece, so it is held back): the longest such tail, 0 for none. ``longest``:
    the longest marker's length, where the caller knows it."""
    if longest is None:
        longest = max(map(len, markers), default=0)
    for size in range(min(len(buf), longest - 1), 0, -1):
        tail = buf[-size:]
        if any(marker.startswith(tail) for marker in markers):
            return size
    return 0


class HoldBack:
    """Finds the first of some marker strings in streamed text.

    :meth:`feed` returns the text that can be released now: all of it, except a tail that is
    a proper prefix of a marker (it might complete on the next piece). Once a marker is
    found, :attr:`found` is the marker, the text before it is released and the marker and
    everything after it go to :attr:`rest`.
    """

    def __init__(self, markers: tuple[str, ...] | list[str]):
        self.markers = tuple(m for m in markers if m)
        self._longest = max((len(m) for m in self.markers), default=0)
        self.held = ""
        self.found: str | None = None
        self.rest = ""

    def feed(self, text: str) -> str:
        if self.found is not None:
            self.rest += text
            return ""
        buf = self.held + text
        self.held = ""
        if not self.markers:
            return buf
        first, which = -1, None
        for marker in self.markers:
            at = buf.find(marker)
            if at != -1 and (first == -1 or at < first):
                first, which = at, marker
        if which is not None:
            self.found = which
            self.rest = buf[first:]
            return buf[:first]
        keep = partial_tail(buf, self.markers, self._longest)
        self.held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The held-back tail: the stream ended, so it was not a marker after all."""
        held, self.held = self.held, ""
        return held


class ToolCapture:
    """Answer text in, releasable text out; from a tool-call opener on, text is kept.

    ``markers`` (tool-call openers such as ``<tool_call>``) work like stop strings except
    that generation goes on: the marker and everything after it is kept in
    :attr:`captured` instead of being sent. With ``leading_json`` an answer whose first
    non-blank character is ``{`` or ``[`` is captured whole (a bare JSON tool call).
    """

    def __init__(self, markers: tuple[str, ...] | list[str] = (), leading_json: bool = False):
        self._capture = HoldBack(markers)
        self._leading_blank = ""
        self._started = not leading_json
        self.captured = ""

    def feed(self, text: str, final: bool = False) -> str:
        if self.captured:
            self.captured += text
            return ""
        if not self._started:
            text = self._leading_blank + text
            stripped = text.lstrip()
            if not stripped:
                self._leading_blank = text
                return self._leading_flush() if final else ""
            self._leading_blank = ""
            self._started = True
            if stripped[0] in "{[":
                self.captured = text
                return ""
        released = self._capture.feed(text)
        if self._capture.found is not None:
            self.captured = self._capture.rest
        elif final:
            released += self._capture.flush()
        return released

    def _leading_flush(self) -> str:
        blank, self._leading_blank = self._leading_blank, ""
        return blank


class TextStream:
    """Token bytes in, releasable text out, stopping at the first stop string.

    ``capture`` and ``capture_leading_json``: a :class:`ToolCapture` on the released text.
    """

    def __init__(
        self,
        stops: tuple[str, ...] | list[str] = (),
        capture: tuple[str, ...] | list[str] = (),
        capture_leading_json: bool = False,
    ):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = HoldBack(stops)
        self._tools = ToolCapture(capture, capture_leading_json)
        #: Characters of text decoded so far (released, held or captured).
        self.decoded_chars = 0

    @property
    def captured(self) -> str:
        return self._tools.captured

    @property
    def stopped(self) -> bool:
        """A stop string was found: nothing more will be released."""
        return self._stops.found is not None

    @property
    def found_stop(self) -> str | None:
        """The stop string that ended the stream, if one did."""
        return self._stops.found

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that can be sent now."""
        text = self._decoder.decode(data)
        self.decoded_chars += len(text)
        return self._route(text)

    def finish(self) -> str:
        """The stream ended: flush the decoder and every held-back tail."""
        out = self._route(self._decoder.decode(b"", final=True))
        tail = "" if self.stopped else self._stops.flush()
        return out + self._tools.feed(tail, final=True)

    def _route(self, text: str) -> str:
        if self.stopped:
            return ""
        return self._tools.feed(self._stops.feed(text))
