"""Ollama's ``/api/create`` and ``/api/blobs``, end to end: the official ``ollama`` client
(``create_blob``, ``create``, ``show``, ``chat``, ``copy``, ``delete``) against a real
``hoshikage serve`` with the real llama.cpp backend and the tiny model. A model created from
an uploaded GGUF file, or from a model served here, is served at once with its own system
message and parameters; the server is the oracle for what a chat reads: the prompt of a chat
with the model's system message is exactly that of the same chat sent with it."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

SYSTEM = "You are terse. You answer in one word."
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def server(tiny_model_path, tmp_path):
    config = {
        "pull": {"dir": str(tmp_path / "store")},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 1024}],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return ollama.Client(host=server.base_url, timeout=60)


def prompt_tokens(client, model: str, messages) -> int:
    reply = client.chat(model=model, messages=messages, options={"num_predict": 1})
    return reply.prompt_eval_count


def test_a_model_created_from_an_uploaded_gguf_file(client, server, tiny_model_path, tmp_path):
    digest = client.create_blob(tiny_model_path)
    assert digest == "sha256:" + hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    assert httpx.head(f"{server.base_url}/api/blobs/{digest}").status_code == 200
    steps = list(
        client.create(
            model="mine",
            files={"tiny.gguf": digest},
            system=SYSTEM,
            parameters={"temperature": 0.2, "num_ctx": 512, "stop": ["</s>"]},
            stream=True,
        )
    )
    assert steps[-1].status == "success"
    assert "mine:latest" in [m.model for m in client.list().models]
    shown = client.show("mine")
    assert f'SYSTEM """{SYSTEM}"""' in shown.modelfile
    assert "temperature" in shown.parameters and "num_ctx" in shown.parameters
    assert shown.modelinfo["llama.context_length"] == 512
    with_system = [{"role": "system", "content": SYSTEM}, *USER]
    assert prompt_tokens(client, "mine", USER) == prompt_tokens(client, "tiny", with_system)
    # A chat that brings its own system message reads that one, not the model's.
    own = [{"role": "system", "content": "Be kind."}, *USER]
    assert prompt_tokens(client, "mine", own) == prompt_tokens(client, "tiny", own)
    # The OpenAI surface serves it too, with its system message.
    reply = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "mine", "messages": USER, "max_tokens": 1},
        timeout=60,
    ).json()
    assert reply["usage"]["prompt_tokens"] == prompt_tokens(client, "tiny", with_system)
    # Deleted, it is no longer served and its file is gone; the upload again brings it back.
    client.delete("mine")
    assert "mine:latest" not in [m.model for m in client.list().models]
    assert httpx.head(f"{server.base_url}/api/blobs/{digest}").status_code == 404


def test_a_model_created_from_a_model_served_here(client, tiny_model_path):
    done = client.create(model="terse", from_="tiny", system=SYSTEM, stream=False)
    assert done.status == "success"
    with_system = [{"role": "system", "content": SYSTEM}, *USER]
    assert prompt_tokens(client, "terse", USER) == prompt_tokens(client, "tiny", with_system)
    # Made again from itself with other parameters: the same weights, the system kept.
    client.create(model="terse", from_="terse", parameters={"temperature": 0.1})
    assert "temperature" in client.show("terse").parameters
    assert prompt_tokens(client, "terse", USER) == prompt_tokens(client, "tiny", with_system)
    # A copy, then the original's removal: the copy and the config's model keep serving.
    client.copy("terse", "terse2")
    client.delete("terse")
    assert "terse:latest" not in [m.model for m in client.list().models]
    assert tiny_model_path.exists()
    assert prompt_tokens(client, "tiny", USER) > 0


def test_what_cannot_be_created_here_is_a_clear_400(client, server, tiny_model_path, tmp_path):
    cases = [
        ({"model": "x"}, "'from'"),
        ({"model": "x", "from": "tiny", "quantize": "q4_K_M"}, "does not quantize"),
        ({"model": "x", "from": "tiny", "template": "{{ .Prompt }}"}, "Go template"),
        ({"model": "x", "from": "tiny", "adapters": {"a": "sha256:" + "0" * 64}}, "LoRA"),
        ({"model": "x", "from": "tiny", "messages": USER}, "preset messages"),
        ({"model": "x", "modelfile": "FROM tiny"}, "Modelfile"),
        ({"model": "x", "files": {"m.gguf": "sha256:" + "1" * 64}}, "upload it first"),
        ({"model": "x", "files": {"m.gguf": "md5:abc"}}, "not a digest"),
        ({"model": "tiny", "from": "tiny"}, "choose another name"),
    ]
    for body, words in cases:
        answer = httpx.post(f"{server.base_url}/api/create", json=body, timeout=30)
        assert answer.status_code == 400, (body, answer.text)
        assert words in answer.json()["error"], (body, answer.text)
    missing = httpx.post(f"{server.base_url}/api/create", json={"model": "x", "from": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    # An upload whose body is not its digest keeps nothing; a file that is not GGUF is no model.
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    answer = httpx.post(f"{server.base_url}/api/blobs/{wrong}", content=b"text")
    assert answer.status_code == 400 and "nothing was kept" in answer.json()["error"]
    assert httpx.head(f"{server.base_url}/api/blobs/{wrong}").status_code == 404
    # The partial file of an upload abandoned an hour ago goes with the next upload; one
    # being written stays.
    blobs = tmp_path / "store" / "blobs"
    abandoned, current = (blobs / f"sha256-{'a' * 64}.upload-{n}.partial" for n in (1, 2))
    for partial in (abandoned, current):
        partial.write_bytes(b"half")
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))
    text = "sha256:" + hashlib.sha256(b"text").hexdigest()
    assert httpx.post(f"{server.base_url}/api/blobs/{text}", content=b"text").status_code == 201
    assert not abandoned.exists() and current.exists()
    answer = httpx.post(
        f"{server.base_url}/api/create", json={"model": "x", "files": {"t.gguf": text}}
    )
    assert answer.status_code == 400 and "not a GGUF file" in answer.json()["error"]
    assert "x:latest" not in [m.model for m in client.list().models]
    assert json.loads(server.get("/health")[1])["status"] == "ok"
