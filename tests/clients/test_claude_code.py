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

from tests.clients.conftest import N_CTX, SECRET, WRITERS, doc_env, read_the_secret, record, run
from tests.support.clients import npm_program, offline_env, recording_proxy
from tests.support.documents import pdf

anthropic = pytest.importorskip("anthropic")
write_qwen3 = WRITERS["qwen3"]

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


def test_claude_code_reads_a_pdf_and_the_model_reads_its_text(qwen3_server, workdir):
    """Claude Code's ``Read`` of a PDF answers with a ``document`` block holding the file
    (base64, ``application/pdf``) in its ``tool_result``: the session goes on (each such
    request was a 400 before, and Claude Code gave up), and the model read the PDF's text:
    the request counts as many tokens as the same request with the text in the block's
    place (``/v1/messages/count_tokens``)."""
    claude = npm_program(PACKAGE)
    path = workdir / "secret.pdf"
    path.write_bytes(pdf(f"The secret is {SECRET}.", "Keep it safe."))

    steer = _read_then_answer(path, "I read the PDF.", f"It says {SECRET}.")
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        env = claude_env(workdir.parent / "home", proxy.base_url)
        done = run([claude, "-p", "Read secret.pdf", "--output-format", "json"], workdir, env)
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    out = json.loads(done.stdout)
    assert out["subtype"] == "success" and out["is_error"] is False, out
    assert out["result"] == f"It says {SECRET}.", out["result"]
    proxy.assert_all_ok()
    (answered,) = [
        x
        for x in proxy.exchanges
        if x.path.startswith("/v1/messages") and x.steered and _tool_result(x.json()) is not None
    ]
    body = answered.json()
    documents = [b for b in _tool_result(body)["content"] if b.get("type") == "document"]
    assert [d["source"]["media_type"] for d in documents] == ["application/pdf"]
    as_sent = _count(qwen3_server.base_url, body)
    text = f"[Page 1]\nThe secret is {SECRET}.\n\n[Page 2]\nKeep it safe."
    documents[0].clear()
    documents[0].update({"type": "text", "text": text})
    assert as_sent == _count(qwen3_server.base_url, body)
    documents[0]["text"] = "[Page 1]\nThe secret is hidden.\n\n[Page 2]\nKeep it safe."
    assert as_sent != _count(qwen3_server.base_url, body)


def test_claude_code_reads_an_image_with_a_model_that_takes_none(qwen3_server, workdir):
    """Claude Code's ``Read`` of a PNG answers with an ``image`` block in its
    ``tool_result``. For a model without a projector that was a 400 that stayed in the
    session's history, and Claude Code ended with "API Error: 400 ... start a new session".
    Now the image is left out with a note the model reads (the request counts as many tokens
    as the same request with the note in the image's place), and the session goes on."""
    from hoshikage_api.kernel.media import LEFT_OUT

    from tests.support.projectors import png_bytes

    claude = npm_program(PACKAGE)
    path = workdir / "chart.png"
    path.write_bytes(png_bytes())
    steer = _read_then_answer(path, "No image.", "I cannot see images.")
    with recording_proxy(qwen3_server.base_url, steer) as proxy:
        env = claude_env(workdir.parent / "home", proxy.base_url)
        done = run([claude, "-p", "Look at chart.png", "--output-format", "json"], workdir, env)
    assert done.returncode == 0, (done.stdout, done.stderr, proxy.failures())
    out = json.loads(done.stdout)
    assert out["is_error"] is False and out["result"] == "I cannot see images.", out
    proxy.assert_all_ok()
    (body,) = [
        x.json()
        for x in proxy.exchanges
        if x.path.startswith("/v1/messages") and x.steered and _tool_result(x.json()) is not None
    ]
    images = [b for b in _tool_result(body)["content"] if b.get("type") == "image"]
    assert len(images) == 1
    as_sent = _count(qwen3_server.base_url, body)
    images[0].clear()
    images[0].update({"type": "text", "text": LEFT_OUT["image"]})
    assert as_sent == _count(qwen3_server.base_url, body)


def _reads(body: dict) -> bool:
    """Claude Code's main loop: the turns that offer its ``Read`` tool."""
    return any(t.get("name") == "Read" for t in body.get("tools") or ())


def _read_then_answer(path, thought: str, answer: str):
    """The proxy's steer: Claude Code's ``Read`` of ``path``, then, once its result is in
    the conversation, a turn that thinks ``thought`` and answers ``answer``."""
    first = read_the_secret("Read", {"file_path": str(path)}, main=_reads)

    def steer(at: str, body):
        if isinstance(body, dict) and "messages" in body and _tool_result(body) is not None:
            if _reads(body):
                return {"grammar": write_qwen3(thought, None, answer)}
        return first(at, body)

    return steer


def _tool_result(body: dict) -> dict | None:
    """The last ``tool_result`` block of a Messages request, if any."""
    results = [
        b
        for m in body["messages"]
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]
    return results[-1] if results else None


def _count(base_url: str, body: dict) -> int:
    sdk = anthropic.Anthropic(base_url=base_url, api_key="x", max_retries=0)
    fields = ("model", "messages", "system", "tools")
    return sdk.messages.count_tokens(**{k: body[k] for k in fields if k in body}).input_tokens
