"""The real agent programs against a real server: the shared pieces.

A session is one non-interactive run of a program (``claude -p``, ``opencode run``,
``qwen -p``) in a fresh working folder and ``HOME``, pointed at a recording proxy before a
``hoshikage serve`` with a tiny random-weight Qwen3 (the real Qwen tokenizer and the real
Qwen3 template: its ``<think>`` and ``<tool_call>`` tokens are real). The proxy steers each
request with a ``grammar`` (:func:`read_the_secret`): the model thinks, calls the program's
own file-reading tool on ``secret.txt``, and once the tool's result comes back, thinks again
and answers with the secret it read. The secret is only in the file, so an answer holding
it proves the round trip: the model called the tool, the program ran it and sent the
result, and the next answer used it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import PINS, Proxy, gbnf_literal, harmony_turn, scrub

SECRET = "SECRET-4217"
#: docs/agents.md: its snippets are what the sessions run (the server's address replaced).
AGENTS = Path(__file__).resolve().parents[2] / "docs" / "agents.md"
DOC_URL = "http://127.0.0.1:8000"
FIXTURES = Path(__file__).parent / "fixtures"
#: Set to re-record the fixtures of the pinned versions (after a pin is bumped on purpose).
RECORD = os.environ.get("HOSHIKAGE_RECORD_FIXTURES") == "1"
N_CTX = 32768


#: Served name -> (vocab, template) of the tiny fixtures: Qwen3 (``<think>``, hermes calls in
#: ``<tool_call>``) and gpt-oss (harmony channels: its reasoning in ``analysis``).
FAMILIES = {
    "qwen3": ("qwen35", "Qwen-Qwen3-0.6B"),
    "gpt-oss": ("qwen2", "openai-gpt-oss-120b"),
}


def serving(family_model) -> dict:
    """The config of a server with each of :data:`FAMILIES`, with room for an agent's prompt."""
    models = [
        {"name": name, "path": str(family_model(vocab, template)), "n_ctx": N_CTX}
        for name, (vocab, template) in FAMILIES.items()
    ]
    return {"models": models}


@pytest.fixture(scope="session")
def qwen3_server(family_model, tmp_path_factory):
    """A server with ``qwen3`` and ``gpt-oss`` (:data:`FAMILIES`)."""
    from tests.support.server import running_server

    with running_server(serving(family_model), startup_timeout=60) as server:
        yield server


@pytest.fixture
def workdir(tmp_path):
    """A working folder with ``secret.txt``, and a ``home`` beside it."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "secret.txt").write_text(f"{SECRET}\n")
    return work


THOUGHT_1 = "I should read the file."
THOUGHT_2 = "The file holds the secret."


def _qwen3(thought: str, call: dict | None, answer: str | None) -> str:
    """Qwen3's own output: a think block, then a hermes call or the answer."""
    head = f'"<think>" {gbnf_literal(chr(10) + thought + chr(10))} "</think>"'
    if call is not None:
        opening = f"\n\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
        return f"root ::= {head} {gbnf_literal(opening)}"
    return f"root ::= {head} {gbnf_literal(chr(10) * 2 + answer)}"


WRITERS = {"qwen3": _qwen3, "gpt-oss": harmony_turn}


def conversation(body: dict, path: str = "/responses") -> list:
    """A request's conversation, whichever API it came by: ``messages``, or on the Responses
    API (``path``) its ``input`` (a string is one message)."""
    turns = body.get("messages") or ("/responses" in path and body.get("input")) or []
    return [turns] if isinstance(turns, str) else turns


def read_the_secret(
    tool: str, arguments: dict[str, Any], main: Callable[[dict], bool], family: str = "qwen3"
) -> Callable[[str, Any], dict | None]:
    """The proxy's ``steer``: for the program's main loop (``main(body)``), a first turn
    that thinks and calls ``tool`` with ``arguments`` in the ``family``'s own form, and,
    once the secret is in the conversation, a turn that thinks and answers with it. Any
    other request (a title, a memory pass) gets a short fixed answer. The conversation is
    the request's ``messages`` (chat, Anthropic, Ollama) or ``input`` (the Responses API)."""
    write = WRITERS[family]
    call = {"name": tool, "arguments": arguments}

    def steer(path: str, body: Any) -> dict | None:
        if not isinstance(body, dict) or not conversation(body, path):
            return None
        if not main(body):
            return {"grammar": 'root ::= "Reading a file"'}
        if SECRET in json.dumps(conversation(body, path)[-1]):
            return {"grammar": write(THOUGHT_2, None, f"The secret is {SECRET}.")}
        return {"grammar": write(THOUGHT_1, call, None)}

    return steer


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env={**env, "PWD": str(cwd)},  # opencode takes its folder from $PWD
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    result.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    return result


def record(package: str, proxy: Proxy, replacements: dict[str, str], model: str = "qwen3") -> Path:
    """The session's requests, scrubbed of paths and ids, as this version's fixture with
    ``model`` (written with ``HOSHIKAGE_RECORD_FIXTURES=1``); fails when there is none."""
    path = fixture_path(package, model)
    if RECORD:
        exchanges = [
            {
                "method": x.method,
                "path": x.path,
                "status": x.status,
                "body": scrub(x.json(), replacements) if x.request_body else None,
                "steered": scrub(x.steered, replacements),
            }
            for x in proxy.exchanges
        ]
        data = {"package": package, "version": PINS[package], "exchanges": exchanges}
        text = json.dumps(data, indent=1, ensure_ascii=False)
        ids: dict[str, str] = {}
        for pattern in (UUID, DEVICE):
            text = pattern.sub(
                lambda m: ids.setdefault(
                    m.group(0), f"{len(ids) + 1:08d}-0000-0000-0000-000000000000"
                ),
                text,
            )
        path.write_text(text + "\n")
    assert path.exists(), (
        f"no recorded requests for {package}@{PINS[package]}: a pin was bumped without "
        f"re-recording; run the client tests with HOSHIKAGE_RECORD_FIXTURES=1"
    )
    return path


def doc_blocks(section: str, lang: str) -> list[str]:
    """The ``lang`` code blocks of docs/agents.md's ``## section``."""
    text = AGENTS.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def doc_env(section: str, base_url: str) -> dict[str, str]:
    """The ``export`` lines of the section's shell snippet, the server at ``base_url``."""
    (block,) = doc_blocks(section, "bash")
    pairs = re.findall(r"^export ([A-Z0-9_]+)=(\S+)$", block, flags=re.M)
    return {k: v.replace(DOC_URL, base_url) for k, v in pairs}


def doc_json(section: str, base_url: str, index: int = 0) -> dict:
    """The section's ``index``-th JSON snippet, the server at ``base_url``."""
    return json.loads(doc_blocks(section, "json")[index].replace(DOC_URL, base_url))


def fixture_path(package: str, model: str = "qwen3") -> Path:
    """The recording of the pinned ``package`` with ``model`` (the Qwen3 one is unsuffixed)."""
    suffix = "" if model == "qwen3" else f"-{model}"
    return FIXTURES / f"{package.strip('@').replace('/', '+')}@{PINS[package]}{suffix}.json"


#: Session and request ids, and device ids (64 hex digits), replaced in a fixture.
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEVICE = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
