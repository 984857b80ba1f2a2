"""Codex (``@openai/codex``, the real program from npm) against a real ``hoshikage serve``.

Two ways people point it here, each a real ``codex exec`` session:

* as a Responses API provider: ``[model_providers.hoshikage]`` with ``wire_api =
  "responses"`` in a ``CODEX_HOME`` config.toml;
* ``--oss --local-provider ollama``, through the Ollama API (``CODEX_OSS_BASE_URL``): Codex
  checks ``/api/version`` (at least 0.13.4), lists ``/api/tags``, then speaks the Responses
  API under ``/v1``.

The model is a tiny random-weight GGUF with Qwen3's real tokenizer and chat template
(tests/support/families.py). The recording proxy before the server steers each request
with a ``grammar`` made from what the conversation holds so far, so the model says exactly
what a Qwen3 model would: on the first turn it reasons, then calls ``exec_command`` to read
a note; once Codex has run it (in its sandbox) and sent the output back, it reasons again and
answers with the note's secret, which only the tool's output holds. Codex runs with
``store: false`` and ``include: ["reasoning.encrypted_content"]``: the first turn's reasoning
must come back in the second request as a sealed token, and be restored into the prompt.

Each session must exit 0 with no error event, every request through the proxy must be
answered with success, and the recorded requests are kept (scrubbed) as fixtures under
``tests/clients/fixtures/codex/`` for the fast replay tests (tests/clients/test_codex_replay.py),
written with ``HOSHIKAGE_RECORD_FIXTURES=1`` as the other programs' are.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
httpx = pytest.importorskip("httpx")

from tests.clients.codex import (  # noqa: E402
    COMMAND,
    FAMILIES,
    KEY,
    KNOWN_ALIAS,
    SECRET,
    THOUGHT_1,
    THOUGHT_2,
    fixture_path,
    serve,
    steer_for,
)
from tests.clients.conftest import DOC_URL, RECORD, doc_blocks  # noqa: E402
from tests.support.clients import PINS, npm_program, offline_env, recording_proxy, scrub  # noqa: E402

pytestmark = [pytest.mark.clients, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def codex():
    return npm_program("@openai/codex")


@pytest.fixture(scope="module")
def server(family_model):
    """With an API key: Codex sends its provider's ``env_key`` as a bearer token."""
    with serve(family_model, api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def open_server(family_model):
    """Without one, as a local Ollama: ``--oss`` sends no key."""
    with serve(family_model) as srv:
        yield srv


def workspace(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "note.txt").write_text(f"The secret is {SECRET}.\n")
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    return work


#: What every run sets in Codex's config: nothing phones home, nothing waits on a network
#: (``--strict-config`` makes Codex refuse a key it does not know).
QUIET_KEYS = "check_for_update_on_startup = false\n"
QUIET_TABLES = "\n[analytics]\nenabled = false\n[feedback]\nenabled = false\n"


def documented(block: int, base_url: str, model: str) -> tuple[dict[str, str], list[str]]:
    """The environment and the ``codex exec`` arguments of docs/agents.md's ``block``-th
    shell snippet under ``## Codex``, the server at ``base_url`` and ``-m`` naming ``model``."""
    text = doc_blocks("Codex", "bash")[block].replace(DOC_URL, base_url)
    env = dict(re.findall(r"^export ([A-Z0-9_]+)=(\S+)$", text, flags=re.M))
    (line,) = [line for line in text.splitlines() if line.startswith("codex exec")]
    args = shlex.split(line)[2:]
    if "-m" in args:
        args[args.index("-m") + 1] = model
    return env, args


def documented_config(base_url: str, model: str) -> str:
    """docs/agents.md's Codex ``config.toml``, the server at ``base_url``, for ``model``."""
    (config,) = doc_blocks("Codex", "toml")
    config = config.replace(DOC_URL, base_url)
    assert tomllib.loads(config)["model"] == "qwen3"
    return config.replace('model = "qwen3"', f'model = "{model}"', 1)


def run_codex(
    codex: Path,
    tmp_path: Path,
    block: int,
    base_url: str,
    model: str,
    config: str,
    sandbox: str = "read-only",
    **extra: str,
):
    """The documented session (shell snippet ``block``, its environment with ``extra`` over
    it), under the test's flags: JSON events, every config key known to Codex, the read-only
    sandbox, the test's folder."""
    home = tmp_path / "home"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(QUIET_KEYS + config + QUIET_TABLES)
    work = workspace(tmp_path)
    env, args = documented(block, base_url, model)
    env.update(extra)
    environment = offline_env(home, CODEX_HOME=str(codex_home), RUST_LOG="error", **env)
    started = time.monotonic()
    out = subprocess.run(
        [str(codex), "exec", "--json", "--strict-config", "--skip-git-repo-check"]
        + ["--sandbox", sandbox, "-C", str(work), *args],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return out, events, time.monotonic() - started, {str(home): "/home/user", str(work): "/work"}


def check_session(out, events, proxy, server) -> list[dict]:
    """The session's common checks; the ``/responses`` request bodies."""
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:], server.log()[-3000:])
    errors = [e for e in events if e.get("type") in ("error", "turn.failed")]
    assert not errors, errors
    proxy.assert_all_ok()
    turns = [x for x in proxy.exchanges if x.path.rstrip("/").endswith("/responses")]
    bodies = [x.json() for x in turns]
    assert len(bodies) == 2, [x.path for x in proxy.exchanges]
    first, second = bodies
    assert first["store"] is False and "reasoning.encrypted_content" in first["include"]
    # What Codex sends that Hoshikage once refused: a namespace and a hosted web_search.
    kinds = {tool["type"] for tool in first["tools"]}
    assert {"function", "namespace", "web_search"} <= kinds, kinds
    # The tool round trip: Codex ran the command and sent its output back...
    (call,) = [i for i in second["input"] if i.get("type") == "function_call"]
    assert call["name"] == "exec_command" and json.loads(call["arguments"])["cmd"] == COMMAND
    (result,) = [i for i in second["input"] if i.get("type") == "function_call_output"]
    assert result["call_id"] == call["call_id"] and SECRET in json.dumps(result["output"])
    # ...and the answer used it.
    messages = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages and messages[-1] == f"The note says {SECRET}.", messages
    # Codex shows the model's reasoning: it asks for summaries, and each is the reasoning.
    shown = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "reasoning"
    ]
    assert shown == [THOUGHT_1, THOUGHT_2], shown
    # The reasoning went back with its sealed token, which alone restores it: the request
    # with the token only (no text) has the prompt of the request as sent, longer by the
    # reasoning's tokens than without the item.
    (sent,) = [i for i in second["input"] if i.get("type") == "reasoning"]
    assert sent["encrypted_content"]
    assert sent["encrypted_content"] in turns[0].response_body.decode()
    sealed = {k: v for k, v in sent.items() if k != "content"}
    as_sent = prompt_tokens(server, second, second["input"])
    token_only = prompt_tokens(
        server, second, [sealed if i is sent else i for i in second["input"]]
    )
    without = prompt_tokens(server, second, [i for i in second["input"] if i is not sent])
    assert as_sent == token_only > without + 10, (as_sent, token_only, without)
    return bodies


def prompt_tokens(server, body: dict, items: list) -> int:
    """The prompt tokens of ``body`` with ``items`` as its input, sent again (one token)."""
    replay = {**body, "input": items, "stream": False, "max_output_tokens": 1}
    r = httpx.post(
        server.base_url + "/v1/responses",
        json=replay,
        headers={"authorization": f"Bearer {KEY}"},  # ignored by a server without a key
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return r.json()["usage"]["input_tokens"]


#: Ids that differ on every run: Codex's UUIDs, and the ids and tokens this server made.
_IDS = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|\b(?:rs|fc|msg|call|resp)_[0-9a-f]{24,32}\b|hk1\.[A-Za-z0-9_=-]+"
)


def scrubbed(exchanges, replacements: dict[str, str]) -> list[dict]:
    """The recorded exchanges in the client layer's fixture form (method, path, status, JSON
    body, what the proxy steered), temporary paths replaced, and every run-specific id by a
    stable one in order of appearance (``SEALED-1`` for a sealed reasoning token, which the
    replay seals anew)."""
    recorded = [
        {
            "method": x.method,
            "path": x.path,
            "status": x.status,
            "body": x.json() if x.request_body else None,
            "steered": x.steered,
        }
        for x in exchanges
    ]
    recorded = scrub(recorded, replacements)
    for entry in recorded:  # a map Codex writes in no fixed order: sorted, for quiet diffs
        body = entry["body"]
        if isinstance(body, dict) and isinstance(body.get("client_metadata"), dict):
            body["client_metadata"] = dict(sorted(body["client_metadata"].items()))
    seen: dict[str, str] = {}

    def stable(match: re.Match) -> str:
        value = match.group(0)
        if value not in seen:
            n = sum(1 for v in seen if v[:4] == value[:4]) + 1
            if value.startswith("hk1."):
                seen[value] = f"SEALED-{n}"
            elif "_" in value[:5]:
                seen[value] = f"{value.split('_')[0]}_{n:024x}"
            else:
                seen[value] = f"00000000-0000-0000-0000-{len(seen) + 1:012d}"
        return seen[value]

    return json.loads(_IDS.sub(stable, json.dumps(recorded)))


def keep_fixture(mode: str, model: str, exchanges, replacements: dict[str, str]) -> None:
    """The session's requests as ``fixtures/codex/<mode>-<model>@<version>.json``, written with
    ``HOSHIKAGE_RECORD_FIXTURES=1`` (as the other programs' fixtures); fails when the pinned
    version has none."""
    path = fixture_path(mode, model)
    if RECORD:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "package": "@openai/codex",
            "version": PINS["@openai/codex"],
            "exchanges": scrubbed(exchanges, replacements),
        }
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    assert path.exists(), (
        f"no recorded requests for Codex {PINS['@openai/codex']} ({mode}, {model}): the pin was "
        "bumped"
        " without re-recording; run the client tests with HOSHIKAGE_RECORD_FIXTURES=1"
    )


@pytest.mark.parametrize("model", list(FAMILIES))
def test_codex_as_a_responses_provider(codex, server, tmp_path, model):
    """docs/agents.md's provider config and command; the server has an API key, which Codex
    sends from the variable the config names."""
    with recording_proxy(server.base_url, steer=steer_for(model)) as proxy:
        config = documented_config(proxy.base_url, model)
        config += "request_max_retries = 0\nstream_max_retries = 0\n"  # in its provider table
        out, events, seconds, replacements = run_codex(
            codex, tmp_path, 0, proxy.base_url, model, config, HOSHIKAGE_API_KEY=KEY
        )
        check_session(out, events, proxy, server)
    print(f"codex (responses provider, {model}) session: {seconds:.1f} s")
    keep_fixture("responses", model, proxy.exchanges, replacements)


@pytest.mark.parametrize("model", list(FAMILIES))
def test_codex_oss_through_the_ollama_api(codex, open_server, tmp_path, model):
    """docs/agents.md's ``--oss`` command, against a server without a key (as a local
    Ollama: this mode sends none)."""
    server = open_server
    with recording_proxy(server.base_url, steer=steer_for(model)) as proxy:
        out, events, seconds, replacements = run_codex(
            codex, tmp_path, 1, proxy.base_url, model, ""
        )
        check_session(out, events, proxy, server)
        # Before the session: the version check, the model list and a pull (Codex pulls a
        # model /api/tags does not list under the exact name it was given).
        calls = [(x.method, x.path) for x in proxy.exchanges]
        assert ("GET", "/api/version") in calls and ("GET", "/api/tags") in calls, calls
    print(f"codex --oss ({model}) session: {seconds:.1f} s")
    keep_fixture("oss", model, proxy.exchanges, replacements)


def test_codex_routes_a_call_of_its_namespaced_tool(codex, server, tmp_path):
    """The model calls ``multi_agent_v1.close_agent`` (a tool of Codex's namespace, offered
    to it under that name): the call reaches Codex as ``name: close_agent, namespace:
    multi_agent_v1``, which Codex routes to its agent tool (an unknown agent id is that
    tool's own error, where a name Codex does not know would be ``unsupported call``)."""
    call = {"name": "multi_agent_v1.close_agent", "arguments": {"target": "nobody"}}
    steer = steer_for("qwen3", call=call, answer=lambda output: "Closed.")
    with recording_proxy(server.base_url, steer=steer) as proxy:
        config = documented_config(proxy.base_url, "qwen3")
        out, events, _, _ = run_codex(
            codex, tmp_path, 0, proxy.base_url, "qwen3", config, HOSHIKAGE_API_KEY=KEY
        )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    proxy.assert_all_ok()
    first, second = proxy.requests("/v1/responses")
    (sent,) = [i for i in second["input"] if i.get("type") == "function_call"]
    assert (sent["name"], sent["namespace"]) == ("close_agent", "multi_agent_v1")
    (result,) = [i for i in second["input"] if i.get("type") == "function_call_output"]
    output = json.dumps(result["output"])
    assert "unsupported call" not in output and "nobody" in output, output
    messages = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages[-1:] == ["Closed."], messages


PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+written by the model\n*** End Patch\n"


def test_codex_applies_a_patch_through_its_custom_tool(codex, server, tmp_path):
    """Served under a name Codex knows (``gpt-5.5``), Codex sends that model's tools: its
    freeform ``apply_patch``, a custom tool with a Lark grammar (offered as free text), and
    ``tool_search`` (left out), with ``text.verbosity`` and ``reasoning.effort``. The model
    calls apply_patch; the call reaches Codex as a ``custom_tool_call`` whose ``input`` is the
    patch; Codex applies it in its workspace-write sandbox and sends the
    ``custom_tool_call_output`` back, which the answer uses."""
    steer = steer_for(
        "qwen3",
        call={"name": "apply_patch", "arguments": {"input": PATCH}},
        answer=lambda output: "Created hello.txt." if "hello.txt" in output else "It failed.",
    )
    with recording_proxy(server.base_url, steer=steer) as proxy:
        config = documented_config(proxy.base_url, KNOWN_ALIAS)
        out, events, _, _ = run_codex(
            codex,
            tmp_path,
            0,
            proxy.base_url,
            KNOWN_ALIAS,
            config,
            sandbox="workspace-write",
            HOSHIKAGE_API_KEY=KEY,
        )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    proxy.assert_all_ok()
    first, second = proxy.requests("/v1/responses")
    tools = {tool["type"]: tool for tool in first["tools"]}
    assert tools["custom"]["name"] == "apply_patch"
    assert tools["custom"]["format"]["syntax"] == "lark" and "tool_search" in tools
    assert first["text"]["verbosity"] and first["reasoning"]["effort"]
    (sent,) = [i for i in second["input"] if i.get("type") == "custom_tool_call"]
    assert (sent["name"], sent["input"]) == ("apply_patch", PATCH)
    (result,) = [i for i in second["input"] if i.get("type") == "custom_tool_call_output"]
    assert result["call_id"] == sent["call_id"]
    assert (tmp_path / "work" / "hello.txt").read_text() == "written by the model\n"
    messages = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages[-1:] == ["Created hello.txt."], messages
