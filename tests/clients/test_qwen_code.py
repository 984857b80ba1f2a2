"""Qwen Code (``@qwen-code/qwen-code``, pinned in tests/support/clients.py) completes a real
``qwen -p`` session against Hoshikage's OpenAI chat API (docs/agents.md), with a Qwen3 and a
gpt-oss (harmony) model: it reads ``secret.txt`` with its own ``read_file`` tool and answers
with what it read, every request answered with success, its reasoning sent back with its
call."""

from __future__ import annotations

import json

import pytest

from tests.clients.conftest import (
    N_CTX,
    SECRET,
    THOUGHT_1,
    doc_env,
    doc_json,
    read_the_secret,
    record,
    run,
)
from tests.support.clients import npm_program, offline_env, recording_proxy

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

PACKAGE = "@qwen-code/qwen-code"


def qwen_settings() -> dict:
    """The ``~/.qwen/settings.json`` docs/agents.md gives."""
    settings = doc_json("Qwen Code", "")
    assert settings["model"]["generationConfig"]["contextWindowSize"] == N_CTX
    return settings


@pytest.mark.parametrize("model", ["qwen3", "gpt-oss"])
def test_a_qwen_code_session_reads_a_file_and_answers_with_it(qwen3_server, workdir, model):
    qwen = npm_program(PACKAGE)
    home = workdir.parent / "home"
    (home / ".qwen").mkdir(parents=True)
    settings = qwen_settings()
    settings["model"]["name"] = model
    (home / ".qwen" / "settings.json").write_text(json.dumps(settings))
    steer = read_the_secret(
        "read_file",
        {"file_path": str(workdir / "secret.txt")},
        main=lambda body: "You are Qwen Code" in json.dumps(body["messages"][:1]),
        family=model,
    )
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        env = offline_env(home, **{**doc_env("Qwen Code", proxy.base_url), "OPENAI_MODEL": model})
        done = run([qwen, "-p", "Read secret.txt", "--output-format", "json"], workdir, env)
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    events = json.loads(done.stdout)
    (result,) = [e for e in events if e["type"] == "result"]
    assert result["subtype"] == "success" and result["is_error"] is False, result
    assert result["result"] == f"The secret is {SECRET}.", result["result"]
    proxy.assert_all_ok()
    main = [
        x.json()
        for x in proxy.exchanges
        if x.steered and "You are Qwen Code" in json.dumps(x.json()["messages"][:1])
    ]
    # The tool round trip: the call, then its result, went back to the model.
    call, answer = main[-1]["messages"][-2:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "read_file"
    assert answer["role"] == "tool" and SECRET in json.dumps(answer["content"])
    # The model's reasoning went back with its call.
    assert call["reasoning_content"].strip() == THOUGHT_1
    record(PACKAGE, proxy, {str(workdir): "/work", str(home): "/home/user"}, model)
