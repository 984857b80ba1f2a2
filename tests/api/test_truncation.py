"""A chat over the context, truncated instead of refused, end to end: the Responses API's
``truncation: "auto"`` through the official ``openai`` client, and Ollama's ``/api/chat``
(which truncates unless ``truncate`` is false, as Ollama does) through the official
``ollama`` client, against a real server with the Qwen3 fixture (the real Qwen3 template).

The oracle is the server itself, untruncated: the same conversation with only its newest
turns, sent as it is, is the prompt a truncated request must have (the same number of
prompt tokens), and it must be the longest such that leaves room for the answer.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")

from tests.api.helpers import assert_openai_error  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

N_CTX = 512
ANSWER = 4  # tokens of each answer: the room a truncated prompt leaves is this
SYSTEM = "You answer questions about the lighthouse keeper's log, briefly."


def turn(i: int) -> list[dict]:
    return [
        {"role": "user", "content": f"Question {i}: what did the keeper write on day {i}?"},
        {"role": "assistant", "content": f"On day {i} the keeper wrote that the lamp was lit."},
    ]


TURNS = [turn(i) for i in range(1, 16)]
LAST = {"role": "user", "content": "And on the last day?"}


def chat(k: int) -> list[dict]:
    """The system message, the newest ``k`` turns, the last question."""
    return [
        {"role": "system", "content": SYSTEM},
        *[m for t in TURNS[len(TURNS) - k :] for m in t],
        LAST,
    ]


@pytest.fixture(scope="module")
def server(family_model):
    path = family_model("qwen35", "Qwen-Qwen3-0.6B")
    config = {"models": [{"name": "qwen3", "path": str(path), "n_ctx": N_CTX, "parallel": 1}]}
    with running_server(config, startup_timeout=60) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def expected(count) -> int:
    """The prompt tokens of the longest :func:`chat` that leaves room for the answer, each
    counted by ``count(k)`` (None: over the context)."""
    for k in range(len(TURNS), -1, -1):
        tokens = count(k)
        if tokens is not None and tokens <= N_CTX - ANSWER:
            assert k < len(TURNS), "the whole chat fits: nothing to truncate"
            return tokens
    raise AssertionError("not even the last question fits")


def test_responses_truncation_auto_keeps_the_newest_turns(client):
    def count(k: int) -> int | None:
        try:
            r = client.responses.create(model="qwen3", input=chat(k), max_output_tokens=ANSWER)
        except openai.BadRequestError:
            return None
        return r.usage.input_tokens

    want = expected(count)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="qwen3", input=chat(len(TURNS)), max_output_tokens=ANSWER)
    assert refused.value.body["code"] == "context_length_exceeded"
    r = client.responses.create(
        model="qwen3", input=chat(len(TURNS)), max_output_tokens=ANSWER, truncation="auto"
    )
    assert r.truncation == "auto" and r.status in ("completed", "incomplete")
    assert r.usage.input_tokens == want
    # Streamed, the same (it ends incomplete: at max_output_tokens).
    events = list(
        client.responses.create(
            model="qwen3",
            input=chat(len(TURNS)),
            max_output_tokens=ANSWER,
            truncation="auto",
            stream=True,
        )
    )
    assert events[-1].response.usage.input_tokens == want
    # A prompt that fits is never touched.
    small = client.responses.create(
        model="qwen3", input=chat(2), max_output_tokens=ANSWER, truncation="auto"
    )
    assert small.usage.input_tokens == count(2)
    # When the last question alone does not fit, it is still the 400.
    with pytest.raises(openai.BadRequestError) as still:
        client.responses.create(
            model="qwen3",
            input=[*chat(len(TURNS))[:-1], {"role": "user", "content": "why " * 600}],
            truncation="auto",
        )
    assert still.value.body["code"] == "context_length_exceeded"


def test_an_agents_task_stays_and_its_oldest_steps_go(client):
    """One task and many tool calls: the task and the newest calls with their results."""
    tool = {
        "type": "function",
        "name": "read_log",
        "description": "Read a day of the log.",
        "parameters": {"type": "object", "properties": {"day": {"type": "integer"}}},
    }

    def items(k: int) -> list[dict]:
        steps = []
        for day in range(1, 13):
            steps.append(
                [
                    {
                        "type": "function_call",
                        "call_id": f"call_{day}",
                        "name": "read_log",
                        "arguments": json.dumps({"day": day}),
                    },
                    {
                        "type": "function_call_output",
                        "call_id": f"call_{day}",
                        "output": f"Day {day}: the lamp was lit at dusk, the sea was calm.",
                    },
                ]
            )
        return [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Read the whole log and tell me what changed."},
            *[item for step in steps[len(steps) - k :] for item in step],
        ]

    def count(k: int) -> int | None:
        try:
            r = client.responses.create(
                model="qwen3", input=items(k), tools=[tool], max_output_tokens=ANSWER
            )
        except openai.BadRequestError:
            return None
        return r.usage.input_tokens

    want = next(t for k in range(12, 0, -1) if (t := count(k)) and t <= N_CTX - ANSWER)
    assert count(12) is None
    r = client.responses.create(
        model="qwen3",
        input=items(12),
        tools=[tool],
        max_output_tokens=ANSWER,
        truncation="auto",
    )
    assert r.usage.input_tokens == want


def test_ollama_chat_truncates_as_ollama_does(server):
    client = ollama.Client(host=server.base_url)

    def post(messages, **fields):
        body = {"model": "qwen3", "messages": messages, "stream": False, **fields}
        body["options"] = {"num_predict": ANSWER}
        return httpx.post(server.base_url + "/api/chat", json=body, timeout=60)

    def count(k: int) -> int | None:
        r = post(chat(k), truncate=False)
        return r.json()["prompt_eval_count"] if r.status_code == 200 else None

    want = expected(count)
    r = client.chat(model="qwen3", messages=chat(len(TURNS)), options={"num_predict": ANSWER})
    assert r.prompt_eval_count == want
    streamed = list(
        client.chat(
            model="qwen3", messages=chat(len(TURNS)), options={"num_predict": ANSWER}, stream=True
        )
    )
    assert streamed[-1].done and streamed[-1].prompt_eval_count == want
    refused = post(chat(len(TURNS)), truncate=False)
    assert refused.status_code == 400 and "context" in refused.json()["error"]


def test_openai_chat_truncates_only_when_asked(server, client):
    """Chat completions keep the 400 (agents compact their own history on it); the
    ``truncate`` extension, which the web page and ``hoshikage chat`` send, truncates."""

    def count(k: int) -> int | None:
        try:
            r = client.chat.completions.create(model="qwen3", messages=chat(k), max_tokens=ANSWER)
        except openai.BadRequestError:
            return None
        return r.usage.prompt_tokens

    want = expected(count)
    r = httpx.post(
        server.base_url + "/v1/chat/completions",
        json={"model": "qwen3", "messages": chat(len(TURNS)), "max_tokens": ANSWER},
        timeout=60,
    )
    assert_openai_error(r, 400, code="context_length_exceeded")
    r = client.chat.completions.create(
        model="qwen3", messages=chat(len(TURNS)), max_tokens=ANSWER, extra_body={"truncate": True}
    )
    assert r.usage.prompt_tokens == want
