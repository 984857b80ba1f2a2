"""opencode (``opencode-ai``, pinned in tests/support/clients.py) completes a real
``opencode run`` session against Hoshikage's OpenAI chat API, through an OpenAI-compatible
provider in its config (docs/agents.md), with a Qwen3 and a gpt-oss (harmony) model: it
reads ``secret.txt`` with its own ``read`` tool
and answers with what it read, every request answered with success, its reasoning sent back
with its call."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.clients.conftest import (
    N_CTX,
    SECRET,
    THOUGHT_1,
    WRITERS,
    doc_json,
    read_the_secret,
    record,
    run,
)
from tests.support.clients import npm_program, offline_env, recording_proxy
from tests.support.documents import pdf

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


def test_opencode_sends_an_attached_pdf_and_the_model_reads_its_text(qwen3_server, workdir):
    """With the ``modalities`` docs/agents.md gives, ``opencode run ... -f secret.pdf`` sends
    the PDF as a chat ``file`` part (a ``data:application/pdf`` URL): it is answered, and the
    model read the PDF's text: the request's prompt is as many tokens as the same request
    with that text in the part's place, and not as many with other text."""
    opencode = npm_program(PACKAGE)
    path = workdir / "secret.pdf"
    path.write_bytes(pdf(f"The secret is {SECRET}.", "Keep it safe."))

    def steer(path: str, body):
        if isinstance(body, dict) and "messages" in body:
            return {"grammar": WRITERS["qwen3"]("I read it.", None, f"It says {SECRET}.")}
        return None

    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        (workdir / "opencode.json").write_text(json.dumps(opencode_config(proxy.base_url)))
        env = offline_env(workdir.parent / "home")
        done = run(
            [opencode, "run", "--model", "hoshikage/qwen3", "What does it say?", "-f", path],
            workdir,
            env,
        )
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    assert f"It says {SECRET}." in done.stdout, (done.stdout, done.stderr)
    proxy.assert_all_ok()
    bodies = [x.json() for x in proxy.exchanges if x.steered and x.json().get("tools")]
    body = bodies[-1]
    parts = [
        part
        for m in body["messages"]
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "file"
    ]
    assert [p["file"]["file_data"][:28] for p in parts] == ["data:application/pdf;base64,"]

    def prompt_tokens(body: dict) -> int:
        request = {k: body[k] for k in ("model", "messages", "tools") if k in body}
        r = httpx.post(
            qwen3_server.base_url + "/v1/chat/completions",
            json={**request, "max_tokens": 1},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    as_sent = prompt_tokens(body)
    text = f"[Page 1]\nThe secret is {SECRET}.\n\n[Page 2]\nKeep it safe."
    parts[0].clear()
    parts[0].update({"type": "text", "text": f"Document: secret.pdf\n\n{text}"})
    assert as_sent == prompt_tokens(body)
    parts[0]["text"] = f"Document: secret.pdf\n\n{text.replace(SECRET, 'hidden')}"
    assert as_sent != prompt_tokens(body)
