"""Reasoning: which form a model thinks in, and the text split into reasoning and answer.

The form is detected from the chat template's text (:func:`detect`), as llama.cpp does:

=============  =============================  =====================================
form           reasoning                      models
=============  =============================  =====================================
``think``      ``<think>`` … ``</think>``     Qwen3/3.5, QwQ, DeepSeek R1/V3.1+, GLM-4.6/4.7,
                                              Kimi-K2 Thinking, MiniMax-M2, SmolLM3,
                                              Nemotron, Granite 3.3, Ling, Laguna, ...
``mistral``    ``[THINK]`` … ``[/THINK]``     Ministral 3 Reasoning, Magistral
``seed``       ``<seed:think>`` …             ByteDance Seed-OSS
``command-r``  ``<|START_THINKING|>`` …       Command R7B, Command A (Cohere2)
``gemma4``     ``<|channel>thought`` …        Gemma 4
``harmony``    ``<|channel|>analysis…<|end|>``  gpt-oss
=============  =============================  =====================================

Many templates open the think block in the generation prompt itself (Qwen3's
``<|im_start|>assistant\\n<think>\\n``): the prompt is checked, and the answer then starts
inside the reasoning. :class:`Splitter` works on text, never on tokens, with the tail that
could still become a marker held back, so a marker split across tokens splits the same.
Pure Python.
"""

from __future__ import annotations

import attrs

from .text_stream import HoldBack, partial_tail


@attrs.frozen
class ReasoningForm:
    name: str
    start: str
    end: str
    #: Strings that should render as text when they are special tokens (llama-server's
    #: "preserved tokens"): the markers, and harmony's headers.
    markers: tuple[str, ...] = ()

    @property
    def harmony(self) -> bool:
        return self.name == "harmony"


FORMS = {
    "harmony": ReasoningForm(
        "harmony",
        "<|channel|>analysis<|message|>",
        "<|end|>",
        ("<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|constrain|>"),
    ),
    "gemma4": ReasoningForm(
        "gemma4", "<|channel>thought", "<channel|>", ("<|channel>", "<channel|>")
    ),
    "seed": ReasoningForm(
        "seed", "<seed:think>", "</seed:think>", ("<seed:think>", "</seed:think>")
    ),
    "mistral": ReasoningForm("mistral", "[THINK]", "[/THINK]", ("[THINK]", "[/THINK]")),
    "command-r": ReasoningForm(
        "command-r",
        "<|START_THINKING|>",
        "<|END_THINKING|>",
        ("<|START_THINKING|>", "<|END_THINKING|>"),
    ),
    "think": ReasoningForm("think", "<think>", "</think>", ("<think>", "</think>")),
}

#: Which text in a template means which form, most specific first.
_SIGNS = (
    ("<|channel|>analysis", "harmony"),
    ("<|channel>thought", "gemma4"),
    ("<seed:think>", "seed"),
    ("[THINK]", "mistral"),
    ("START_THINKING", "command-r"),
    ("<think>", "think"),
)


def detect(template: str) -> ReasoningForm | None:
    """The reasoning form a chat template writes, or None."""
    for sign, name in _SIGNS:
        if sign in template:
            return FORMS[name]
    return None


def opens_in_prompt(form: ReasoningForm, prompt: str) -> bool:
    """Whether the rendered prompt leaves a think block open (the answer starts inside)."""
    tail = prompt.rstrip()
    if form.harmony:
        return tail.endswith("<|channel|>analysis<|message|>")
    if not tail.endswith(form.start):
        return False
    return True


class Splitter:
    """Released text in, ``(reasoning, answer)`` deltas out.

    With ``show=False`` the reasoning is dropped (thinking turned off: never shown).
    """

    def __init__(self, form: ReasoningForm, inside: bool = False, show: bool = True):
        self.form = form
        self._inside = inside
        self.show = show
        #: Whether a think block was seen at all (one that is closed stays closed).
        self.done = False
        self._reasoning_started = False
        self._answer_started = False
        self._marker = HoldBack((form.end,) if inside else self._openers())
        if form.harmony:
            self._harmony = _Harmony(inside)

    @property
    def inside(self) -> bool:
        """Whether the text now being generated is reasoning."""
        if self.form.harmony:
            return self._harmony.channel == "analysis"
        return self._inside

    def _openers(self) -> tuple[str, ...]:
        return (self.form.start,)

    def feed(self, text: str) -> tuple[str, str]:
        if self.form.harmony:
            return self._harmony.feed(text, self.show)
        reasoning, answer = [], []
        while text:
            if self.done:
                answer.append(text)
                break
            released = self._marker.feed(text)
            found = self._marker.found
            if self._inside:
                reasoning.append(released)
            else:
                if released.strip() and found is None:
                    # Text before any think block: the model answers without reasoning.
                    self.done = True
                    self._answer_started = True
                    answer.append(released + self._marker.flush())
                    break
                answer.append(released)
            if found is None:
                break
            text = self._marker.rest[len(found) :]
            if self._inside:
                self._inside, self.done = False, True
            else:
                self._inside = True
                self._marker = HoldBack((self.form.end,))
        return self._out(reasoning, answer)

    def finish(self) -> tuple[str, str]:
        if self.form.harmony:
            return self._harmony.finish(self.show)
        if self.done:
            return "", ""
        held = self._marker.flush()
        return self._out([held] if self._inside else [], [] if self._inside else [held])

    def _out(self, reasoning: list[str], answer: list[str]) -> tuple[str, str]:
        """The deltas, with the blank text at the start of the reasoning and at the start
        of an answer that follows reasoning left out (as llama.cpp trims them)."""
        text, answer_text = "".join(reasoning), "".join(answer)
        if text and not self._reasoning_started:
            text = text.lstrip()
            self._reasoning_started = bool(text)
        if answer_text and self.done and not self._answer_started:
            answer_text = answer_text.lstrip()
            self._answer_started = bool(answer_text)
        return (text if self.show else ""), answer_text


class _Harmony:
    """gpt-oss's messages: ``<|channel|>NAME[ to=…]<|message|>BODY<|end|>`` then
    ``<|start|>assistant`` and the next one. ``analysis`` bodies are reasoning, ``final``
    bodies the answer; a ``commentary`` body is the answer too unless it is addressed to a
    function (``to=functions.x``), which the tool-call parser reads from the answer text."""

    HEADER_END = "<|message|>"
    BODY_END = ("<|end|>", "<|start|>", "<|return|>", "<|call|>")

    def __init__(self, inside: bool):
        self.channel = "analysis" if inside else None
        self.buf = ""
        self.passthrough = ""

    def feed(self, text: str, show: bool) -> tuple[str, str]:
        self.buf += text
        reasoning, answer = [], []
        while self.buf:
            if self.channel is None:  # reading a header
                at = self.buf.find(self.HEADER_END)
                if at == -1:
                    if len(self.buf) > 256 and "<|" not in self.buf:
                        answer.append(self.buf)  # not harmony at all: pass it through
                        self.buf = ""
                    break
                header = self.buf[:at]
                self.buf = self.buf[at + len(self.HEADER_END) :]
                name = header.split("<|channel|>")[-1].strip()
                channel = name.split()[0] if name else "final"
                if (
                    " to=" in header
                    or header.lstrip().startswith("to=")
                    or "to=functions" in header
                ):
                    # A tool call: its header and body stay in the answer for the tool parser.
                    at = header.find("<|channel|>")
                    answer.append((header[at:] if at != -1 else header) + self.HEADER_END)
                    self.channel = "call"
                else:
                    self.channel = channel
                continue
            cut, which = -1, None
            for marker in self.BODY_END:
                at = self.buf.find(marker)
                if at != -1 and (cut == -1 or at < cut):
                    cut, which = at, marker
            if which is None:
                keep = partial_tail(self.buf, self.BODY_END)
                body, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
                self._body(body, reasoning, answer)
                break
            self._body(self.buf[:cut], reasoning, answer)
            if self.channel == "call":
                answer.append(which)
            self.buf = self.buf[cut + len(which) :]
            if which == "<|start|>":
                self.buf = _strip_role(self.buf)
            self.channel = None
        text = "".join(reasoning)
        return (text if show else ""), "".join(answer)

    def _body(self, body: str, reasoning: list[str], answer: list[str]) -> None:
        if not body:
            return
        if self.channel == "analysis":
            reasoning.append(body)
        else:
            answer.append(body)

    def finish(self, show: bool) -> tuple[str, str]:
        buf, self.buf = self.buf, ""
        if self.channel is None:
            return "", "" if buf.startswith("<|") else buf
        if self.channel == "analysis":
            return (buf if show else ""), ""
        return "", buf


def _strip_role(buf: str) -> str:
    return buf[len("assistant") :] if buf.startswith("assistant") else buf
