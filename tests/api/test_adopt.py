"""Adopting the models a user already has (``models_dir = ["ollama", "huggingface",
"lmstudio"]``), served in place: an Ollama store laid out as Ollama writes it, a Hugging
Face cache written by ``huggingface_hub`` itself (``hf_hub_download`` from the loopback hub)
and an LM Studio folder; then the official ``ollama`` client chats with an adopted model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")

from tests.support.hubs import Hubs  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(120)


#: The SYSTEM layer of the Ollama store's models.
SYSTEM = "You are a tiny llama."


def blob(store: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    (store / "blobs" / f"sha256-{digest}").write_bytes(data)
    return f"sha256:{digest}"


def ollama_store(root: Path, gguf: Path) -> Path:
    """``~/.ollama/models`` as Ollama lays it out: a manifest per name and tag, blobs by
    digest (the model, a Go template and a params layer)."""
    model = blob(root, gguf.read_bytes())
    params = blob(root, json.dumps({"temperature": 0.3, "num_ctx": 384, "stop": ["<x>"]}).encode())
    template = blob(root, b"{{ .Prompt }}")
    system = blob(root, SYSTEM.encode())
    for host, namespace, name, tag in (
        ("registry.ollama.ai", "library", "tinyllama", "1b"),
        ("registry.ollama.ai", "someone", "mine", "latest"),
        ("hf.co", "org", "repo-GGUF", "Q8_0"),
    ):
        folder = root / "manifests" / host / namespace / name
        folder.mkdir(parents=True, exist_ok=True)
        layers = [
            {"mediaType": "application/vnd.ollama.image.model", "digest": model, "size": 1},
            {"mediaType": "application/vnd.ollama.image.template", "digest": template, "size": 1},
            {"mediaType": "application/vnd.ollama.image.params", "digest": params, "size": 1},
            {"mediaType": "application/vnd.ollama.image.system", "digest": system, "size": 1},
        ]
        manifest = {
            "schemaVersion": 2,
            "config": {"digest": "sha256:" + "0" * 64},
            "layers": layers,
        }
        (folder / tag).write_text(json.dumps(manifest))
    # a manifest whose blob is gone is left out with a note, not an error
    gone = root / "manifests" / "registry.ollama.ai" / "library" / "gone"
    gone.mkdir(parents=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "1" * 64}
    (gone / "latest").write_text(json.dumps({"layers": [layer]}))
    return root


def hf_cache(root: Path, gguf: Path) -> Path:
    """A Hugging Face cache written by ``hf_hub_download`` itself."""
    from huggingface_hub import hf_hub_download

    with Hubs() as hubs:
        hubs.add_hf("someorg/Cached-GGUF", {"Cached-Q8_0.gguf": gguf})
        path = hf_hub_download(
            "someorg/Cached-GGUF", "Cached-Q8_0.gguf", cache_dir=root, endpoint=hubs.hf
        )
    assert Path(path).is_symlink() and "snapshots" in path
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_path):
    home = tmp_path_factory.mktemp("home")
    ollama_store(home / "ollama-models", tiny_model_path)
    hf_cache(home / "hf" / "hub", tiny_model_path)
    lms = home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF"
    lms.mkdir(parents=True)
    (lms / "LMTiny-Q8_0.gguf").write_bytes(tiny_model_path.read_bytes())
    env = {
        "HOME": str(home),
        "OLLAMA_MODELS": str(home / "ollama-models"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_CACHE": "",
    }
    config = {"models_dir": ["ollama", "huggingface", "lmstudio"]}
    with running_server(config, env=env) as srv:
        yield srv


def test_adopted_models_are_served_in_place(server, tmp_path_factory):
    client = ollama.Client(host=server.base_url, timeout=60)
    names = {m.model for m in client.list().models}
    assert {
        "tinyllama:1b",
        "someone/mine:latest",
        "hf.co/org/repo-GGUF:Q8_0",
        "cached-q8_0:latest",
        "lmtiny-q8_0:latest",
    } <= names, names
    assert not any("gone" in n for n in names)
    show = client.show("tinyllama:1b")
    # served in place: the blob in Ollama's store, the snapshot link in the HF cache
    assert "ollama-models/blobs/sha256-" in show.modelfile
    assert "/hub/models--someorg--Cached-GGUF/snapshots/" in client.show("cached-q8_0").modelfile
    assert client.show("someone/mine:latest").modelfile == show.modelfile  # one blob, two names
    assert "num_ctx                        384" in show.parameters  # Ollama's params came along
    assert "temperature                    0.3" in show.parameters
    # Its SYSTEM layer came along: a chat without a system message begins with it (the same
    # GGUF adopted from the Hugging Face cache, which has none, reads it sent plainly).
    assert f'SYSTEM """{SYSTEM}"""' in show.modelfile
    shown = httpx.post(f"{server.base_url}/api/show", json={"model": "tinyllama:1b"}).json()
    assert shown["system"] == SYSTEM
    hello = [{"role": "user", "content": "hello"}]
    answer = client.chat(model="tinyllama:1b", messages=hello, options={"num_predict": 4})
    assert answer.done
    plain = client.chat(
        model="cached-q8_0",
        messages=[{"role": "system", "content": SYSTEM}, *hello],
        options={"num_predict": 1},
    )
    assert answer.prompt_eval_count == plain.prompt_eval_count
    answer = client.generate(model="cached-q8_0", prompt="hello", options={"num_predict": 4})
    assert answer.done


def test_a_missing_place_is_a_note_not_an_error(tmp_path, tiny_model_path):
    env = {
        "HOME": str(tmp_path),
        "OLLAMA_MODELS": str(tmp_path / "none"),
        "HF_HOME": str(tmp_path / "none"),
    }
    config = {
        "models_dir": ["ollama", "huggingface", "lmstudio"],
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
    }
    with running_server(config, env=env) as srv:
        client = ollama.Client(host=srv.base_url, timeout=30)
        assert [m.model for m in client.list().models] == ["tiny:latest"]
        assert "nothing to adopt" in srv.log()
    assert os.path.exists(tiny_model_path)
