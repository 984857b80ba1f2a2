"""A tool-call family is one class: its signs, openers, whole reader, stream reader and
grammar together, registered once (hoshikage_llamacpp.dialects.tools.families)."""

from __future__ import annotations

import pytest
from hoshikage_llamacpp.dialects.tools.base import ToolFormat
from hoshikage_llamacpp.dialects.tools.families import FAMILIES, FORMATS, OPENERS, detect
from hoshikage_llamacpp.options import TOOL_FORMATS

#: Templates that pick each syntax a family has (the others write the family's default).
TEMPLATES = ("", "[ARGS]", "```json", "<function=")


def missing(family: ToolFormat) -> list[str]:
    """What ``family`` lacks of a whole family: a whole reader, a stream reader, signs,
    openers, and a grammar for every syntax it may write."""
    cls = type(family)
    lacks = [
        part
        for part, own in (
            ("whole reader", cls.read is not ToolFormat.read),
            ("stream reader", cls.stream is not ToolFormat.stream),
            ("signs", bool(family.signs)),
            ("openers", bool(family.openers)),
        )
        if not own
    ]
    for template in TEMPLATES:
        syntax = family.syntax(template)
        if syntax == "json":
            continue  # the bare object, which call_grammar writes for every family
        if syntax not in family.syntaxes:
            lacks.append(f"the opener of syntax {syntax}")
        if cls.call is ToolFormat.call:
            lacks.append(f"a grammar for syntax {syntax}")
    return sorted(set(lacks))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_family_is_whole(family):
    assert missing(family) == []


def test_a_family_without_a_stream_reader_or_a_grammar_is_caught():
    class Half(ToolFormat):
        name = "half"
        openers = ("<call>",)
        signs = ("<call>",)
        syntaxes = {"half": "<call>"}
        read = staticmethod(lambda text: None)

    assert missing(Half()) == ["a grammar for syntax half", "stream reader"]


def test_the_registry_is_the_options_list_and_each_name_is_one_class():
    assert sorted(FORMATS) == sorted(TOOL_FORMATS)
    assert len({type(f) for f in FAMILIES}) == len(FAMILIES) == len(FORMATS)


@pytest.mark.parametrize("syntax", sorted(OPENERS))
def test_a_constrained_call_opens_where_the_answer_is_captured(syntax):
    """The text a syntax's grammar opens with starts a capture: one of its family's
    openers, the ``<tool_call>`` every family also reads, or a bare JSON object."""
    opener = OPENERS[syntax]
    families = [f for f in FAMILIES if syntax in f.syntaxes] or list(FAMILIES)
    for family in families:
        starts = (*family.openers, "<tool_call>", "{")
        assert any(opener.startswith(o) or o.startswith(opener) for o in starts), family


def test_detection_tries_the_most_specific_signs_first():
    """A template with signs of several families is the most specific one's."""
    assert detect("<tool_call> <parameter=").name == "qwen3-coder"
    assert detect("<tool_call> <arg_key>").name == "glm"
    assert detect("<|tool_call>call: <tool_call>").name == "gemma4"
    assert detect("no tools here").name == "hermes"
