"""End to end: the official ``ollama`` Python client against a real ``hoshikage serve``
process on 127.0.0.1 (Ollama's native API under ``/api/``), with the real llama.cpp backend
and the tiny generated model. Raw HTTP checks the NDJSON framing and the error bodies.

One server is shared by the module (an API key is set, so every client sends it as a
Bearer token); tests leave it idle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")

from tests.support.server import running_server, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(120)

KEY = "ollama-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
USER = [{"role": "user", "content": "hello world"}]
GREEDY = {"temperature": 0}
#: A tool, and a ``format`` schema shaped like a call of it. Ollama has no ``tool_choice``;
#: with ``tools`` given, an answer that is a call's JSON is read back as a tool call, so
#: this format makes the tiny random model call the tool.
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a number up.",
        "parameters": {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    },
}
CALL_FORMAT = {
    "type": "object",
    "properties": {"name": {"const": "lookup"}, "arguments": LOOKUP["function"]["parameters"]},
    "required": ["name", "arguments"],
}
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "server": {"api_key": KEY, "max_body_size": "1MB", "concurrency": 1, "max_queue": 1},
        "unload": {"max_loaded": 2},
        "pull": {"registry": "http://127.0.0.1:9"},  # nothing listens: no pull leaves here
        "models": [
            {
                "name": "tiny",
                "path": str(tiny_model_path),
                "aliases": ["tiny-alias"],
                "n_ctx": 2048,
            },
            {"name": "embed", "path": str(tiny_model_path), "n_ctx": 512, "embedding": True},
        ],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return ollama.Client(host=server.base_url, headers=AUTH, timeout=60)


def post(server, path: str, body, headers=AUTH) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        server.base_url + path,
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=60,
    )


def get(server, path: str) -> httpx.Response:
    return httpx.get(server.base_url + path, headers=AUTH, timeout=30)


def ndjson(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


def assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


def assert_final(part, *, model: str, reason: str, eval_count: int | None = None) -> None:
    assert part.done is True and part.done_reason == reason and part.model == model
    assert part.prompt_eval_count > 0 and part.eval_count >= 1
    if eval_count is not None:
        assert part.eval_count == eval_count
    for name in DURATIONS:
        assert isinstance(part[name], int) and part[name] >= 0, name
    assert part.total_duration >= part.load_duration + part.prompt_eval_duration
    assert part.total_duration >= part.eval_duration > 0


def loaded(server) -> set[str]:
    return {m["name"] for m in get(server, "/api/ps").json()["models"]}


def wait_unloaded(server, name: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while f"{name}:latest" in loaded(server):
        assert time.monotonic() < deadline, f"{name} is still loaded"
        time.sleep(0.05)


def expires_in(server, name: str) -> float:
    (model,) = [m for m in get(server, "/api/ps").json()["models"] if m["name"] == f"{name}:latest"]
    return (
        datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00")) - datetime.now(UTC)
    ).total_seconds()


# ---- chat and generate --------------------------------------------------------------------


def test_chat_whole_and_streamed_agree(client):
    whole = client.chat(
        model="tiny", messages=USER, options={**GREEDY, "num_predict": 6}, stream=False
    )
    assert whole.message.role == "assistant" and whole.message.content
    assert_final(whole, model="tiny", reason="length", eval_count=6)
    parts = list(
        client.chat(model="tiny", messages=USER, options={**GREEDY, "num_predict": 6}, stream=True)
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].message.content == "" and parts[-1].message.role == "assistant"
    assert_final(parts[-1], model="tiny", reason="length", eval_count=6)
    assert parts[-1].prompt_eval_count == whole.prompt_eval_count
    assert datetime.fromisoformat(parts[0].created_at.replace("Z", "+00:00")).tzinfo is not None


def test_stream_is_ndjson_and_a_conversation_continues(server):
    body = {
        "model": "tiny",
        "options": {**GREEDY, "num_predict": 4},
        "messages": [
            {"role": "system", "content": "be brief"},
            *USER,
            {"role": "assistant", "content": "yes", "thinking": "hm"},
            {"role": "user", "content": "the cat"},
        ],
    }
    lines = ndjson(post(server, "/api/chat", body))
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "length"
    assert set(lines[0]) == {"model", "created_at", "message", "done"}
    assert lines[0]["message"]["role"] == "assistant" and lines[0]["done"] is False


def test_curl_as_ollamas_documentation_writes_it(server, client):
    """Every example in Ollama's API documentation is ``curl URL -d '{...}'``, which sends
    the JSON as ``application/x-www-form-urlencoded``: the real ``curl`` gets the same answer
    as the official client, streamed by default and whole with ``"stream": false``."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("this test runs the real curl: `apt-get install curl`", pytrace=False)

    def run(path: str, body: dict) -> str:
        done = subprocess.run(
            [curl, "-sS", "-H", f"Authorization: Bearer {KEY}", server.base_url + path]
            + ["-d", json.dumps(body)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    options = {**GREEDY, "num_predict": 5}
    whole = client.generate(model="tiny", prompt="Why is the sky blue?", options=options)
    lines = [
        json.loads(line)
        for line in run(
            "/api/generate", {"model": "tiny", "prompt": "Why is the sky blue?", "options": options}
        ).splitlines()
    ]
    assert len(lines) > 1 and lines[-1]["done"] is True and lines[-1]["eval_count"] == 5
    assert "".join(line["response"] for line in lines) == whole.response
    body = {"model": "tiny", "messages": USER, "stream": False, "options": options}
    answer = json.loads(run("/api/chat", body))
    assert answer["done"] is True and answer["message"]["content"] == (
        client.chat(model="tiny", messages=USER, options=options).message.content
    )
    assert json.loads(run("/api/show", {"model": "tiny"}))["details"]["format"] == "gguf"


def test_generate_streamed_whole_and_raw(client):
    whole = client.generate(
        model="tiny",
        prompt="the cat",
        system="be brief",
        options={**GREEDY, "num_predict": 5},
        stream=False,
    )
    assert_final(whole, model="tiny", reason="length", eval_count=5)
    parts = list(
        client.generate(
            model="tiny",
            prompt="the cat",
            system="be brief",
            options={**GREEDY, "num_predict": 5},
            stream=True,
        )
    )
    assert "".join(p.response for p in parts) == whole.response and parts[-1].done
    # The prompt's and the answer's ids, streamed or not.
    assert parts[-1].context == whole.context and len(whole.context) == 5 + whole.prompt_eval_count
    # raw: the prompt as it is, without the chat template: fewer prompt tokens.
    raw = client.generate(
        model="tiny", prompt="the cat", raw=True, options={**GREEDY, "num_predict": 5}, stream=False
    )
    assert_final(raw, model="tiny", reason="length", eval_count=5)
    assert raw.prompt_eval_count < whole.prompt_eval_count
    assert raw.context is None  # as in Ollama: a raw answer gives no context


def test_generate_context_carries_the_conversation(client, server):
    """Ollama's conversational memory of /api/generate (its clients' "keep context" examples):
    the ``context`` an answer returns, sent back, is read before the next prompt."""
    options = {**GREEDY, "num_predict": 4}
    first = client.generate(model="tiny", prompt="the cat", context=[], options=options)
    assert len(first.context) == first.prompt_eval_count + first.eval_count
    alone = client.generate(model="tiny", prompt="sat on", options=options)
    bos = post(server, "/tokenize", {"model": "tiny", "content": "", "add_special": True})
    skip = len(bos.json()["tokens"])  # the new prompt's BOS is not read again
    second = client.generate(model="tiny", prompt="sat on", context=first.context, options=options)
    assert second.prompt_eval_count == len(first.context) + alone.prompt_eval_count - skip
    prompt = first.context + alone.context[skip : alone.prompt_eval_count]
    assert second.context[: second.prompt_eval_count] == prompt
    # Streamed, and carried on again: the memory grows turn by turn.
    parts = list(
        client.generate(
            model="tiny", prompt="the mat", context=second.context, options=options, stream=True
        )
    )
    assert parts[-1].context[: len(second.context)] == second.context
    # raw continues a context too.
    raw = client.generate(
        model="tiny", prompt=" and", raw=True, context=first.context, options=options
    )
    plain = client.generate(model="tiny", prompt=" and", raw=True, options=options)
    assert raw.prompt_eval_count == len(first.context) + plain.prompt_eval_count - skip
    import base64

    from tests.support.projectors import png_bytes

    image = base64.b64encode(png_bytes()).decode()
    for body, what in (
        ({"prompt": "x", "context": [10**9]}, "vocabulary"),
        ({"prompt": "x", "context": [1], "suffix": "y"}, "context"),
        ({"prompt": "x", "context": [1], "images": [image]}, "context"),
    ):
        r = post(server, "/api/generate", {"model": "tiny", "stream": False, **body})
        assert r.status_code == 400 and what in r.json()["error"], r.text


def test_options_map_to_sampling(client):
    def text(**options):
        return client.generate(
            model="tiny", prompt="hello", options={"num_predict": 8, **options}, stream=False
        ).response

    assert text(temperature=0) == text(temperature=0)
    assert text(temperature=1.5, seed=7) == text(temperature=1.5, seed=7)
    assert len({text(temperature=1.5, seed=s) for s in range(5)}) > 1
    # Ollama's load-time options and unknown keys are accepted and ignored; whole floats count as integers.
    same = text(
        temperature=0, num_ctx=99999, num_gpu=1, mirostat=0, no_such_option="x", num_predict=8.0
    )
    assert same == text(temperature=0)
    short = client.generate(
        model="tiny", prompt="hello", options={**GREEDY, "num_predict": 3}, stream=False
    )
    assert short.done_reason == "length" and short.eval_count == 3
    # A stop string from the greedy answer ends it there, with done_reason stop.
    full = text(temperature=0, num_predict=30)
    start = next(
        i
        for i in range(2, len(full) - 2)
        if full[i : i + 2].isascii() and full[i : i + 2].isalpha()
    )
    stopped = client.generate(
        model="tiny",
        prompt="hello",
        options={**GREEDY, "num_predict": 30, "stop": [full[start : start + 2]]},
        stream=False,
    )
    assert (
        stopped.response == full[: full.index(full[start : start + 2])]
        and stopped.done_reason == "stop"
    )


def test_format_json_schema_is_enforced(client):
    schema = {
        "type": "object",
        "properties": {"pick": {"enum": ["red", "blue", "green"]}},
        "required": ["pick"],
    }
    for seed in range(3):
        reply = client.chat(
            model="tiny",
            messages=USER,
            format=schema,
            options={"temperature": 1.0, "seed": seed, "num_predict": 60},
            stream=False,
        )
        assert reply.done_reason == "stop", reply
        assert json.loads(reply.message.content)["pick"] in ("red", "blue", "green")
    reply = client.generate(
        model="tiny", prompt="pick", format={"enum": ["yes", "no"]}, options=GREEDY, stream=False
    )
    assert json.loads(reply.response) in ("yes", "no")


def test_logprobs(server):
    body = {
        "model": "tiny",
        "prompt": "hi",
        "stream": False,
        "logprobs": True,
        "top_logprobs": 2,
        "options": {**GREEDY, "num_predict": 3},
    }
    reply = post(server, "/api/generate", body).json()
    assert len(reply["logprobs"]) == 3
    first = reply["logprobs"][0]
    assert (
        first["logprob"] <= 0
        and len(first["top_logprobs"]) == 2
        and isinstance(first["bytes"], list)
    )


def test_tool_call_round_trip(client):
    first = client.chat(
        model="tiny",
        messages=USER,
        tools=[LOOKUP],
        format=CALL_FORMAT,
        options=GREEDY,
        stream=False,
    )
    assert first.done_reason == "stop"
    (call,) = first.message.tool_calls
    assert call.function.name == "lookup"
    assert isinstance(call.function.arguments, dict) and isinstance(
        call.function.arguments["n"], int
    )
    streamed = list(
        client.chat(
            model="tiny",
            messages=USER,
            tools=[LOOKUP],
            format=CALL_FORMAT,
            options=GREEDY,
            stream=True,
        )
    )
    calls = [c for p in streamed for c in (p.message.tool_calls or ())]
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("lookup", call.function.arguments)
    ]
    history = [
        *USER,
        first.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_name": "lookup", "content": "forty two"},
    ]
    reply = client.chat(
        model="tiny",
        messages=history,
        tools=[LOOKUP],
        options={**GREEDY, "num_predict": 4},
        stream=False,
    )
    assert reply.done is True and reply.prompt_eval_count > first.prompt_eval_count


# ---- keep_alive, load and unload ----------------------------------------------------------


def test_keep_alive_zero_unloads_after_the_request(client, server):
    client.generate(model="tiny", prompt="", keep_alive="5m")
    assert "tiny:latest" in loaded(server)
    reply = client.chat(
        model="tiny",
        messages=USER,
        options={**GREEDY, "num_predict": 2},
        keep_alive=0,
        stream=False,
    )
    assert reply.done and reply.eval_count == 2
    wait_unloaded(server, "tiny")
    states = {m["name"]: m["state"] for m in get(server, "/api/status").json()["models"]}
    assert states["tiny"] == "unloaded"


def test_empty_prompt_loads_and_keep_alive_zero_unloads(client, server):
    client.generate(model="tiny", prompt="", keep_alive=0)
    assert "tiny:latest" not in loaded(server)
    load = client.generate(model="tiny:latest", prompt="", keep_alive=-1)
    assert (
        load.done is True
        and load.done_reason == "load"
        and load.model == "tiny:latest"
        and load.response == ""
    )
    assert "tiny:latest" in loaded(server)
    assert expires_in(server, "tiny") > 100 * 365 * 86400  # never: far in the future
    unload = client.generate(model="tiny", prompt="", keep_alive=0)
    assert unload.done_reason == "unload"
    assert "tiny:latest" not in loaded(server)  # unloaded before the answer
    # Unloading a model that is not loaded does not load it.
    assert client.chat(model="tiny", messages=[], keep_alive=0).done_reason == "unload"
    assert "tiny:latest" not in loaded(server)
    chat_load = client.chat(model="tiny-alias", messages=[])
    assert (
        chat_load.done_reason == "load"
        and chat_load.message.content == ""
        and chat_load.message.role == "assistant"
    )
    assert "tiny:latest" in loaded(server)


def test_keep_alive_durations_set_expires_at(client, server):
    for keep_alive, seconds in (("10m", 600), ("1h30m", 5400), (90, 90), ("2m30s", 150)):
        client.generate(
            model="tiny", prompt="hello", keep_alive=keep_alive, options={"num_predict": 1}
        )
        assert seconds - 30 < expires_in(server, "tiny") <= seconds, keep_alive
    client.generate(model="tiny", prompt="", keep_alive="-1m")  # any negative: never
    assert expires_in(server, "tiny") > 100 * 365 * 86400
    bad = post(server, "/api/generate", {"model": "tiny", "prompt": "", "keep_alive": "soon"})
    assert "keep_alive" in assert_error(bad, 400)


# ---- models -------------------------------------------------------------------------------


def test_tags_list_every_name_as_latest(client, tiny_model_path):
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"tiny:latest", "tiny-alias:latest", "embed:latest"}
    tiny = listed["tiny:latest"]
    assert tiny.size == tiny_model_path.stat().st_size
    assert len(tiny.digest) == 64 and tiny.digest == listed["tiny-alias:latest"].digest
    assert tiny.modified_at.tzinfo is not None
    assert (
        tiny.details.format == "gguf"
        and tiny.details.family == "llama"
        and tiny.details.families == ["llama"]
    )
    assert tiny.details.quantization_level == "F32" and tiny.details.parameter_size.endswith("K")
    # The same digest on every listing: it is stable.
    assert client.list().models[0].digest == client.list().models[0].digest


def test_show(client):
    shown = client.show("tiny:latest")
    assert shown.details.family == "llama" and shown.details.format == "gguf"
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["general.parameter_count"] > 0
    assert "message['role']" in shown.template
    assert shown.capabilities == ["completion"]
    assert "num_ctx" in shown.parameters and "2048" in shown.parameters
    assert shown.modified_at is not None and shown.modelfile.startswith("#")
    assert client.show("embed").capabilities == ["embedding"]


def test_ps_reports_memory_and_context(client, server):
    client.generate(model="tiny", prompt="", keep_alive="5m")
    models = {m.model: m for m in client.ps().models}
    tiny = models["tiny:latest"]
    assert tiny.name == "tiny:latest" and tiny.size > 0 and 0 <= tiny.size_vram <= tiny.size
    if not pytest.importorskip("llama_cpp").llama_supports_gpu_offload():
        assert tiny.size_vram == 0  # a CPU build
    assert tiny.context_length == 2048 and tiny.details.family == "llama"
    status = {m["name"]: m for m in get(server, "/api/status").json()["models"]}
    assert tiny.size == status["tiny"]["memory_bytes"]
    assert 240 < (tiny.expires_at - datetime.now(UTC)).total_seconds() <= 300


#: The least Ollama version each known client accepts from ``/api/version``, with where it
#: comes from. Add a client's when it checks; raise OLLAMA_VERSION when one is above it.
CLIENT_MINIMUMS = {
    # codex-rs/ollama: min_responses_version(), "Ollama {v} is too old. Codex requires
    # Ollama 0.13.4 or newer." (the --oss mode; tests/clients/test_codex.py runs it).
    "@openai/codex 0.171.0": "0.13.4",
    # ollama-python's and ollama-js's clients do not check it.
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


@pytest.mark.parametrize("client", list(CLIENT_MINIMUMS))
def test_version_satisfies_every_known_client(server, client):
    version = get(server, "/api/version").json()["version"]
    assert _version(version) >= _version(CLIENT_MINIMUMS[client]), (
        f"/api/version is {version}, below {client}'s minimum {CLIENT_MINIMUMS[client]}: raise "
        "OLLAMA_VERSION (hoshikage_api/ollama/routes.py)"
    )


def test_embed_and_embeddings(client):
    result = client.embed(model="embed:latest", input=["the cat", "the mat"])
    assert result.model == "embed:latest" and len(result.embeddings) == 2
    assert abs(sum(x * x for x in result.embeddings[0]) - 1) < 1e-3  # L2-normalised
    assert result.prompt_eval_count > 0 and result.total_duration >= result.load_duration >= 0
    one = client.embed(model="embed", input="the cat")
    assert one.embeddings[0] == pytest.approx(result.embeddings[0], abs=1e-6)
    old = client.embeddings(model="embed", prompt="the cat")
    assert old.embedding == pytest.approx(result.embeddings[0], abs=1e-6)
    assert client.embed(model="embed", input=[]).embeddings == []  # loads only
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="embed", input="x", dimensions=8)
    assert info.value.status_code == 400 and "dimensions" in info.value.error


# ---- errors -------------------------------------------------------------------------------


def test_names_and_unknown_models(client):
    assert (
        client.chat(
            model="tiny-alias:latest", messages=USER, options={"num_predict": 1}, stream=False
        ).model
        == "tiny-alias:latest"
    )
    for name in ("nope", "nope:latest", "tiny:7b", "tiny:"):
        for call in (
            lambda name=name: client.chat(model=name, messages=USER, stream=False),
            lambda name=name: list(client.chat(model=name, messages=USER, stream=True)),
            lambda name=name: client.generate(model=name, prompt="x", stream=False),
            lambda name=name: client.show(name),
            lambda name=name: client.embed(model=name, input="x"),
        ):
            with pytest.raises(ollama.ResponseError) as info:
                call()
            assert info.value.status_code == 404
            assert f'model "{name}" not found, try pulling it first' in info.value.error


def test_auth_is_required(server, tiny_model_path):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        anonymous = ollama.Client(host=server.base_url, headers=headers)
        with pytest.raises(ollama.ResponseError) as info:
            anonymous.list()
        assert info.value.status_code == 401 and "API key" in info.value.error
        with pytest.raises(ollama.ResponseError) as info:
            list(anonymous.chat(model="tiny", messages=USER, stream=True))
        assert info.value.status_code == 401
    assert httpx.get(server.base_url + "/api/version", timeout=10).status_code == 401
    assert get(server, "/api/version").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/api/chat",
            {"model": "tiny", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
            "images",
        ),
        ("/api/generate", {"model": "tiny", "prompt": "x", "images": ["aGk="]}, "images"),
        (
            "/api/chat",
            {"model": "tiny", "messages": USER, "think": "extreme"},
            "Invalid 'think'",
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "suffix": "y"},
            "does not support insert",
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "template": "{{ .Prompt }}"},
            "template",
        ),
        ("/api/generate", {"model": "tiny", "prompt": "x", "context": [-1]}, "context"),
        ("/api/chat", {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, "role"),
        (
            "/api/chat",
            {"model": "tiny", "messages": USER, "options": {"temperature": "hot"}},
            "options.temperature",
        ),
        (
            "/api/chat",
            {"model": "tiny", "messages": USER, "options": {"num_predict": -5}},
            "options.num_predict",
        ),
        (
            "/api/chat",
            {"model": "tiny", "messages": USER, "options": {"stop": [""]}},
            "options.stop",
        ),
        ("/api/chat", {"model": "tiny", "messages": USER, "format": "yaml"}, "format"),
        (
            "/api/chat",
            {
                "model": "tiny",
                "messages": USER,
                "tools": [{"type": "web", "function": {"name": "f"}}],
            },
            "tools[0].type",
        ),
        ("/api/chat", {"model": "tiny", "messages": "hi"}, "messages"),
        ("/api/chat", {"messages": USER}, "model"),
        ("/api/generate", b"{", "not valid JSON"),
        ("/api/generate", b"", "empty"),
        ("/api/show", {}, "model"),
        ("/api/embed", {"model": "embed", "input": ["a", ""]}, "input[1]"),
    ],
)
def test_bad_requests_are_400_in_ollamas_shape(server, path, body, words):
    assert words in assert_error(post(server, path, body), 400)


def test_over_long_prompt_is_400_before_the_stream(server):
    r = post(
        server,
        "/api/chat",
        {"model": "tiny", "messages": [{"role": "user", "content": "the cat sat " * 2000}]},
    )
    assert "context" in assert_error(r, 400)


def test_pull_of_a_served_model_streams_ollamas_progress(server, client):
    """Codex's ``--oss`` mode and Open WebUI pull before use: a model served here answers
    Ollama's progress at once, by name, ``name:latest`` and alias."""
    for name in ("tiny", "tiny:latest", "tiny-alias"):
        steps = list(client.pull(name, stream=True))
        statuses = [step.status for step in steps]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success", statuses
        assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
        layer = next(step for step in steps if step.status.startswith("pulling ") and step.digest)
        assert (
            layer.digest.startswith("sha256:") and layer.status == "pulling " + layer.digest[7:19]
        )
        assert layer.total == layer.completed and layer.total > 0
    assert client.pull("tiny").status == "success"
    r = post(server, "/api/pull", {"model": "tiny", "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    r = post(server, "/api/pull", {"name": "tiny-alias"})
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert lines[-1] == {"status": "success"} and len(lines) == 5


def test_pull_errors_are_in_ollamas_shape(server, client):
    """A name not served here is pulled (tests/api/test_pull.py); here the registry is a
    closed port, so the pull fails with a clear error, and a bad reference is a 400."""
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("no-such-model:7b")
    assert info.value.status_code == 502 and "Could not reach the registry" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        list(client.pull("no-such-model:7b", stream=True))
    assert "Could not reach the registry" in info.value.error
    assert "required" in assert_error(post(server, "/api/pull", {}), 400)
    assert assert_error(post(server, "/api/pull", {"model": 7}), 400)
    assert "not a valid name" in assert_error(post(server, "/api/pull", {"model": "a b"}), 400)


def test_push_is_refused_clearly_and_create_says_what_it_needs(server):
    r = httpx.request(
        "POST", server.base_url + "/api/push", json={"model": "tiny"}, headers=AUTH, timeout=10
    )
    assert "registered in its config" in assert_error(r, 501)
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=server.base_url, headers=AUTH).push("tiny")
    assert info.value.status_code == 501
    # Create and blobs are served (tests/api/test_ollama_create.py); a bad request is
    # Ollama's 400.
    r = httpx.post(server.base_url + "/api/create", json={"model": "x"}, headers=AUTH)
    assert "'from'" in assert_error(r, 400)
    r = httpx.post(server.base_url + "/api/blobs/sha256:abc", content=b"x", headers=AUTH)
    assert "not a digest" in assert_error(r, 400)


def test_urls_under_api_that_match_nothing_answer_in_ollamas_shape(server):
    assert_error(get(server, "/api/nothing-here"), 404)
    assert_error(get(server, "/api/chat"), 405)  # a method that is no route
    # Hoshikage's own admin routes under /api keep the OpenAI shape.
    r = post(server, "/api/models/no-such/load", {})
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_metrics_count_ollama_requests_and_errors(server):
    from tests.api.test_server_routes import parse_prometheus

    post(
        server,
        "/api/chat",
        {"model": "tiny", "stream": False, "messages": USER, "options": {"num_predict": 1}},
    )
    post(server, "/api/chat", {"model": "nope", "messages": USER})
    samples = parse_prometheus(get(server, "/metrics").text)
    assert samples['hoshikage_requests_total{endpoint="ollama_chat",model="tiny",status="ok"}'] >= 1
    assert (
        samples['hoshikage_http_errors_total{code="model_not_found",path="/api/chat",status="404"}']
        >= 1
    )


# ---- overload and disconnects -------------------------------------------------------------


@contextmanager
def long_generation(server):
    """A streamed generation that runs for seconds (EOS banned), its first line read."""
    body = {
        "model": "tiny",
        "messages": USER,
        "stream": True,
        "max_tokens": 8000,
        "temperature": 0,
        "logit_bias": {"2": -100},
    }
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", server.base_url + "/v1/chat/completions", headers=AUTH, json=body
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a collected line iterator closes the response
        assert next(lines).startswith("data: ")
        yield response


def test_full_queue_is_503_with_retry_after(server, client):
    short = {"model": "tiny", "stream": False, "messages": USER, "options": {"num_predict": 2}}
    with long_generation(server) as running, ThreadPoolExecutor(1) as pool:
        queued = pool.submit(post, server, "/api/chat", short)
        wait_for(
            lambda: get(server, "/api/status").json()["queued"] == 1,
            10,
            what="the second request to queue",
        )
        r = post(server, "/api/chat", {**short, "stream": True})
        assert "busy" in assert_error(r, 503)
        assert int(r.headers["retry-after"]) >= 1
        with pytest.raises(ollama.ResponseError) as info:
            client.generate(model="tiny", prompt="x")
        assert info.value.status_code == 503
        running.close()
        assert queued.result(timeout=60).status_code == 200
    wait_for(
        lambda: get(server, "/api/status").json()["running"] == 0, 10, what="the server to go idle"
    )


def test_stream_disconnect_frees_the_slot(server):
    body = {"model": "tiny", "messages": USER, "options": {"num_predict": 8000, "temperature": 0}}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", server.base_url + "/api/chat", headers=AUTH, json=body) as response,
    ):
        lines = response.iter_lines()
        assert json.loads(next(lines))["done"] is False
        response.close()
    wait_for(
        lambda: get(server, "/api/status").json()["running"] == 0,
        10,
        what="the cancelled stream to free its slot",
    )
    assert (
        'hoshikage_requests_total{endpoint="ollama_chat",model="tiny",status="cancelled"}'
        in get(server, "/metrics").text
    )


def test_a_broken_model_file_is_500_and_still_listed(tmp_path, tiny_model_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip, not a GGUF file")
    config = {
        "models": [
            {"name": "bad", "path": str(bad)},
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256},
        ]
    }
    with running_server(config) as srv:
        client = ollama.Client(host=srv.base_url)
        for call in (
            lambda: client.chat(model="bad", messages=USER),
            lambda: list(client.generate(model="bad:latest", prompt="x", stream=True)),
            lambda: client.generate(model="bad", prompt=""),
        ):
            with pytest.raises(ollama.ResponseError) as info:
                call()
            assert info.value.status_code == 500 and "failed to load" in info.value.error
        listed = {m.model: m for m in client.list().models}
        assert (
            listed["bad:latest"].size == bad.stat().st_size
            and listed["bad:latest"].details.family == ""
        )
        assert client.show("bad").modelinfo == {} and client.show("bad").capabilities == [
            "completion"
        ]
        assert (
            client.generate(model="tiny", prompt="hi", options={"num_predict": 2}).eval_count == 2
        )  # others still serve


def test_still_idle_afterwards(server):
    status = get(server, "/api/status").json()
    assert (status["running"], status["queued"]) == (0, 0)


# ---- the error mapping and the stream, without a server ------------------------------------


def test_error_mapping_keeps_the_status_and_has_ollamas_body():
    from hoshikage_api.ollama.errors import to_ollama
    from hoshikage_core.errors import (
        Cancelled,
        ContextLengthExceeded,
        ModelLoadError,
        ModelNotFound,
        QueueFull,
    )

    cases = {
        QueueFull(4, retry_after=2): 503,
        Cancelled("shutting down"): 503,
        ModelLoadError("tiny", "truncated"): 500,
        ContextLengthExceeded(3000, 2048): 400,
        ModelNotFound("x", ["tiny"]): 404,
        RuntimeError("bug"): 500,
    }
    for exc, status_code in cases.items():
        error, body = to_ollama(exc)
        assert error.status == status_code and set(body) == {"error"} and body["error"], exc
    assert to_ollama(QueueFull(4, retry_after=2))[0].headers["Retry-After"] == "2"
    assert to_ollama(ModelNotFound("x", ["tiny"]))[1]["error"].startswith(
        'model "x" not found, try pulling it first'
    )
    assert "see the server log" in to_ollama(RuntimeError("secret"))[1]["error"]


def test_tool_calls_arrive_in_a_line_of_their_own_with_object_arguments():
    from hoshikage_api.ollama.format import ChatFormat, GenerateFormat
    from hoshikage_core.protocol import Chunk

    calls = (
        {"id": "call_abc", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {
            "id": "call_def",
            "type": "function",
            "function": {"name": "b", "arguments": '"{\\"y\\": 2}"'},
        },
    )
    fmt = ChatFormat("m")
    lines = [
        json.loads(item)
        for chunk in (
            Chunk(text="Let me look."),
            Chunk(
                text=" ok",
                finish_reason="tool_calls",
                tool_calls=calls,
                prompt_tokens=9,
                completion_tokens=20,
            ),
        )
        for item in fmt.items(0, chunk).splitlines()
    ]
    assert [line["message"]["content"] for line in lines] == ["Let me look.", " ok", "", ""]
    assert lines[2]["message"]["tool_calls"] == [
        {"id": "call_abc", "function": {"index": 0, "name": "a", "arguments": {"x": 1}}},
        {"id": "call_def", "function": {"index": 1, "name": "b", "arguments": {"y": 2}}},
    ]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert lines[-1]["done_reason"] == "stop" and (
        lines[-1]["prompt_eval_count"],
        lines[-1]["eval_count"],
    ) == (9, 20)
    (only,) = [
        json.loads(item)
        for item in GenerateFormat("m")
        .items(0, Chunk(finish_reason="length", prompt_tokens=3, completion_tokens=0))
        .splitlines()
    ]
    assert only["done_reason"] == "length" and only["response"] == ""


def test_keep_alive_parsing():
    from hoshikage_api.kernel.errors import ApiError
    from hoshikage_api.ollama.translate import keep_alive

    cases = {
        None: None,
        0: 0.0,
        90: 90.0,
        -1: -1.0,
        -5: -1.0,
        "0": 0.0,
        "10m": 600.0,
        "1h30m": 5400.0,
        "2m30s": 150.0,
        "300ms": 0.3,
        "-1": -1.0,
        "-1m": -1.0,
        "45": 45.0,
        "never": -1.0,
        1e300: -1.0,
    }
    for value, seconds in cases.items():
        assert (
            keep_alive(value) == pytest.approx(seconds)
            if seconds is not None
            else keep_alive(value) is None
        ), value
    for bad in ("soon", "10 minutes", "1d2x", ""):
        with pytest.raises(ApiError):
            keep_alive(bad)


# ---- Gemma --------------------------------------------------------------------------------


@pytest.mark.gemma
@pytest.mark.timeout(300)
def test_gemma_chat_show_and_ps(gemma_model_path):
    config = {"models": [{"name": "gemma-3-270m", "path": str(gemma_model_path), "n_ctx": 1024}]}
    with running_server(config) as server:
        client = ollama.Client(host=server.base_url, timeout=120)
        shown = client.show("gemma-3-270m:latest")
        assert shown.details.family == "gemma3" and shown.details.quantization_level == "Q4_K_M"
        assert (
            shown.details.parameter_size.endswith("M")
            and 200 < float(shown.details.parameter_size[:-1]) < 300
        )
        assert shown.modelinfo["gemma3.context_length"] > 0
        options = {"temperature": 0, "seed": 1, "num_predict": 24}
        messages = [{"role": "user", "content": "Name three colours."}]
        whole = client.chat(
            model="gemma-3-270m:latest", messages=messages, options=options, stream=False
        )
        assert whole.message.content.strip() and whole.done_reason in ("stop", "length")
        parts = list(
            client.chat(model="gemma-3-270m", messages=messages, options=options, stream=True)
        )
        assert "".join(p.message.content for p in parts) == whole.message.content
        assert (
            parts[-1].eval_count == whole.eval_count
            and parts[-1].load_duration < whole.load_duration + 10**9
        )
        assert whole.load_duration > 0
        (running,) = client.ps().models
        assert running.model == "gemma-3-270m:latest" and running.size > 100_000_000
        schema = {
            "type": "object",
            "properties": {"colour": {"enum": ["red", "green", "blue"]}},
            "required": ["colour"],
        }
        picked = client.chat(
            model="gemma-3-270m",
            messages=messages,
            format=schema,
            options={"temperature": 0},
            stream=False,
        )
        assert json.loads(picked.message.content)["colour"] in ("red", "green", "blue")
        assert (
            client.generate(model="gemma-3-270m", prompt="", keep_alive=0).done_reason == "unload"
        )
        assert client.ps().models == []
