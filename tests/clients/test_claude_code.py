"""Claude Code (``@anthropic-ai/claude-code``, pinned in tests/support/clients.py) completes
a real ``claude -p`` session against Hoshikage's Anthropic Messages API, with a Qwen3 and a
gpt-oss (harmony) model: it thinks, reads
``secret.txt`` with its own ``Read`` tool, and answers with what it read, every request
answered with success, its thinking kept across the turns (``display: "omitted"``: the
signature carries it), and the model's real context known to it through
``CLAUDE_CODE_MAX_CONTEXT_TOKENS`` (docs/agents.md)."""

from __future__ import annotations

import json

import pytest

from tests.clients.conftest import N_CTX, SECRET, doc_env, read_the_secret, record, run
from tests.support.clients import npm_program, offline_env, recording_proxy

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

PACKAGE = "@anthropic-ai/claude-code"


def claude_env(home, base_url: str, model: str = "qwen3") -> dict:
    """The environment docs/agents.md gives, with the test's ``HOME`` (and ``model`` for
    every model role)."""
    env = doc_env("Claude Code", base_url)
    assert env["ANTHROPIC_MODEL"] == "qwen3" and env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(N_CTX)
    return offline_env(home, **{k: model if v == "qwen3" else v for k, v in env.items()})


def signatures(sse: bytes) -> list[str]:
    """The thinking signatures of an answer's event stream."""
    out = []
    for line in sse.decode().splitlines():
        if line.startswith("data:") and '"signature_delta"' in line:
            out.append(json.loads(line[5:])["delta"]["signature"])
    return out


@pytest.mark.parametrize("model", ["qwen3", "gpt-oss"])
def test_a_claude_code_session_reads_a_file_and_answers_with_it(qwen3_server, workdir, model):
    claude = npm_program(PACKAGE)
    path = str(workdir / "secret.txt")
    steer = read_the_secret(
        "Read",
        {"file_path": path},
        main=lambda body: any(t.get("name") == "Read" for t in body.get("tools") or ()),
        family=model,
    )
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        env = claude_env(workdir.parent / "home", proxy.base_url, model)
        done = run(
            [claude, "-p", "Read secret.txt", "--output-format", "json", "--model", model],
            workdir,
            env,
        )
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    out = json.loads(done.stdout)
    assert out["subtype"] == "success" and out["is_error"] is False, out
    assert out["api_error_status"] is None and out["num_turns"] == 2
    assert out["result"] == f"The secret is {SECRET}.", out["result"]
    assert out["modelUsage"][model]["contextWindow"] == N_CTX
    proxy.assert_all_ok()
    main = [x for x in proxy.exchanges if x.path.startswith("/v1/messages") and x.steered]
    first, second = [x for x in main if "Read" in json.dumps(x.json().get("tools"))][:2]
    # The tool round trip: the call's result went back to the model.
    call, result = second.json()["messages"][-2:]
    assert call["role"] == "assistant" and result["role"] == "user"
    assert SECRET in json.dumps(result["content"])
    # Its thinking came back with the call, as the signature the first answer gave it.
    (signature,) = signatures(first.response_body)
    thinking = [b for b in call["content"] if b["type"] == "thinking"]
    assert thinking == [{"type": "thinking", "thinking": "", "signature": signature}]
    record(
        PACKAGE,
        proxy,
        {
            str(workdir): "/work",
            str(workdir.parent / "home"): "/home/user",
            qwen3_server.base_url: "http://127.0.0.1:8000",
        },
        model,
    )
