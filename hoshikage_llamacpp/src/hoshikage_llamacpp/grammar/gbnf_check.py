"""Why a GBNF grammar does not parse, in words a client can act on.

llama.cpp compiles grammars itself (``llama_sampler_init_grammar``), but it writes the
reason a grammar fails to stderr and only returns NULL. This module re-reads a grammar that
llama.cpp has already refused, with the same syntax (``grammars/README.md``: rules
``name ::= ...``, literals, character classes, groups, ``* + ? {m,n}``, ``.``, comments,
token references ``<...>``), and names the first problem and where it is. It is only asked
after llama.cpp said no, so it can never refuse a grammar llama.cpp accepts. Pure Python.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9_-]+")


class GrammarSyntaxError(ValueError):
    pass


def explain(grammar: str) -> str | None:
    """The first problem found in ``grammar``, or None when this reader finds none."""
    try:
        _Reader(grammar).rules()
    except GrammarSyntaxError as exc:
        return str(exc)
    return None


class _Reader:
    def __init__(self, text: str):
        self.text = text
        self.at = 0
        self.defined: set[str] = set()
        self.used: dict[str, int] = {}

    def where(self, at: int | None = None) -> str:
        at = self.at if at is None else at
        line = self.text.count("\n", 0, at) + 1
        snippet = self.text[at : at + 20].split("\n")[0]
        return f"line {line}, at {snippet!r}" if snippet else f"line {line}, at the end"

    def fail(self, what: str, at: int | None = None):
        raise GrammarSyntaxError(f"{what} ({self.where(at)})")

    def space(self, newlines: bool) -> None:
        text = self.text
        while self.at < len(text):
            c = text[self.at]
            if c == "#":
                while self.at < len(text) and text[self.at] not in "\r\n":
                    self.at += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                self.at += 1
            else:
                return

    def rules(self) -> None:
        self.space(True)
        while self.at < len(self.text):
            self.rule()
            self.space(True)
        for name, at in self.used.items():
            if name not in self.defined:
                self.fail(f"undefined rule {name!r}", at)
        if "root" not in self.defined:
            raise GrammarSyntaxError("the grammar has no 'root' rule")

    def rule(self) -> None:
        match = _NAME.match(self.text, self.at)
        if not match:
            self.fail("expecting a rule name")
        self.at = match.end()
        self.space(False)
        if not self.text.startswith("::=", self.at):
            self.fail("expecting ::=")
        self.at += 3
        self.space(True)
        self.alternates(nested=False)
        self.defined.add(match.group())
        if self.at < len(self.text) and self.text[self.at] not in "\r\n":
            self.fail("expecting the end of the rule (a newline)")

    def alternates(self, nested: bool) -> None:
        self.sequence(nested)
        while self.at < len(self.text) and self.text[self.at] == "|":
            self.at += 1
            self.space(True)
            self.sequence(nested)

    def sequence(self, nested: bool) -> None:
        text = self.text
        items = 0
        while self.at < len(text):
            c = text[self.at]
            start = self.at
            if c == '"':
                self.literal('"')
            elif c == "[":
                self.char_class()
            elif c == "(":
                self.at += 1
                self.space(True)
                self.alternates(nested=True)
                if self.at >= len(text) or text[self.at] != ")":
                    self.fail("expecting ')'", start)
                self.at += 1
            elif c == ".":
                self.at += 1
            elif c == "<":
                end = text.find(">", self.at)
                if end == -1:
                    self.fail("unterminated token reference '<'")
                self.at = end + 1
            elif c in "*+?":
                if not items:
                    self.fail(f"expecting an item before {c!r}")
                self.at += 1
            elif c == "{":
                if not items:
                    self.fail("expecting an item before '{'")
                end = text.find("}", self.at)
                if end == -1 or not re.fullmatch(
                    r"\s*\d*\s*(,\s*\d*\s*)?", text[self.at + 1 : end]
                ):
                    self.fail("expecting a repetition such as {2} or {1,3}")
                self.at = end + 1
            elif _NAME.match(c):
                match = _NAME.match(text, self.at)
                after = self.at = match.end()
                self.space(False)
                if text.startswith("::=", self.at):  # the next rule starts: this one ended
                    self.at = start
                    return
                self.at = after
                self.used.setdefault(match.group(), start)
            elif c == ")" and nested:
                return
            elif c == "|" or c in "\r\n":
                if c in "\r\n" and nested:
                    self.space(True)
                    continue
                return
            else:
                self.fail(f"unexpected character {c!r}")
            items += 1
            self.space(nested)

    def literal(self, quote: str) -> None:
        start = self.at
        self.at += 1
        text = self.text
        while self.at < len(text) and text[self.at] != quote:
            if text[self.at] == "\\":
                self.at += 1
            elif text[self.at] in "\r\n":
                break
            self.at += 1
        if self.at >= len(text) or text[self.at] != quote:
            self.fail("unterminated string literal", start)
        self.at += 1

    def char_class(self) -> None:
        start = self.at
        self.at += 1
        text = self.text
        while self.at < len(text) and text[self.at] != "]":
            if text[self.at] == "\\":
                self.at += 1
            self.at += 1
        if self.at >= len(text):
            self.fail("unterminated character class '['", start)
        self.at += 1
