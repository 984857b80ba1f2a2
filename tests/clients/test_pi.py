"""pi (``@mariozechner/pi-coding-agent``, pinned in tests/support/clients.py) completes a real
``pi -p`` session against Hoshikage with the ``models.json`` docs/agents.md gives: it reads
``secret.txt`` with its own ``read`` tool and answers with what it read, every request
answered with success. It does so through each of the three APIs a pi provider can name:
OpenAI chat (the documented one), the Responses API (its reasoning items, with their
``encrypted_content``, sent back in the next request) and Anthropic Messages (its
``thinking`` block sent back); with Qwen3 (thinking in ``<think>``) and gpt-oss (harmony)."""

from __future__ import annotations

import json

import pytest

from tests.clients.conftest import (
    DOC_URL,
    SECRET,
    conversation,
    doc_blocks,
    doc_env,
    read_the_secret,
    run,
)
from tests.support.clients import npm_program, offline_env, recording_proxy

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

PACKAGE = "@mariozechner/pi-coding-agent"
#: pi's ``api`` -> (the provider's ``baseUrl`` below the server's address, the path it posts to).
APIS = {
    "openai-completions": ("/v1", "/v1/chat/completions"),
    "openai-responses": ("/v1", "/v1/responses"),
    "anthropic-messages": ("", "/v1/messages"),
}


def models_json(api: str, base_url: str) -> str:
    """docs/agents.md's ``models.json``, the server at ``base_url``, its provider on ``api``."""
    (block,) = doc_blocks("pi", "json")
    config = json.loads(block)
    provider = config["providers"]["hoshikage"]
    assert provider["baseUrl"] == f"{DOC_URL}/v1" and provider["api"] == "openai-completions"
    assert provider["models"][0]["contextWindow"] == 32768
    provider["baseUrl"] = base_url + APIS[api][0]
    provider["api"] = api
    provider["models"].append({**provider["models"][0], "id": "gpt-oss"})
    return json.dumps(config)


def main_loop(body: dict) -> bool:
    """pi's own turns: the ones that offer its ``read`` tool (in any API's tool shape)."""
    return any(
        (tool.get("function") or tool).get("name") == "read" for tool in body.get("tools") or ()
    )


@pytest.mark.parametrize(
    ("api", "model", "thinking"),
    [
        ("openai-completions", "qwen3", "medium"),
        ("openai-responses", "qwen3", "medium"),
        ("anthropic-messages", "qwen3", "medium"),
        ("openai-responses", "gpt-oss", "high"),
        ("openai-completions", "gpt-oss", "off"),
    ],
)
def test_a_pi_session_reads_a_file_and_answers_with_it(qwen3_server, workdir, api, model, thinking):
    pi = npm_program(PACKAGE, "pi")
    home = workdir.parent / "home"
    (home / ".pi" / "agent").mkdir(parents=True)
    steer = read_the_secret("read", {"path": "secret.txt"}, main=main_loop, family=model)
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        (home / ".pi" / "agent" / "models.json").write_text(models_json(api, proxy.base_url))
        env = offline_env(home, **doc_env("pi", proxy.base_url))
        done = run(
            [pi, "--provider", "hoshikage", "--model", model, "--thinking", thinking]
            + ["--no-session", "-p", "Read secret.txt"],
            workdir,
            env,
        )
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    assert done.stdout.strip().endswith(f"The secret is {SECRET}."), done.stdout
    proxy.assert_all_ok()
    chat = [x for x in proxy.exchanges if x.steered and main_loop(x.json())]
    assert {x.path for x in chat} == {APIS[api][1]} and len(chat) == 2
    # The tool round trip: the call, then its result, went back to the model.
    first, last = chat[0].json(), chat[-1].json()
    assert SECRET in json.dumps(conversation(last)[-1])
    assert SECRET not in json.dumps(conversation(first))
    if api == "openai-responses" and thinking != "off":
        # The model's reasoning came back as an item pi keeps and sends again.
        (item,) = [i for i in conversation(last) if i.get("type") == "reasoning"]
        assert item["encrypted_content"] and "file" in json.dumps(item)
    if api == "anthropic-messages":
        blocks = [
            b["type"] for m in conversation(last) for b in m["content"] if isinstance(b, dict)
        ]
        assert blocks[:3] == ["text", "thinking", "tool_use"]
