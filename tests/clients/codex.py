"""What the Codex tests share with their replay: the conversation the model is steered
through (a grammar per request, made from what the conversation holds so far)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.server import running_server

KEY = "codex-test-key"
MODEL = "qwen3"
SECRET = "kumquat-42"
THOUGHT_1 = "The user wants the note; I should read note.txt with a shell command."
THOUGHT_2 = "The command printed the note; I can answer now."
COMMAND = "cat note.txt"
FIXTURES = Path(__file__).parent / "fixtures" / "codex"


def fixture_path(mode: str) -> Path:
    """The recording of one mode (``responses``, ``oss``) of the pinned Codex."""
    from tests.support.clients import PINS

    return FIXTURES / f"{mode}@{PINS['@openai/codex']}.json"


def _gbnf(text: str) -> str:
    return json.dumps(text)


def steer(path: str, body) -> dict | None:
    """The grammar for this turn: a call of exec_command before any tool output, then the
    answer built from what the command printed (the secret only reaches the server inside
    Codex's ``function_call_output``)."""
    if not path.rstrip("/").endswith("/responses") or not isinstance(body, dict):
        return None
    outputs = [
        item.get("output")
        for item in body.get("input") or ()
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]
    if not outputs:
        call = json.dumps({"name": "exec_command", "arguments": {"cmd": COMMAND}})
        grammar = (
            f"root ::= <think> {_gbnf(THOUGHT_1)} </think> {_gbnf(chr(10) * 2)} "
            f"<tool_call> {_gbnf(chr(10) + call + chr(10))} </tool_call>"
        )
    else:
        text = json.dumps(outputs[-1]) if not isinstance(outputs[-1], str) else outputs[-1]
        found = re.search(r"kumquat-\d+", text)
        answer = f"The note says {found.group(0)}." if found else "I could not read the note."
        grammar = f"root ::= <think> {_gbnf(THOUGHT_2)} </think> {_gbnf(chr(10) * 2 + answer)}"
    return {"grammar": grammar, "temperature": 0}


def serve(family_model, **server):
    """A ``hoshikage serve`` of the Qwen3-template model (a context for Codex's ~9k-token
    prompt), with ``server`` as its ``[server]`` table."""
    config = {
        "server": server,
        "models": [
            {
                "name": MODEL,
                "path": str(family_model("qwen35", "Qwen-Qwen3-0.6B")),
                "n_ctx": 32768,
                "parallel": 1,
            }
        ],
    }
    return running_server(config, startup_timeout=60)
