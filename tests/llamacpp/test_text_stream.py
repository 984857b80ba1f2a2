"""Streaming text: UTF-8 split across tokens, stop strings across tokens, tool-call capture."""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_llamacpp.dialects.text_stream import HoldBack, TextStream  # noqa: E402


def test_multibyte_character_split_across_tokens_waits_for_its_last_byte():
    stream = TextStream()
    data = "日本".encode()
    out = [stream.feed(data[i : i + 1]) for i in range(len(data))]
    assert out == ["", "", "日", "", "", "本"]
    assert stream.finish() == ""


def test_an_incomplete_character_at_the_end_becomes_a_replacement_character():
    stream = TextStream()
    assert stream.feed(b"ok\xe6\x97") == "ok"
    assert stream.finish() == "\ufffd"


def test_stop_string_spanning_tokens_holds_back_only_the_possible_prefix():
    stream = TextStream(stops=["END"])
    assert stream.feed(b"hello E") == "hello "
    assert stream.feed(b"N") == ""
    assert stream.feed(b"Dafter") == ""
    assert stream.stopped
    assert stream.finish() == ""


def test_a_false_alarm_is_released_on_the_next_piece():
    stream = TextStream(stops=["END"])
    assert stream.feed(b"E") == ""
    assert stream.feed(b"Nx") == "ENx"
    assert not stream.stopped


def test_held_text_is_flushed_when_the_stream_ends():
    stream = TextStream(stops=["\nUser:"])
    assert stream.feed(b"bye\nUs") == "bye"
    assert stream.finish() == "\nUs"


def test_earliest_of_several_stop_strings_wins():
    hold = HoldBack(["bb", "a"])
    assert hold.feed("xxbbya") == "xx"
    assert hold.found == "bb"


def test_tool_call_marker_is_captured_not_sent():
    stream = TextStream(capture=["<tool_call>"])
    assert stream.feed(b"Let me check.<tool") == "Let me check."
    assert stream.feed(b'_call>{"name": "f"}') == ""
    assert stream.finish() == ""
    assert stream.captured == '<tool_call>{"name": "f"}'


def test_leading_json_is_captured_whole():
    stream = TextStream(capture_leading_json=True)
    assert stream.feed(b"  ") == ""
    assert stream.feed(b'{"name"') == ""
    assert stream.finish() == ""
    assert stream.captured == '  {"name"'


def test_leading_text_is_not_captured():
    stream = TextStream(capture_leading_json=True)
    assert stream.feed(b" Hi {") == " Hi {"
    assert stream.captured == ""
