"""What a tool-call family is: the interface each family's one class implements.

A family (:mod:`.families` holds them, one class each, and the registry) says:

* which text in a chat template means it (:attr:`ToolFormat.signs`);
* which text opens a call, from which on the answer is captured (:attr:`ToolFormat.openers`),
  and which special tokens must render as text for its readers (:attr:`ToolFormat.markers`);
* how a whole capture reads into calls (:meth:`ToolFormat.read`, see :mod:`.calls`);
* how a capture that grows reads, call by call, as it streams (:meth:`ToolFormat.stream`,
  see :mod:`.stream`);
* how a constrained call is written, as GBNF in its own syntax (:meth:`ToolFormat.call`,
  see :mod:`.grammar`).

Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Call = tuple[str, Any]  # (name, arguments: an object, or JSON text)


class ToolFormat:
    """One family's tool calls. Subclass it once per family (class attributes and the
    three readers), and register an instance in :mod:`.families`."""

    #: The ``tool_format`` option's name for it.
    name: str = ""
    #: Text that opens a call: from the first of them on, the answer is captured.
    openers: tuple[str, ...] = ()
    #: The family writes calls as bare JSON too (an answer that starts with ``{`` or ``[``
    #: is captured whenever tools are offered: a forced call's grammar writes that form).
    leading_json: bool = False
    #: Special tokens that must render as text for the parser to see them.
    markers: tuple[str, ...] = ()
    #: Text in a chat template that means this family (see :func:`.families.detect`).
    signs: tuple[str, ...] = ()
    #: The syntaxes its constrained calls are written in (versions differ), each with the
    #: text a call opens with (a lazy grammar's trigger).
    syntaxes: Mapping[str, str] = {}

    @staticmethod
    def read(text: str) -> list[Call] | None:
        """The captured ``text`` as ``(name, arguments)`` pairs; None when it does not
        parse."""
        raise NotImplementedError

    @staticmethod
    def stream(r, text: str, final: bool) -> list:
        """The capture so far as :class:`.stream.View` s, one per call, read with the
        scanners of ``r`` (a :class:`.stream.Reader`)."""
        raise NotImplementedError

    def syntax(self, template: str) -> str:
        """The syntax of :attr:`syntaxes` that ``template`` writes calls in, or ``"json"``
        (the bare ``{"name", "arguments"}`` object, which every family's reader reads)."""
        return self.name

    def call(self, b, function: Mapping[str, Any], i: int, syntax: str) -> str:
        """One call of ``function`` (the ``i``-th offered) in ``syntax``, as a GBNF
        expression built with ``b`` (a :class:`...grammar.build.Builder`)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<tool format {self.name}>"
