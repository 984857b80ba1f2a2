"""Continue's CLI (``@continuedev/cli``, pinned in tests/support/clients.py) completes a real
``cn -p`` session against Hoshikage with the config docs/agents.md gives: it reads
``secret.txt`` with its own ``Read`` tool and answers with what it read, every request
answered with success. Its ``openai`` provider (the documented one), its ``ollama`` provider
(Ollama's address; it posts to ``/v1/chat/completions`` there) and its ``llama.cpp``
provider (which posts to ``/chat/completions``, without ``/v1``, as llama-server serves it)
each do."""

from __future__ import annotations

import json

import pytest

from tests.clients.conftest import DOC_URL, SECRET, doc_blocks, doc_env, read_the_secret, run
from tests.support.clients import npm_program, offline_env, recording_proxy

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

PACKAGE = "@continuedev/cli"
#: Provider -> (how the documented ``apiBase`` changes, the chat path it posts to).
PROVIDERS = {
    "openai": ("/v1", "/v1/chat/completions"),
    # The CLI speaks OpenAI chat to Ollama too, at its /v1.
    "ollama": ("", "/v1/chat/completions"),
    "llama.cpp": ("", "/chat/completions"),
}


def config(provider: str, base_url: str) -> str:
    """docs/agents.md's ``config.yaml``, the server at ``base_url``, with ``provider``."""
    (block,) = doc_blocks("Continue", "yaml")
    assert f"apiBase: {DOC_URL}/v1" in block and "contextLength: 32768" in block
    suffix = PROVIDERS[provider][0]
    block = block.replace(f"apiBase: {DOC_URL}/v1", f"apiBase: {base_url}{suffix}")
    return block.replace("provider: openai", f"provider: {provider}")


def main_loop(body: dict) -> bool:
    """The agent's own turns: the ones that offer its ``Read`` tool."""
    return any(
        (tool.get("function") or {}).get("name") == "Read" for tool in body.get("tools") or ()
    )


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_a_continue_session_reads_a_file_and_answers_with_it(qwen3_server, workdir, provider):
    cn = npm_program(PACKAGE, "cn")
    home = workdir.parent / "home"
    (home / ".continue").mkdir(parents=True)
    steer = read_the_secret("Read", {"filepath": "secret.txt"}, main=main_loop)
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        path = home / ".continue" / "config.yaml"
        path.write_text(config(provider, proxy.base_url))
        env = offline_env(home, **doc_env("Continue", proxy.base_url))
        done = run([cn, "-p", "Read secret.txt", "--config", path, "--auto"], workdir, env)
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    assert done.stdout.strip().endswith(f"The secret is {SECRET}."), done.stdout
    proxy.assert_all_ok()
    chat = [x for x in proxy.exchanges if x.steered and main_loop(x.json())]
    assert {x.path for x in chat} == {PROVIDERS[provider][1]}
    # The tool round trip: the call, then its result, went back to the model.
    messages = chat[-1].json()["messages"]
    assert SECRET in json.dumps(messages[-1]) and messages[-1]["role"] == "tool"
