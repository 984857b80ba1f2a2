"""The Vercel AI SDK (npm ``ai``, with its providers, pinned in tests/support/clients.py),
which JavaScript apps build their chats and agents on, against Hoshikage: the real SDK runs
``generateText`` and ``streamText`` with a tool (tests/clients/scripts/ai_sdk.mjs), and
the model reads ``secret.txt`` with it and answers with the secret, through each provider
an app points at a local server: ``@ai-sdk/openai`` (its default model speaks the Responses
API, stores each response and sends the earlier steps back as ``item_reference`` inputs;
``.chat()`` speaks chat completions), ``@ai-sdk/openai-compatible``, ``@ai-sdk/anthropic``
and ``ollama-ai-provider-v2`` (Ollama's ``/api/chat``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.clients.conftest import SECRET, conversation, read_the_secret
from tests.support.clients import PINS, npm_installed, recording_proxy

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

SCRIPT = Path(__file__).parent / "scripts" / "ai_sdk.mjs"
#: The SDK and its providers (the pins of tests/support/clients.py).
PACKAGES = (
    "ai",
    "@ai-sdk/openai",
    "@ai-sdk/openai-compatible",
    "@ai-sdk/anthropic",
    "ollama-ai-provider-v2",
    "zod",
)
#: Provider -> the path its requests go to.
PROVIDERS = {
    "openai": "/v1/responses",
    "openai-chat": "/v1/chat/completions",
    "openai-compatible": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "ollama": "/api/chat",
}


def offers_read(body: dict) -> bool:
    """The SDK's tool loop: a request that offers the ``read`` tool (in any API's shape)."""
    return any(
        (tool.get("function") or tool).get("name") == "read" for tool in body.get("tools") or ()
    )


def counted(server, body: dict) -> int:
    """The input tokens of a Responses request (``POST /v1/responses/input_tokens``)."""
    fields = ("model", "input", "instructions", "tools", "reasoning", "tool_choice")
    answer = httpx.post(
        server.base_url + "/v1/responses/input_tokens",
        json={k: body[k] for k in fields if k in body},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["input_tokens"]


@pytest.mark.parametrize("model", ["qwen3", "gpt-oss"])
def test_the_ai_sdk_runs_a_tool_loop_through_every_provider(qwen3_server, workdir, model):
    folder = npm_installed({package: PINS[package] for package in PACKAGES})
    node = shutil.which("node")
    (workdir / "node_modules").symlink_to(folder / "node_modules")
    shutil.copy(SCRIPT, workdir / "ai_sdk.mjs")
    steer = read_the_secret("read", {"path": "secret.txt"}, main=offers_read, family=model)
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        done = subprocess.run(
            [node, "ai_sdk.mjs", *PROVIDERS],
            cwd=workdir,
            env={**os.environ, "BASE_URL": proxy.base_url, "MODEL": model},
            capture_output=True,
            text=True,
            timeout=400,
        )
    assert done.returncode == 0, (done.stdout, done.stderr)
    # The SDK's own warnings (an unknown model's output limit) come between the runs' lines.
    lines = done.stdout.splitlines()
    runs = [line.split(" ", 3) for line in lines if line.split(" ", 1)[0] in PROVIDERS]
    assert [(name, mode) for name, mode, *_ in runs] == [
        (name, mode) for name in PROVIDERS for mode in ("generate", "stream")
    ], done.stdout
    for name, mode, status, text in runs:
        assert (status, text) == ("OK", f"The secret is {SECRET}."), (name, mode, text)
    proxy.assert_all_ok()
    for name, path in PROVIDERS.items():
        loops = [x for x in proxy.exchanges if x.path == path and offers_read(x.json())]
        assert len(loops) >= 2, (name, [x.path for x in proxy.exchanges])
    # The Responses API's later steps name the earlier steps' stored items by id, and the
    # server reads them into the prompt: without the references it is shorter.
    responses = [x for x in proxy.exchanges if x.path == "/v1/responses"]
    later = [x for x in responses if SECRET in json.dumps(conversation(x.json()))]
    assert len(later) == 2  # generateText's and streamText's
    for exchange in later:
        body = exchange.json()
        references = [i for i in body["input"] if i.get("type") == "item_reference"]
        answered = " ".join(x.response_body.decode() for x in responses if x is not exchange)
        assert references and all(ref["id"] in answered for ref in references), references
        without = {**body, "input": [i for i in body["input"] if i not in references]}
        assert counted(qwen3_server, body) > counted(qwen3_server, without)
