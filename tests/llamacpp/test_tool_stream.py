"""The incremental tool-call reader (:mod:`hoshikage_llamacpp.dialects.tools.stream`) on every
family's calls from llama.cpp's tests/test-chat.cpp (the cases of test_tool_calls.py), fed
one character at a time, and split in two at every position: the name comes first, the
argument deltas join to the final ``arguments`` (which parse to the call's arguments), every
prefix of them is valid partial JSON, and a botched call follows the documented rule."""

from __future__ import annotations

import json

import pytest
from hoshikage_llamacpp.dialects.tools.calls import parse
from hoshikage_llamacpp.dialects.tools.families import FORMATS
from hoshikage_llamacpp.dialects.tools.stream import JsonScan, ToolStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.llamacpp.test_tool_calls import CASES, KNOWN

jiter = pytest.importorskip("jiter")


def run(fmt: str, pieces: list[str], known=KNOWN):
    """Feed ``pieces`` as the capture grows; the deltas, and finish's deltas and calls."""
    stream = ToolStream(FORMATS[fmt], known)
    text, deltas = "", []
    for piece in pieces:
        text += piece
        deltas.append(list(stream.feed(text)))
    last, calls = stream.finish(text, parse(FORMATS[fmt], text, known))
    return deltas, list(last), calls


def joined(deltas):
    """Per call index: [id, name, arguments joined], checking the order of deltas."""
    calls: dict[int, list] = {}
    for d in deltas:
        if d.name is not None:
            assert d.index not in calls and d.id and d.arguments == ""
            assert d.index == len(calls)  # calls start in order
            calls[d.index] = [d.id, d.name, ""]
        else:
            assert d.id is None and d.arguments
            calls[d.index][2] += d.arguments
            # every prefix is valid partial JSON (the Anthropic SDK parses each one)
            jiter.from_json(calls[d.index][2].encode(), partial_mode=True)
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("fmt,text,expected", CASES)
def test_a_call_fed_a_character_at_a_time_streams_its_name_then_its_arguments(fmt, text, expected):
    steps, last, calls = run(fmt, list(text))
    streamed = [d for step in steps for d in step]
    assert joined(streamed + last) == [
        [c["id"], c["function"]["name"], c["function"]["arguments"]] for c in calls
    ]
    assert [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls
    ] == expected
    # The name went out before the arguments were complete, and the arguments in pieces.
    first_name = next(k for k, step in enumerate(steps) if any(d.name for d in step))
    assert first_name < len(text) - 1
    pieces = [d for d in streamed if d.name is None and d.index == 0]
    assert len(pieces) > 1 or expected[0][1] == {}  # "{}" comes in one piece


@pytest.mark.parametrize("fmt,text,expected", CASES)
def test_split_in_two_anywhere_gives_the_same_calls(fmt, text, expected):
    for at in range(len(text) + 1):
        steps, last, calls = run(fmt, [text[:at], text[at:]])
        got = joined([d for step in steps for d in step] + last)
        assert [(name, json.loads(args)) for _, name, args in got] == expected, at
        assert [args for _, _, args in got] == [c["function"]["arguments"] for c in calls]


def test_json_arguments_keep_the_models_own_text():
    text = '<tool_call>\n{"name": "special_function", "arguments": {"arg1":1,  "x": "\\u00e9"}}\n</tool_call>'
    _, last, calls = run("hermes", list(text))
    assert calls[0]["function"]["arguments"] == '{"arg1":1,  "x": "\\u00e9"}'


def test_xml_arguments_are_rendered_as_json_as_parameters_are_written():
    """The name as soon as it is complete; a value that may be JSON once it ends, a value
    that can only be text as it is written (a file being written streams)."""
    text = (
        "<tool_call>\n<function=special_function_with_opt>\n<parameter=arg1>\n1\n</parameter>\n"
        "<parameter=arg2>\ntwo words\nand a < b\n</parameter>\n</function>\n</tool_call>"
    )
    steps, last, calls = run("qwen3-coder", list(text))
    named = next(k for k, step in enumerate(steps) if any(d.name for d in step))
    assert text[: named + 1].endswith("<function=special_function_with_opt>")
    pieces = [d.arguments for step in steps for d in step if d.name is None] + [
        d.arguments for d in last
    ]
    assert pieces[:3] == ["{", '"arg1": 1', ', "arg2": "tw']  # "t" might have been true
    assert (
        "".join(pieces)
        == calls[0]["function"]["arguments"]
        == json.dumps({"arg1": 1, "arg2": "two words\nand a < b"})
    )
    assert len(pieces) > 10 and pieces[-2:] == ['"', "}"]


@pytest.mark.parametrize(
    "fmt,text",
    [
        (
            "glm",
            "<tool_call>special_function<arg_key>arg1</arg_key><arg_value>some text</arg_value></tool_call>",
        ),
        (
            "minimax",
            '<invoke name="special_function"><parameter name="arg1">some text</parameter></invoke>',
        ),
        (
            "dsml",
            '<｜DSML｜invoke name="special_function"><｜DSML｜parameter name="arg1" string="true">'
            "some text</｜DSML｜parameter></｜DSML｜invoke>",
        ),
        (
            "gemma4",
            '<|tool_call>call:special_function{arg1:<|"|>some text<|"|>}<tool_call|>',
        ),
    ],
)
def test_text_values_stream_as_they_are_written(fmt, text):
    steps, last, calls = run(fmt, list(text))
    pieces = [d.arguments for step in steps for d in step if d.name is None] + [
        d.arguments for d in last
    ]
    assert "".join(pieces) == calls[0]["function"]["arguments"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"arg1": "some text"}
    assert len(pieces) > 5


def test_a_dsml_raw_value_is_text_from_its_first_character():
    """``string="true"``: ``1`` is the text "1", streamed at once, never read as JSON."""
    text = (
        '<｜DSML｜invoke name="special_function"><｜DSML｜parameter name="arg1" string="true">'
        "12</｜DSML｜parameter></｜DSML｜invoke>"
    )
    steps, last, calls = run("dsml", list(text))
    pieces = [d.arguments for step in steps for d in step if d.name is None]
    assert pieces[:3] == ["{", '"arg1": "', "1"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"arg1": "12"}


def test_a_gemma4_end_marker_inside_a_string_is_text_as_parse_reads_it():
    text = '<|tool_call>call:special_function{arg1:<|"|>a <tool_call|> b<|"|>}<tool_call|>'
    steps, last, calls = run("gemma4", list(text))
    streamed = "".join(d.arguments for step in steps for d in step) + "".join(
        d.arguments for d in last
    )
    assert streamed == calls[0]["function"]["arguments"]
    assert json.loads(streamed) == {"arg1": "a <tool_call|> b"}


def test_pythonic_arguments_go_out_one_by_one_as_json():
    text = '<|tool_call_start|>[special_function_with_opt(arg1=1, arg2="a, b)")]<|tool_call_end|>'
    steps, last, calls = run("pythonic", list(text))
    pieces = [d.arguments for step in steps for d in step if d.name is None]
    assert pieces == ["{", '"arg1": 1', ', "arg2": "a, b)"}']
    assert calls[0]["function"]["arguments"] == '{"arg1": 1, "arg2": "a, b)"}'


def test_a_tool_not_offered_is_never_streamed_and_is_text():
    text = '<tool_call>{"name": "rm_rf", "arguments": {"path": "/"}}</tool_call>'
    steps, last, calls = run("hermes", list(text))
    assert not any(steps) and not last and calls is None


def test_bad_json_before_the_arguments_begin_is_text():
    text = '<tool_call>{"name": "special_function", "arguments": {broken}}</tool_call>'
    steps, last, calls = run("hermes", list(text))
    assert not any(steps) and not last and calls is None


def test_a_call_that_went_wrong_after_it_started_keeps_what_was_streamed():
    text = '<tool_call>{"name": "special_function", "arguments": {"arg1": 1, oops}}</tool_call>'
    steps, last, calls = run("hermes", list(text))
    got = joined([d for step in steps for d in step] + last)
    assert got[0][1:] == ["special_function", '{"arg1": 1, ']
    assert [c["function"]["arguments"] for c in calls] == ['{"arg1": 1, ']
    assert calls[0]["id"] == got[0][0]


def test_a_call_cut_short_keeps_its_partial_arguments():
    text = '[TOOL_CALLS]special_function[ARGS]{"arg1": 1, "arg2": "unfini'
    steps, last, calls = run("mistral", list(text))
    assert [c["function"]["arguments"] for c in calls] == ['{"arg1": 1, "arg2": "unfini']


def test_a_second_call_of_a_tool_not_offered_stops_the_stream_and_keeps_the_first():
    text = (
        '<tool_call>{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>'
        '<tool_call>{"name": "rm_rf", "arguments": {"path": "/"}}</tool_call>'
    )
    steps, last, calls = run("hermes", list(text))
    assert [c["function"]["name"] for c in calls] == ["special_function"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"arg1": 1}


def test_a_format_falls_back_to_the_instructions_own_form():
    text = '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>'
    steps, last, calls = run("qwen3-coder", list(text))
    assert any(steps) and json.loads(calls[0]["function"]["arguments"]) == {"arg1": 1}


@pytest.mark.parametrize(
    "value",
    [
        '{"a": [1, -2.5e+3, true, false, null, {"b": "x\\"y\\u00e9"}], "c": {}}',
        "[]",
        '"s"',
        "0",
        "-1.5E-2",
    ],
)
def test_the_scanner_finds_where_a_value_ends_and_accepts_every_prefix(value):
    text = value + " tail"
    for at in range(len(value)):
        scan = JsonScan(0)
        scan.feed(text, at)
        assert not scan.bad and not scan.done and scan.pos == at
    scan = JsonScan(0)
    scan.feed(text, len(text))
    if value[0] in '{["':
        assert scan.done and scan.end == len(value)
    else:  # a bare scalar ends at the blank after it
        assert scan.done and scan.end == len(value)


@pytest.mark.parametrize(
    "bad", ["{a", '{"a" 1}', '{"a": tru e}', '{"a": 01}', '{"a": "\\x"}', '["a\n"]', "[1,,2]"]
)
def test_the_scanner_stops_where_json_goes_wrong(bad):
    scan = JsonScan(0)
    scan.feed(bad, len(bad))
    assert scan.bad and not scan.done
    with pytest.raises(ValueError):
        json.loads(bad)
    jiter.from_json(bad[: scan.pos].encode(), partial_mode=True)


_PIECES = [
    "<tool_call>", "</tool_call>", "<function=", "special_function", ">", "<parameter=", "arg1",
    "</parameter>", "</function>", "[TOOL_CALLS]", "[ARGS]", "to=functions.", "<|message|>", "<|call|>",
    "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>",
    "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", '<invoke name="', '">', ">>>", "\n", " ",
    '{"name": "special_function", "arguments": ', '{"arg1": 1}', '{"arg1": ', '"x', "}", "]", "[", ",", ":",
    "1", "true", "\\", '"', "```json",
    "<|tool_call>", "call:", "<tool_call|>", '<|"|>', "arg1:", '<｜DSML｜invoke name="',
    '<｜DSML｜parameter name="arg1" string="true">', "</｜DSML｜parameter>", "</｜DSML｜invoke>",
    "<|tool_call_start|>", "special_function(", "arg1=", ")", "<|tool_call_end|>", "<tool_calls>",
    "</tool_calls>", "Action:", "```", '"tool_name": "special_function", "parameters": ',
    "<|tools_prefix|>", '{"special_function": ', "<|tools_suffix|>", "<seed:tool_call>",
]  # fmt: skip


def run_cut(fmt: str, text: str, cuts: list[int]):
    """``text`` fed in pieces cut at ``cuts``: the steps' deltas and the calls, checked to
    be the deltas joined (arguments included) whatever came out."""
    bounds = sorted({min(c, len(text)) for c in cuts} | {len(text)})
    pieces = [text[a:b] for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]
    steps, last, calls = run(fmt, pieces)
    got = joined([d for step in steps for d in step] + last)
    assert [
        [c["id"], c["function"]["name"], c["function"]["arguments"]] for c in calls or ()
    ] == got
    return steps, calls


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    parts=st.lists(st.sampled_from(_PIECES), max_size=14),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_any_capture_streams_without_error_and_agrees_with_its_calls(fmt, parts, cuts):
    """Random pieces of every family's syntax, fed at random cuts: the reader never fails,
    and whatever calls come out, their arguments are their deltas joined."""
    text = "".join(parts)
    _steps, calls = run_cut(fmt, text, cuts)
    parsed = parse(FORMATS[fmt], text, KNOWN)
    if parsed is not None and calls is not None and len(calls) == len(parsed):
        for call, whole in zip(calls, parsed, strict=True):
            assert call["function"]["name"] == whole["function"]["name"]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(CASES),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["cut", "insert", "delete"]),
            st.integers(0, 300),
            st.sampled_from(_PIECES),
        ),
        min_size=1,
        max_size=2,
    ),
    cuts=st.lists(st.integers(0, 300), max_size=6),
)
def test_a_damaged_call_streams_what_parse_reads_or_follows_the_botched_rule(case, edits, cuts):
    """Every family's call cut short, with a piece of syntax put in or a few characters
    taken out: when the whole capture parses, the streamed calls are parse's calls
    (names, and arguments as JSON); when it does not, only calls that had started are kept,
    with the valid argument text streamed. The arguments are always their deltas joined."""
    fmt, text, _ = case
    for kind, at, piece in edits:
        at = min(at, len(text))
        text = {
            "cut": text[:at],
            "insert": text[:at] + piece + text[at:],
            "delete": text[:at] + text[at + 5 :],
        }[kind]
    steps, calls = run_cut(fmt, text, cuts)
    parsed = parse(FORMATS[fmt], text, KNOWN)
    if parsed is not None:
        streamed = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]
        whole = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed]
        if fmt == "glm":  # a text value whose </arg_value> is botched: parse drops it, but
            # it was streamed as it was written, and stays (closed)
            assert [name for name, _ in streamed] == [name for name, _ in whole]
        else:
            assert streamed == whole
    elif calls is not None:
        assert steps and any(d.name for step in steps for d in step)  # only calls that started
