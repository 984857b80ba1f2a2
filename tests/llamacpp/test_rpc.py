"""llama.cpp's RPC backend for real, on loopback: Gemma 3 270M with its layers on a
``ggml-rpc-server`` at 127.0.0.1, in a child process (see hoshikage_llamacpp.lifecycle.isolation).

What a user relies on: the same answer as a local load, status telling where the layers
went, remote buffers freed at unload, and faults contained: an RPC host down at load is a
load error naming it, an RPC host killed mid-generation ends that request with a clear error
while the server and every other model keep serving, and a restarted host works again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.errors import ModelLoadError  # noqa: E402
from hoshikage_core.protocol import GenerationRequest, stream  # noqa: E402
from hoshikage_llamacpp.lifecycle.isolation import ProcessModel  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

from tests.support.rpc import RpcServer, find_rpc_server  # noqa: E402
from tests.support.server import free_port, running_server  # noqa: E402

pytestmark = [pytest.mark.gemma, pytest.mark.rpc]

COUNT = "Count from one to one thousand: 1, 2, 3, 4, 5,"
GREEDY = GenerationRequest(prompt="The capital of France is", max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def rpc_exe():
    if not llama_cpp.llama_supports_rpc():
        pytest.fail(
            "this llama-cpp-python build has no RPC support: run `make install` (it builds with -DGGML_RPC=on)"
        )
    try:
        return find_rpc_server()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def rpc_server(rpc_exe, tmp_path):
    server = RpcServer(rpc_exe).start(tmp_path / "rpc-server.log")
    yield server
    server.stop()


def rpc_options(server: RpcServer, **extra) -> LlamaOptions:
    return LlamaOptions(n_ctx=512, parallel=1, rpc_servers=server.endpoint, **extra)


def remote_bytes(
    placement: dict[str, dict[str, int]], endpoint: str, kind: str | None = None
) -> int:
    """Bytes on the RPC server at ``endpoint`` (of one kind: model, KV, compute, output)."""
    return sum(
        size
        for name, kinds in placement.items()
        if name.startswith("RPC") and f"[{endpoint}]" in name
        for k, size in kinds.items()
        if kind in (None, k)
    )


def host_kinds(placement: dict[str, dict[str, int]]) -> set[str]:
    return {
        kind for name, kinds in placement.items() if not name.startswith("RPC") for kind in kinds
    }


def greedy_text(model, request=GREEDY) -> str:
    return "".join(chunk.text for _index, chunk in stream(model, request))


def test_layers_on_the_rpc_server_answer_like_a_local_load(rpc_server, gemma_model_path):
    base_rss = rpc_server.rss()
    model = ProcessModel.load(
        "gemma-rpc", str(gemma_model_path), rpc_options(rpc_server, flash_attn=False)
    )
    try:
        placement = model.placement
        # What the server holds for sure: weights and KV cache (the compute buffer is
        # allocated too, but its pages are touched only as far as a graph needs them).
        remote = remote_bytes(placement, rpc_server.endpoint, "model") + remote_bytes(
            placement, rpc_server.endpoint, "KV"
        )
        # Every layer's weights and its KV cache went to the RPC device; the token embeddings
        # (an input layer, always kept on the host) did not.
        assert remote_bytes(placement, rpc_server.endpoint, "model") > 50 * 2**20, placement
        assert remote_bytes(placement, rpc_server.endpoint, "KV") > 0, placement
        assert "KV" not in host_kinds(placement) and "model" in host_kinds(placement), placement
        assert model.memory_bytes() >= remote
        loaded_rss = rpc_server.rss()
        assert loaded_rss - base_rss > remote * 0.8, (base_rss, loaded_rss, model.placement)
        rpc_text = greedy_text(model)
    finally:
        model.close()
    # Flash attention off on both ("auto" is on with RPC servers, off on the CPU alone): the
    # CPU kernel's f16 sums differ from the plain path's, so greedy text may too.
    local = LlamaCppModel.load(
        "gemma", str(gemma_model_path), LlamaOptions(n_ctx=512, parallel=1, flash_attn=False)
    )
    try:
        assert remote_bytes(local.placement, rpc_server.endpoint) == 0 and "KV" in host_kinds(
            local.placement
        )
        local_text = greedy_text(local)
    finally:
        local.close()
    # A local load repacks Q4_K weights for its own kernels (CPU_REPACK); the rpc-server's
    # CPU backend computes from the plain layout, so the logits differ in the last bits and
    # greedy text agrees for the first tokens only ...
    assert rpc_text and rpc_text.split()[:4] == local_text.split()[:4], (rpc_text, local_text)
    # ... while a local load with the same kernels (no repacking, flash attention off as
    # above) agrees token for token.
    same_kernels = LlamaCppModel.load(
        "gemma",
        str(gemma_model_path),
        LlamaOptions(n_ctx=512, parallel=1, extra_buffers=False, flash_attn=False),
    )
    try:
        assert "CPU_REPACK" not in same_kernels.placement
        assert greedy_text(same_kernels) == rpc_text
    finally:
        same_kernels.close()
    # Unloading freed the remote buffers: the server's memory is back near where it was.
    deadline = time.monotonic() + 10
    while rpc_server.rss() - base_rss > remote * 0.2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rpc_server.rss() - base_rss < remote * 0.2, (base_rss, loaded_rss, rpc_server.rss())


def test_an_rpc_host_down_at_load_is_a_load_error_naming_it(gemma_model_path):
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(ModelLoadError, match=rf"cannot reach the RPC server\(s\) {endpoint}"):
        ProcessModel.load(
            "gemma-rpc", str(gemma_model_path), LlamaOptions(n_ctx=512, rpc_servers=endpoint)
        )


def test_rpc_over_http_faults_are_contained(
    rpc_exe, rpc_server, gemma_model_path, tiny_model_path, tmp_path
):
    down = f"127.0.0.1:{free_port()}"
    config = {
        "server": {"concurrency": 4},
        "unload": {"max_loaded": 4},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256},
            {
                "name": "gemma-rpc",
                "path": str(gemma_model_path),
                "n_ctx": 1024,
                "parallel": 1,
                "rpc_servers": rpc_server.endpoint,
            },
            {
                "name": "gemma-down",
                "path": str(gemma_model_path),
                "n_ctx": 512,
                "rpc_servers": down,
            },
        ],
    }
    with running_server(config) as server:
        url = server.base_url

        def complete(model, **body):
            body = {"model": model, "prompt": "Hello", "max_tokens": 4, **body}
            return httpx.post(url + "/v1/completions", json=body, timeout=120)

        # Down at load: an error in the API's shape naming the host; the rest keeps serving.
        r = complete("gemma-down")
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert (
            error["code"] == "model_load_failed"
            and f"cannot reach the RPC server(s) {down}" in error["message"]
        )
        assert complete("tiny").status_code == 200

        # Loaded over RPC: status says where the layers went.
        assert complete("gemma-rpc").status_code == 200
        status = server.model_status("gemma-rpc", lambda m: m["state"] == "loaded", timeout=15.0)
        assert remote_bytes(status["placement"], rpc_server.endpoint, "model") > 50 * 2**20, status
        assert remote_bytes(status["placement"], rpc_server.endpoint, "KV") > 0, status
        assert status["memory_bytes"] > remote_bytes(
            status["placement"], rpc_server.endpoint, "model"
        )

        table = subprocess.run(
            [sys.executable, "-m", "hoshikage_core.cli", "status", "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        ).stdout
        assert "on RPC)" in next(line for line in table.splitlines() if "gemma-rpc" in line), table

        # doctor: RPC support in this build, the live host reachable, the dead one not.
        doctor = subprocess.run(
            [
                sys.executable,
                "-m",
                "hoshikage_core.cli",
                "--config",
                str(server.config_path),
                "doctor",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = doctor.stdout + doctor.stderr
        assert doctor.returncode != 0, out  # the unreachable host is a problem
        assert "RPC offload" in out and "supported by this build" in out
        assert f"RPC server {rpc_server.endpoint}" in out and "reachable (used by gemma-rpc)" in out
        assert f"RPC server {down}" in out and "unreachable" in out

        # Killed mid-generation: that stream ends with an error event naming the host.
        events = []
        body = {
            "model": "gemma-rpc",
            "prompt": COUNT,
            "max_tokens": 800,
            "temperature": 0,
            "stream": True,
        }
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                events.append(json.loads(line[6:]))
                if len(events) == 5:
                    rpc_server.kill()
        error = events[-1].get("error")
        assert error, events[-3:]
        assert error["code"] == "model_failed" and rpc_server.endpoint in error["message"], error
        assert server.process.poll() is None and server.get("/health")[0] == 200
        status = server.model_status("gemma-rpc", lambda m: m["state"] == "failed", timeout=15.0)
        assert rpc_server.endpoint in status["last_error"]
        assert complete("tiny").status_code == 200

        # While the host stays down, a request fails clearly at load.
        r = complete("gemma-rpc")
        assert r.status_code == 500 and rpc_server.endpoint in r.json()["error"]["message"]

        # The host comes back (same port): the model loads and serves again.
        again = RpcServer(rpc_exe, port=rpc_server.port).start(tmp_path / "rpc-server-2.log")
        try:
            r = complete("gemma-rpc", prompt="The capital of France is", temperature=0)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"]
            assert complete("tiny").status_code == 200
        finally:
            again.stop()
        assert "Remote RPC server crashed" in server.log() or "SIGABRT" in server.log()
