"""What the Codex tests share with their replay: the models (two families Codex targets, each
a tiny random-weight GGUF with the family's real tokenizer and chat template), and the
conversation each is steered through (a grammar per request, made from what the conversation
holds so far)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.support.clients import gbnf_literal, harmony_turn
from tests.support.server import running_server

KEY = "codex-test-key"
SECRET = "kumquat-42"
THOUGHT_1 = "The user wants the note; I should read note.txt with a shell command."
THOUGHT_2 = "The command printed the note; I can answer now."
COMMAND = "cat note.txt"
KNOWN_ALIAS = "gpt-5.5"
FIXTURES = Path(__file__).parent / "fixtures" / "codex"
#: Served model name -> (vocab, template): Qwen3 (hermes calls in <tool_call>, <think>) and
#: gpt-oss (harmony channels; Codex's --oss default family).
FAMILIES = {
    "qwen3": ("qwen35", "Qwen-Qwen3-0.6B"),
    "gpt-oss": ("qwen2", "openai-gpt-oss-120b"),
}


def _qwen3(thought: str, call: dict | None, answer: str | None) -> str:
    head = f"<think> {gbnf_literal(thought)} </think> "
    if call is not None:
        body = json.dumps({"name": call["name"], "arguments": call["arguments"]})
        call_text = gbnf_literal(chr(10) + body + chr(10))
        return f"root ::= {head}{gbnf_literal(chr(10) * 2)} <tool_call> {call_text} </tool_call>"
    return f"root ::= {head}{gbnf_literal(chr(10) * 2 + answer)}"


_WRITERS = {"qwen3": _qwen3, "gpt-oss": harmony_turn}


def _the_note(output: str) -> str:
    found = re.search(r"kumquat-\d+", output)
    return f"The note says {found.group(0)}." if found else "I could not read it."


def steer_for(
    model: str, call: dict | None = None, answer: Callable[[str], str] = _the_note
) -> Callable[[str, object], dict | None]:
    """The proxy's ``steer`` for ``model``: before any tool output, reason and make ``call``
    (by default exec_command reading the note); after it, reason and answer ``answer(the
    last output)`` (by default the note's secret, which only reaches the server inside
    Codex's ``function_call_output``)."""
    write = _WRITERS[model]
    call = call or {"name": "exec_command", "arguments": {"cmd": COMMAND}}

    def steer(path: str, body) -> dict | None:
        if not path.rstrip("/").endswith("/responses") or not isinstance(body, dict):
            return None
        outputs = [
            item.get("output")
            for item in body.get("input") or ()
            if isinstance(item, dict)
            and item.get("type") in ("function_call_output", "custom_tool_call_output")
        ]
        if not outputs:
            grammar = write(THOUGHT_1, call, None)
        else:
            text = outputs[-1] if isinstance(outputs[-1], str) else json.dumps(outputs[-1])
            grammar = write(THOUGHT_2, None, answer(text))
        return {"grammar": grammar, "temperature": 0}

    return steer


def fixture_path(mode: str, model: str) -> Path:
    """The recording of one mode (``responses``, ``oss``) with one model, of the pinned Codex."""
    from tests.support.clients import PINS

    return FIXTURES / f"{mode}-{model}@{PINS['@openai/codex']}.json"


def serve(family_model, **server):
    """A ``hoshikage serve`` of both models (each with a context for Codex's ~9k-token
    prompt; qwen3 also as ``gpt-5.5``), with ``server`` as its ``[server]`` table."""
    models = [
        {
            "name": name,
            "path": str(family_model(vocab, template)),
            "n_ctx": 32768,
            "parallel": 1,
            # A name Codex knows: it then sends that model's tools (apply_patch as a custom
            # tool with a Lark grammar, tool_search) and settings (text.verbosity).
            **({"aliases": [KNOWN_ALIAS]} if name == "qwen3" else {}),
        }
        for name, (vocab, template) in FAMILIES.items()
    ]
    return running_server({"server": server, "models": models}, startup_timeout=60)
