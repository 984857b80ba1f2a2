"""opencode (``opencode-ai``, pinned in tests/support/clients.py) completes a real
``opencode run`` session against Hoshikage's OpenAI chat API, through an OpenAI-compatible
provider in its config (docs/agents.md), with a Qwen3 and a gpt-oss (harmony) model: it
reads ``secret.txt`` with its own ``read`` tool
and answers with what it read, every request answered with success, its reasoning sent back
with its call."""

from __future__ import annotations

import json

import pytest

from tests.clients.conftest import (
    N_CTX,
    SECRET,
    THOUGHT_1,
    doc_json,
    read_the_secret,
    record,
    run,
)
from tests.support.clients import npm_program, offline_env, recording_proxy

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

PACKAGE = "opencode-ai"


def opencode_config(base_url: str) -> dict:
    """The ``opencode.json`` docs/agents.md gives."""
    config = doc_json("opencode", base_url)
    assert config["provider"]["hoshikage"]["models"]["qwen3"]["limit"]["context"] == N_CTX
    return config


@pytest.mark.parametrize("model", ["qwen3", "gpt-oss"])
def test_an_opencode_session_reads_a_file_and_answers_with_it(qwen3_server, workdir, model):
    opencode = npm_program(PACKAGE)
    steer = read_the_secret(
        "read",
        {"filePath": str(workdir / "secret.txt")},
        main=lambda body: any(
            (t.get("function") or {}).get("name") == "read" for t in body.get("tools") or ()
        ),
        family=model,
    )
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        config = opencode_config(proxy.base_url)
        models = config["provider"]["hoshikage"]["models"]
        models[model] = {**models["qwen3"], "name": model}
        (workdir / "opencode.json").write_text(json.dumps(config))
        env = offline_env(workdir.parent / "home")
        done = run(
            [opencode, "run", "--model", f"hoshikage/{model}", "Read secret.txt"], workdir, env
        )
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    assert f"The secret is {SECRET}." in done.stdout, (done.stdout, done.stderr)
    assert "error" not in done.stderr.lower(), done.stderr
    proxy.assert_all_ok()
    main = [x.json() for x in proxy.exchanges if x.steered and x.json().get("tools")]
    assert len(main) >= 2, [x.path for x in proxy.exchanges]
    # The tool round trip: the call, then its result, went back to the model.
    call, result = main[-1]["messages"][-2:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "read"
    assert result["role"] == "tool" and SECRET in json.dumps(result["content"])
    # The model's reasoning went back with its call (``reasoning_content``).
    assert call["reasoning_content"].strip() == THOUGHT_1
    (workdir / "opencode.json").unlink()
    record(
        PACKAGE,
        proxy,
        {str(workdir): "/work", str(workdir.parent / "home"): "/home/user"},
        model,
    )
