"""Tool calls streamed as they are generated: a partial read of the captured call text after
each token, and the difference from what was sent (llama.cpp's partial parse and
``common_chat_msg_diff``, vLLM's ``extract_tool_calls_streaming``).

Each family (its class in :mod:`.families`) has an incremental reader here that sees
the capture so far and says, per call, its name once the name is complete, and the argument
text that is safe to send:

* JSON forms (hermes, llama3, mistral, harmony, deepseek, kimi, command-r, command-r-plus,
  functionary, granite, firefunction, tool-calls, apertus, and bare JSON): the model's own
  argument text, as far as it is valid JSON (a resumable scanner reads it, so each token
  costs only its own characters); Gemma 4's notation is turned into JSON as it is written
  (strings between ``<|"|>`` marks, bare keys quoted) and read the same way;
* XML forms (qwen3-coder, seed, glm, minimax, dsml): a JSON rendering (``json.dumps`` of the
  parameters: the same text :func:`.calls.parse` writes), built member by member: a
  value that may be JSON once it ends, a text value as it is written (:func:`_partial`);
* LFM2's Python call syntax (pythonic): each keyword argument rendered as JSON once its
  value ends.

The rules (docs/backend-llamacpp.md, "Tool calls streamed"):

1. A call starts streaming once its name is complete and is one of the request's tools,
   and (JSON forms) its arguments have begun: the first key of the JSON object, or ``{}``.
   Its first delta is the id and name, then argument pieces. Calls start in the order
   they are written.
2. Argument text goes out only as far as it is valid JSON, so any prefix parses with a
   partial JSON parser (the Anthropic SDK parses every ``input_json_delta``).
3. At the end, when the capture parses (:func:`.calls.parse`), each call's
   ``arguments`` are its deltas joined: the last chunk carries what was still missing
   (for a call never streamed: all of it). For the JSON forms that is the model's own
   argument text, not a re-dump of it. Where the whole reading disagrees with what was
   streamed, the streamed text stands, closed where closing makes it JSON (:func:`_healed`).
4. A botched capture (bad JSON, a tool not offered, cut by ``max_tokens``) is text, as in a
   whole answer, when no call has started. Once one has, it cannot be taken back: the calls
   that started are the answer's calls, each with the argument text streamed (valid JSON
   so far, but incomplete where the model went wrong, as a call cut by ``max_tokens`` is on
   OpenAI), and the rest of the capture is dropped.

Every family has one (tests/llamacpp/test_tool_families.py fails for a family without).
Pure Python.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hoshikage_core.protocol import ToolCallDelta

from ..text_stream import partial_tail
from .base import ToolFormat
from .calls import GLM_ARG, param_value

# ---- a resumable JSON scanner ---------------------------------------------------------------

_WS = " \t\n\r"
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?\Z")
_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9]\d*)(?:\.\d*)?(?:(?<=\d)[eE][+-]?\d*)?)?\Z")
_LITERALS = ("true", "false", "null")
_HEX = frozenset("0123456789abcdefABCDEF")

# scanner states
_VALUE, _VALUE_OR_CLOSE, _KEY_OR_CLOSE, _KEY, _COLON, _NEXT = range(6)
_STRING, _ESCAPE, _UNICODE, _SCALAR, _DONE, _BAD = range(6, 12)


class JsonScan:
    """One JSON value read from ``at`` in a text that grows.

    :meth:`feed` reads on up to a position; :attr:`pos` is then how far the text is valid
    JSON (a prefix of some valid value), :attr:`start` where the value begins (after blanks),
    :attr:`end` where it ended (None while it goes on), :attr:`bad` whether it went wrong at
    :attr:`pos`. With ``track``, the top object (or each object in a top array) is kept in
    :attr:`objects` as ``[members, end]``: its members ``[key, value start, value end]``
    each, and where it ended (None while open).
    """

    __slots__ = ("pos", "start", "end", "state", "stack", "objects", "_tok", "_is_key", "_hex")

    def __init__(self, at: int, track: bool = False):
        self.pos = at
        self.start: int | None = None
        self.end: int | None = None
        self.state = _VALUE
        #: Open containers: [kind "{" or "[", members and record (tracked objects) or None].
        self.stack: list[list] = []
        self.objects: list[list[list]] | None = [] if track else None
        self._tok = 0  # where the current string or scalar began
        self._is_key = False
        self._hex = 0

    @property
    def bad(self) -> bool:
        return self.state == _BAD

    @property
    def done(self) -> bool:
        return self.end is not None

    def feed(self, text: str, upto: int) -> None:
        i = self.pos
        while i < upto:
            state = self.state
            if state >= _DONE:
                break
            c = text[i]
            if state == _STRING:
                if c == '"':
                    if self._is_key:
                        members = self.stack[-1][1]
                        if members is not None:
                            members.append([json.loads(text[self._tok : i + 1]), None, None])
                        self.state = _COLON
                    else:
                        self._value_done(i + 1)
                elif c == "\\":
                    self.state = _ESCAPE
                elif c < " ":  # a raw control character: json.loads refuses it
                    self.state = _BAD
                    break
            elif state == _ESCAPE:
                if c == "u":
                    self.state, self._hex = _UNICODE, 0
                elif c in '"\\/bfnrt':
                    self.state = _STRING
                else:
                    self.state = _BAD
                    break
            elif state == _UNICODE:
                if c not in _HEX:
                    self.state = _BAD
                    break
                self._hex += 1
                if self._hex == 4:
                    self.state = _STRING
            elif state == _SCALAR:
                word = text[self._tok : i + 1]
                number = word[0] in "-0123456789"
                if c in _NUMBER_CHARS if number else c.isalpha():
                    if not (
                        _NUMBER_PREFIX.match(word)
                        if number
                        else any(lit.startswith(word) for lit in _LITERALS)
                    ):
                        self.state = _BAD
                        break
                else:
                    word = word[:-1]
                    if not (_NUMBER.match(word) or word in _LITERALS):
                        self.state = _BAD
                        break
                    self._value_done(i)
                    continue  # the character after the scalar is read again, in its new state
            elif c in _WS:
                pass
            elif state == _VALUE or state == _VALUE_OR_CLOSE:
                if c == "]" and state == _VALUE_OR_CLOSE:
                    self._close(i)
                elif not self._open_value(text, i, c):
                    self.state = _BAD
                    break
            elif state == _KEY_OR_CLOSE and c == "}":
                self._close(i)
            elif (state == _KEY_OR_CLOSE or state == _KEY) and c == '"':
                self.state, self._tok, self._is_key = _STRING, i, True
            elif state == _COLON and c == ":":
                self.state = _VALUE
            elif state == _NEXT and c == ",":
                self.state = _KEY if self.stack[-1][0] == "{" else _VALUE
            elif state == _NEXT and c == ("}" if self.stack[-1][0] == "{" else "]"):
                self._close(i)
            else:
                self.state = _BAD
                break
            i += 1
        self.pos = i

    def _open_value(self, text: str, i: int, c: str) -> bool:
        if c not in '{["-0123456789tfn':
            return False
        if self.start is None:
            self.start = i
        if self.stack:
            members = self.stack[-1][1]
            if members is not None:
                members[-1][1] = i
        if c == "{":
            track = self.objects is not None and (
                not self.stack or (len(self.stack) == 1 and self.stack[0][0] == "[")
            )
            members = [] if track else None
            record = [members, None] if track else None
            if track:
                self.objects.append(record)
            self.stack.append(["{", members, record])
            self.state = _KEY_OR_CLOSE
        elif c == "[":
            self.stack.append(["[", None, None])
            self.state = _VALUE_OR_CLOSE
        elif c == '"':
            self.state, self._tok, self._is_key = _STRING, i, False
        else:
            self.state, self._tok = _SCALAR, i
        return True

    def _close(self, i: int) -> None:
        record = self.stack.pop()[2]
        if record is not None:
            record[1] = i + 1
        self._value_done(i + 1)

    def _value_done(self, end: int) -> None:
        if not self.stack:
            self.end, self.state = end, _DONE
            return
        self.state = _NEXT
        members = self.stack[-1][1]
        if members is not None and members and members[-1][2] is None and self.stack[-1][0] == "{":
            members[-1][2] = end


# ---- what a reader sees of each call ---------------------------------------------------------


class View:
    """One call as read so far: its ``name`` once complete (else None), the argument text
    safe to send, whether enough of it is known to start (rule 1), and whether its
    arguments are complete."""

    __slots__ = ("name", "args", "started", "done")

    def __init__(self, name: str | None, args: str = "", started: bool = False, done: bool = False):
        self.name, self.args, self.started, self.done = name, args, started, done

    def __repr__(self) -> str:  # for test failures
        return f"View({self.name!r}, {self.args!r}, started={self.started}, done={self.done})"


#: The arguments have begun: the object's first key (and its colon) or its end.
_BEGUN = re.compile(r'\{\s*(?:\}|"(?:[^"\\]|\\.)*"\s*:)')


class Reader:
    """The partial reads of one capture: the JSON scanners, kept between calls."""

    def __init__(self, read: Callable[[Reader, str, bool], list[View]]):
        self._read = read
        self._scans: dict[tuple[int, bool], JsonScan] = {}

    def __call__(self, text: str, final: bool) -> list[View]:
        return self._read(self, text, final)

    def scan(self, text: str, at: int, upto: int | None = None, track: bool = False) -> JsonScan:
        scan = self._scans.get((at, track))
        if scan is None:
            scan = self._scans[(at, track)] = JsonScan(at, track)
        scan.feed(text, len(text) if upto is None else upto)
        return scan

    def args(self, name: str | None, text: str, at: int, upto: int | None = None) -> View:
        """A call whose arguments are the JSON object at ``at``."""
        scan = self.scan(text, at, upto)
        if name is None or scan.start is None:
            return View(name)
        args = text[scan.start : scan.end if scan.end is not None else scan.pos]
        return View(name, args, started=bool(_BEGUN.match(args)), done=scan.done)

    def named(
        self,
        text: str,
        at: int,
        upto: int | None = None,
        name_key: str = "name",
        args_keys: Sequence[str] = ("arguments", "parameters"),
        many: bool = False,
    ) -> list[View]:
        """Calls written as ``{"name", "arguments"}`` objects (or a list of them) at ``at``;
        with ``many``, several such values separated by ``;`` or blanks."""
        upto = len(text) if upto is None else upto
        views: list[View] = []
        while True:
            scan = self.scan(text, at, upto, track=True)
            for members, end in scan.objects or ():
                views.append(
                    _named_view(text, scan.pos, members, end is not None, name_key, args_keys)
                )
            if not (many and scan.done):
                return views
            at = scan.end
            while at < upto and text[at] in _WS + ";":
                at += 1
            if at >= upto:
                return views


def _named_view(text: str, pos: int, members, closed: bool, name_key, args_keys) -> View:
    name = None
    args = None
    for key, start, end in members:
        if key == name_key and start is not None and end is not None and text[start] == '"':
            name = json.loads(text[start:end])
        elif key in args_keys and args is None and start is not None:
            args = (start, end)
    if name is None:
        return View(None)
    if args is None:  # no arguments: an empty object, once the call's object has closed
        return View(name, "{}", started=True, done=True) if closed else View(name)
    start, end = args
    if text[start] != "{":
        return View(name)  # arguments that are not an object are not streamed
    piece = text[start : end if end is not None else pos]
    return View(name, piece, started=bool(_BEGUN.match(piece)), done=end is not None)


def _render(params: list[tuple], closed: bool, partial: str | None = None) -> str:
    """The JSON text of XML-form parameters ``(key, text)`` or ``(key, text, raw)``:
    ``json.dumps`` of them, built one at a time (a raw value is text as written, not read as
    JSON); ``partial``, the rendering of a parameter still being written, last."""
    members = [
        json.dumps(key, ensure_ascii=False)
        + ": "
        + json.dumps(value if raw else param_value(value), ensure_ascii=False)
        for key, value, *flag in params
        for raw in (bool(flag and flag[0]),)
    ]
    if partial is not None and not closed:
        members.append(partial)
    return "{" + ", ".join(members) + ("}" if closed else "")


def _partial(
    r: Reader, text: str, key: str, at: int, markers: tuple[str, ...], raw: bool = False
) -> str | None:
    """A parameter still being written, from ``at`` to the end of ``text``: its member so
    far (``"key": "text`` without the closing quote), once its value is certainly a string
    (what :func:`.calls.param_value` makes of text that is not JSON); None while it may
    still be JSON (then it goes out whole, once complete). A tail that may become the
    closing marker, and trailing newlines (stripped at the end), wait. A ``raw`` value
    (DSML's ``string="true"``) is text from its first character, kept as written."""
    sofar = text[at:]
    keep = len(sofar) - partial_tail(sofar, markers)
    if raw:
        return (
            json.dumps(key, ensure_ascii=False)
            + ": "
            + json.dumps(sofar[:keep], ensure_ascii=False)[:-1]
        )
    value = sofar[:keep].strip("\n")
    if not value:
        return None
    scan = r.scan(text, at, at + keep)
    if not (scan.bad or scan.done and text[scan.end : at + keep].strip()):
        return None  # JSON so far: its value is not known until it ends
    return json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)[:-1]


def _xml_view(
    name: str | None, params: list[tuple], closed: bool, partial: str | None = None
) -> View:
    """An XML-form call: streamed from its name on, the arguments as they are rendered."""
    if name is None:
        return View(None)
    return View(name, _render(params, closed, partial), started=True, done=closed)


def _find(text: str, what: str, at: int, default: int | None = None) -> int | None:
    found = text.find(what, at)
    return default if found == -1 else found


def _blocks(text: str, start: str, end: str) -> Iterator[tuple[int, int, bool]]:
    """Each text after ``start`` up to the next ``end`` or ``start`` (as :mod:`.calls`'s
    ``_between`` reads them): ``(from, to, closed by end)``."""
    at = text.find(start)
    while at != -1:
        begin = at + len(start)
        close = _find(text, end, begin, len(text))
        nxt = _find(text, start, begin, len(text))
        yield begin, min(close, nxt), close < nxt
        at = text.find(start, begin) if nxt <= close else text.find(start, close)


def _bodies(text: str, head: re.Pattern, end: str) -> Iterator[tuple[re.Match, int, bool]]:
    """Each ``head`` match and its body, up to the next ``end`` (as a lazy ``(.*?)(?:end|$)``
    reads it): ``(match, body end, closed)``; a head not yet complete ends the bodies with
    ``(None, 0, False)``."""
    at = 0
    while True:
        match = head.search(text, at)
        if match is None:
            return
        if not match.group(2):  # the head goes on
            yield None, 0, False
            return
        close = text.find(end, match.end())
        yield match, len(text) if close == -1 else close, close != -1
        if close == -1:
            return
        at = close + len(end)


# ---- the readers, one per format --------------------------------------------------------------


def stream_hermes(r: Reader, text: str, final: bool) -> list[View]:
    if "<tool_call>" not in text:
        return r.named(text, 0) if text.lstrip()[:1] in ("{", "[") else []
    views = []
    for begin, end, _closed in _blocks(text, "<tool_call>", "</tool_call>"):
        views += r.named(text, begin, end)
    return views


_QWEN_HEAD = re.compile(r"<function=([^>\s]*)(>?)")
_QWEN_PARAM = re.compile(r"<parameter=([^>\s]+)>")
_QWEN_ENDS = ("</parameter>", "<parameter=", "</function>")


def stream_qwen3_coder(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    for head, body_end, closed in _bodies(text, _QWEN_HEAD, "</function>"):
        if head is None:
            views.append(View(None))
            break
        closed = closed or final
        body = text[head.end() : body_end]
        params, partial = [], None
        for mark in _QWEN_PARAM.finditer(body):
            value_end = _find(body, "</parameter>", mark.end())
            nxt = _find(body, "<parameter=", mark.end())
            ends = [e for e in (value_end, nxt) if e is not None]
            if ends:
                params.append((mark.group(1), body[mark.end() : min(ends)]))
            elif closed:
                params.append((mark.group(1), body[mark.end() :]))
            else:
                partial = _partial(r, text, mark.group(1), head.end() + mark.end(), _QWEN_ENDS)
        views.append(_xml_view(head.group(1), params, closed, partial))
    return views


_GLM_OPEN = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>", re.S)


def stream_glm(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    for begin, end, closed in _blocks(text, "<tool_call>", "</tool_call>"):
        block = text[begin:end]
        complete = end < len(text) or closed or final
        cut = block.find("<arg_key>")
        name = block[:cut].strip() if cut != -1 else (block.strip() if complete else None)
        params, partial, last = [], None, 0
        for arg in GLM_ARG.finditer(block):
            params.append((arg.group(1).strip(), arg.group(2)))
            last = arg.end()
        going = _GLM_OPEN.search(block, last)
        if going is not None and not complete and "</arg_value>" not in block[going.end() :]:
            ends = ("</arg_value>", "</tool_call>")
            partial = _partial(r, text, going.group(1).strip(), begin + going.end(), ends)
        views.append(_xml_view(name or None, params, complete, partial))
    return views


_MINIMAX_HEAD = re.compile(r'<invoke name="([^"]*)("?>?)')
_MINIMAX_PARAM = re.compile(r'<parameter name="([^"]+)">')


def _invokes(head_re: re.Pattern, param_re: re.Pattern, param_end: str, invoke_end: str):
    """A reader of ``<invoke name="…"><parameter name="…">value</parameter>…</invoke>``
    calls with these tags (minimax, DSML); a parameter whose second group is ``true``
    (DSML's ``string="true"``) is raw text from its first character."""
    ends = (param_end, invoke_end)

    def read(r: Reader, text: str, final: bool) -> list[View]:
        views = []
        for head, body_end, closed in _bodies(text, head_re, invoke_end):
            if head is None or head.group(2) != '">':
                views.append(View(None))
                break
            closed = closed or final
            body = text[head.end() : body_end]
            params, at, partial = [], 0, None
            while (mark := param_re.search(body, at)) is not None:
                raw = mark.lastindex == 2 and mark.group(2) == "true"
                value_end = body.find(param_end, mark.end())
                if value_end == -1:
                    if closed:  # the last value runs to the end of the call
                        params.append((mark.group(1), body[mark.end() :], raw))
                    else:
                        start = head.end() + mark.end()
                        partial = _partial(r, text, mark.group(1), start, ends, raw)
                    break
                params.append((mark.group(1), body[mark.end() : value_end], raw))
                at = value_end + len(param_end)
            views.append(_xml_view(head.group(1), params, closed, partial))
        return views

    return read


stream_minimax = _invokes(_MINIMAX_HEAD, _MINIMAX_PARAM, "</parameter>", "</invoke>")


def stream_llama3(r: Reader, text: str, final: bool) -> list[View]:
    at = text.find("<|python_tag|>")
    if at != -1:
        return r.named(text, at + len("<|python_tag|>"), many=True)
    return r.named(text, 0) if text.lstrip()[:1] in ("{", "[") else []


def stream_after(marker: str) -> Callable[[Reader, str, bool], list[View]]:
    """Calls as a JSON list (or object) after ``marker`` (or bare)."""

    def read(r: Reader, text: str, final: bool) -> list[View]:
        at = text.find(marker)
        return r.named(text, 0 if at == -1 else at + len(marker))

    return read


def stream_command_r(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    for begin, end, _closed in _blocks(text, "<|START_ACTION|>", "<|END_ACTION|>"):
        views += r.named(text, begin, end, name_key="tool_name", args_keys=("parameters",))
    return views


def stream_mistral(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    marks = [m.end() for m in re.finditer(re.escape("[TOOL_CALLS]"), text)]
    for k, start in enumerate(marks):
        end = marks[k + 1] - len("[TOOL_CALLS]") if k + 1 < len(marks) else len(text)
        part = text[start:end]
        cut = part.find("[ARGS]")
        if cut != -1:  # the new form: name[ARGS]{...}
            name = part[:cut].strip()
            views.append(r.args(name or None, text, start + cut + len("[ARGS]"), end))
        elif part.lstrip()[:1] in ("[", "{"):  # the old form: a JSON list of calls
            views += r.named(text, start, end)
        else:
            views.append(View(None))
    return views


_HARMONY_HEAD = re.compile(r"to=functions\.([\w.\-]+)(?=[^\w.\-])")


def stream_harmony(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    heads = list(_HARMONY_HEAD.finditer(text))
    for k, head in enumerate(heads):
        limit = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        body = _find(text, "<|message|>", head.end())
        if body is None or body > limit:
            views.append(View(head.group(1)))
            continue
        views.append(r.args(head.group(1), text, body + len("<|message|>"), limit))
    return views


_DEEPSEEK_HEAD = re.compile(
    r"<｜tool▁call▁begin｜>(?:function<｜tool▁sep｜>)?([^\n<｜]+?)\s*(?:<｜tool▁sep｜>|\n)"
)


def stream_deepseek(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    for head in _DEEPSEEK_HEAD.finditer(text):
        at = head.end()
        while at < len(text) and text[at] in _WS:
            at += 1
        rest = text[at : at + 7]
        if rest.startswith("```json"):
            at += 7
        elif "```json".startswith(rest) and rest:
            views.append(View(head.group(1).strip()))
            break
        end = _find(text, "<｜tool▁call▁end｜>", at, len(text))
        views.append(r.args(head.group(1).strip(), text, at, end))
    return views


_KIMI_HEAD = re.compile(
    r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.\-]+?)(?::\d+)?\s*<\|tool_call_argument_begin\|>"
)


def stream_kimi(r: Reader, text: str, final: bool) -> list[View]:
    return [
        r.args(
            head.group(1), text, head.end(), _find(text, "<|tool_call_end|>", head.end(), len(text))
        )
        for head in _KIMI_HEAD.finditer(text)
    ]


_FUNCTIONARY_HEAD = re.compile(r"<function=([\w.\-]*)(>?)")


def stream_functionary(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    if "<function=" in text:  # v3.1
        for head, end, _closed in _bodies(text, _FUNCTIONARY_HEAD, "</function>"):
            if head is None:
                return views + [View(None)]
            views.append(r.args(head.group(1), text, head.end(), end))
        return views
    offset = 0 if text.lstrip().startswith(">>>") else 3
    text = text if offset == 0 else ">>>" + text
    heads = list(re.finditer(r">>>\s*([\w.\-]+)(\s*\n)?", text))
    for k, head in enumerate(heads):
        if head.group(1) == "all":
            continue
        if not head.group(2):
            views.append(View(None))
            break
        end = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        views.append(r.args(head.group(1), text, head.end(), end))
    return views


def stream_tool_calls_tag(r: Reader, text: str, final: bool) -> list[View]:
    """Apriel's ``<tool_calls>[…]`` and MiniMax-M1's one object a line in those tags."""
    views = []
    for begin, end, _closed in _blocks(text, "<tool_calls>", "</tool_calls>"):
        views += r.named(text, begin, end, many=True)
    return views


_ACTION_HEAD = re.compile(r"Action:\s*")


def stream_command_r_plus(r: Reader, text: str, final: bool) -> list[View]:
    """``Action:``, a fence (```` ```json ````), then a JSON list of calls."""
    views = []
    for head in _ACTION_HEAD.finditer(text):
        at = head.end()
        fence = text[at : at + 7]
        if "```json".startswith(fence) and len(fence) < 7 and at + len(fence) == len(text):
            return views + [View(None)]  # the fence goes on
        if fence.startswith("```"):
            at += 7 if fence == "```json" else 3
        end = _find(text, "```", at, len(text))
        views += r.named(text, at, end, name_key="tool_name", args_keys=("parameters",))
    return views


def stream_apertus(r: Reader, text: str, final: bool) -> list[View]:
    """``<|tools_prefix|>[{"name": {arguments}}, …]``: each object's one key is the name."""
    views = []
    for begin, end, _closed in _blocks(text, "<|tools_prefix|>", "<|tools_suffix|>"):
        scan = r.scan(text, begin, end, track=True)
        for members, _end in scan.objects or ():
            if not members or members[0][1] is None or text[members[0][1]] != "{":
                views.append(View(None))
                return views
            _key, start, stop = members[0]
            piece = text[start : stop if stop is not None else scan.pos]
            views.append(
                View(members[0][0], piece, started=bool(_BEGUN.match(piece)), done=stop is not None)
            )
    return views


_DSML_HEAD = re.compile(r'<｜DSML｜invoke name="([^"]*)("?>?)')
_DSML_PARAM = re.compile(r'<｜DSML｜parameter name="([^"]+)"(?:\s+string="(true|false)")?>')
#: DeepSeek V3.2/V4: as minimax, a ``string="true"`` value raw text from its start.
stream_dsml = _invokes(_DSML_HEAD, _DSML_PARAM, "</｜DSML｜parameter>", "</｜DSML｜invoke>")


_PY_HEAD = re.compile(r"([A-Za-z_][\w.]*)\s*\(")
_PY_OPEN, _PY_CLOSE = "([{", ")]}"


def stream_pythonic(r: Reader, text: str, final: bool) -> list[View]:
    """LFM2's ``[f(a=1, b="x"), g()]``: each call from its name on, each keyword argument
    rendered as JSON once its value ends (at a ``,`` or ``)`` outside brackets and strings),
    read with :mod:`ast` as :func:`.calls.read_pythonic` does."""
    import ast

    from .calls import py_value

    views: list[View] = []
    for begin, end, _closed in _blocks(text, "<|tool_call_start|>", "<|tool_call_end|>"):
        at = begin
        while at < end:
            while at < end and text[at] in _WS + "[,":
                at += 1
            head = _PY_HEAD.match(text, at, end)
            if head is None:
                if at < end and text[at] != "]":
                    views.append(View(None))  # a name still being written, or not a call
                return views
            params: list[tuple[str, Any]] = []
            i, depth, quote, start, closed = head.end(), 0, None, head.end(), False
            while i < end:
                c = text[i]
                if quote:
                    if c == "\\":
                        i += 1
                    elif c == quote:
                        quote = None
                elif c in "'\"":
                    quote = c
                elif c in _PY_OPEN:
                    depth += 1
                elif c in _PY_CLOSE and depth:
                    depth -= 1
                elif c in ",)" and not depth:
                    arg = text[start:i].strip()
                    if arg:
                        key, eq, value = arg.partition("=")
                        try:
                            if not eq or not key.strip().isidentifier():
                                raise ValueError(arg)
                            params.append(
                                (key.strip(), py_value(ast.parse(value.strip(), mode="eval").body))
                            )
                        except (ValueError, TypeError, SyntaxError):
                            views.append(View(None))
                            return views
                    start = i + 1
                    if c == ")":
                        closed = True
                        break
                i += 1
            members = [
                json.dumps(k, ensure_ascii=False) + ": " + json.dumps(v, ensure_ascii=False)
                for k, v in params
            ]
            args = "{" + ", ".join(members) + ("}" if closed else "")
            views.append(View(head.group(1), args, started=True, done=closed))
            if not closed:
                return views
            at = i + 1
    return views


_GEMMA4_HEAD = re.compile(r"<\|tool_call>\s*call:([\w.\-]*)(\s*\{?)")
_GEMMA4_QUOTE = '<|"|>'
_KEY_CHARS = re.compile(r"[\w.\-]*")


class _GemmaJson:
    """Gemma 4's argument notation (``{city:<|"|>Paris<|"|>,n:3}``) turned into JSON as it
    is written: strings between ``<|"|>`` marks escaped, bare keys quoted (as
    :func:`.calls.gemma4_value` reads it); :attr:`out` only grows."""

    __slots__ = ("pos", "out", "in_string")

    def __init__(self, at: int):
        self.pos, self.out, self.in_string = at, "", False

    def feed(self, text: str, upto: int) -> None:
        i = self.pos
        while i < upto:
            if text.startswith(_GEMMA4_QUOTE, i):
                self.out += '"'
                self.in_string = not self.in_string
                i += len(_GEMMA4_QUOTE)
                continue
            if _GEMMA4_QUOTE.startswith(text[i:upto]):
                break  # may be a quote mark: wait
            c = text[i]
            if self.in_string:
                self.out += json.dumps(c, ensure_ascii=False)[1:-1]
            elif c.isalpha() or c == "_":
                word = _KEY_CHARS.match(text, i, upto).group()
                after = i + len(word)
                while after < upto and text[after] in _WS:
                    after += 1
                if after >= upto:
                    break  # a key or a literal: not known yet
                prev = self.out.rstrip()[-1:]
                if text[after] == ":" and prev in ("{", ","):
                    self.out += json.dumps(word)
                else:
                    self.out += word
                i += len(word)
                continue
            else:
                self.out += c
            i += 1
        self.pos = i


#: Where a Gemma 4 call's arguments end, as :func:`.calls.read_gemma4` reads them: the
#: first ``}`` followed by the end marker (one inside a string, before it, is text).
_GEMMA4_END = re.compile(r"\}\s*<tool_call\|>")


def stream_gemma4(r: Reader, text: str, final: bool) -> list[View]:
    views = []
    start = 0
    while (head := _GEMMA4_HEAD.search(text, start)) is not None:
        if "{" not in head.group(2):
            views.append(View(None))  # the head goes on, or is not a call
            break
        at = head.end() - 1
        end = _GEMMA4_END.search(text, at)
        body_end = end.start() + 1 if end else len(text)
        conv = r._scans.get((at, "gemma4"))
        if conv is None:
            conv = r._scans[(at, "gemma4")] = _GemmaJson(at)
            r._scans[(at, "gemma4 json")] = JsonScan(0)
        conv.feed(text, body_end)
        scan = r._scans[(at, "gemma4 json")]
        scan.feed(conv.out, len(conv.out))
        if scan.start is None:
            views.append(View(None))
            break
        args = conv.out[scan.start : scan.end if scan.end is not None else scan.pos]
        views.append(View(head.group(1), args, started=bool(_BEGUN.match(args)), done=scan.done))
        if not scan.done or end is None:
            break
        start = end.end()
    return views


# ---- the stream --------------------------------------------------------------------------------


class ToolStream:
    """Deltas of the calls in a capture that grows (:meth:`feed`), and at the end the
    calls whole, consistent with them (:meth:`finish`). See the module's rules."""

    def __init__(self, fmt: ToolFormat, known: Sequence[str]):
        self.known = frozenset(known)
        #: Readers to try until one finds a call (the format's own, then hermes: the
        #: instructions' own form and a forced call's bare JSON, as :func:`parse` does).
        self._readers = [Reader(read) for read in dict.fromkeys((fmt.stream, stream_hermes))]
        #: Per started call: [id, name, argument text sent].
        self.sent: list[list[str]] = []

    def _views(self, text: str, final: bool) -> list[View]:
        for reader in self._readers:
            try:
                views = reader(text, final)
            except Exception:  # a reader must never turn a botched call into an error
                views = []
            if any(v.name is not None for v in views) or self.sent:
                self._readers = [reader]  # the form is known now
                return views
        return []

    def feed(self, text: str) -> tuple[ToolCallDelta, ...]:
        """The deltas the capture ``text`` (all of it so far) adds to what was sent."""
        return tuple(self._diff(self._views(text, final=False)))

    def _diff(self, views: list[View]) -> list[ToolCallDelta]:
        out = []
        for index, view in enumerate(views):
            if index < len(self.sent):
                record = self.sent[index]
                if view.name != record[1]:
                    break  # not the same call any more: nothing more goes out
                if len(view.args) > len(record[2]) and view.args.startswith(record[2]):
                    out.append(ToolCallDelta(index, arguments=view.args[len(record[2]) :]))
                    record[2] = view.args
                continue
            if not view.started or view.name not in self.known:
                break  # calls start in order
            call_id = "call_" + secrets.token_hex(12)
            self.sent.append([call_id, view.name, view.args])
            out.append(ToolCallDelta(index, id=call_id, name=view.name))
            if view.args:
                out.append(ToolCallDelta(index, arguments=view.args))
        return out

    def finish(
        self, text: str, calls: list[dict[str, Any]] | None
    ) -> tuple[tuple[ToolCallDelta, ...], list[dict[str, Any]] | None]:
        """The last deltas and the calls whole, given :func:`parse`'s reading of the whole
        capture ``text`` (None: botched). Calls None: the capture goes out as text."""
        views = self._views(text, final=True)
        sent = self.sent
        consistent = calls is not None and len(calls) >= len(sent)
        consistent = consistent and all(
            calls[i]["function"]["name"] == record[1] for i, record in enumerate(sent)
        )
        if not consistent:  # rule 4: what started stands, the rest is dropped
            return (), [_call(call_id, name, args) for call_id, name, args in sent] or None
        deltas: list[ToolCallDelta] = []
        out = []
        for index, call in enumerate(calls):
            name, parsed = call["function"]["name"], call["function"]["arguments"]
            view = views[index] if index < len(views) and views[index].name == name else None
            full = (
                view.args if view is not None and view.done and _same(view.args, parsed) else None
            )
            if index < len(sent):
                call_id, _name, done = sent[index]
                if full is None or not full.startswith(done):
                    full = parsed if parsed.startswith(done) else _healed(done)
            else:
                call_id, done = call["id"], ""
                full = parsed if full is None else full
                deltas.append(ToolCallDelta(index, id=call_id, name=name))
            if len(full) > len(done):
                deltas.append(ToolCallDelta(index, arguments=full[len(done) :]))
            out.append(_call(call_id, name, full))
        return tuple(deltas), out


def _healed(streamed: str) -> str:
    """Streamed argument text that the whole reading disagrees with (a value whose closing
    marker the model botched), closed where that only takes closing it: an open string
    value and the open containers. Anything else stays as it was streamed."""
    scan = JsonScan(0)
    scan.feed(streamed, len(streamed))
    if scan.state == _STRING and not scan._is_key:
        tail = '"'
    elif scan.state in (_NEXT, _KEY_OR_CLOSE, _VALUE_OR_CLOSE):
        tail = ""
    else:
        return streamed
    return (
        streamed + tail + "".join("}" if kind == "{" else "]" for kind, *_ in reversed(scan.stack))
    )


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _same(a: str, b: str) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False
