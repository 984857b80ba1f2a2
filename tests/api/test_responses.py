"""End to end: the official ``openai`` client's ``client.responses`` against a real
``hoshikage serve`` process on 127.0.0.1 (``/v1/responses`` and the stored-response routes),
with the real llama.cpp backend and the tiny generated model (Gemma where marked). Raw HTTP
checks the exact event stream and the error bodies.

One server is shared by the module (an API key is set); tests leave it idle. Store eviction
gets a server of its own with a small ``responses_store``.
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from tests.api.helpers import assert_openai_error  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(120)

KEY = "test-key"
#: A tool whose forced call the tiny model completes at once: ``{"n": <int>}``.
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "description": "Look a number up.",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    },
}
#: A schema the tiny random model can only answer one of two ways, then stops (grammar).
COLOUR = {
    "type": "json_schema",
    "name": "colour",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {
        "server": {"api_key": KEY, "max_body_size": "1MB", "concurrency": 1, "max_queue": 4},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "aliases": ["tiny-alias"], "n_ctx": 4096}
        ],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def http(server, method: str, path: str, body=None, headers=None) -> httpx.Response:
    content = None if body is None else body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {
        "authorization": f"Bearer {KEY}",
        "content-type": "application/json",
        **(headers or {}),
    }
    return httpx.request(
        method, server.base_url + path, content=content, headers=headers, timeout=60
    )


def sse_events(text: str) -> list[dict]:
    """The ``data`` of each event of a Responses stream; every ``type`` matches its event name."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"], block
        events.append(data)
    return events


# ---- create -------------------------------------------------------------------------------


def test_create_from_a_string(client):
    r = client.responses.create(
        model="tiny",
        input="hello world",
        max_output_tokens=6,
        temperature=0,
        metadata={"k": "v"},
        user="someone",
    )
    assert r.id.startswith("resp_") and r.object == "response" and r.model == "tiny"
    assert r.created_at > time.time() - 600
    (message,) = r.output
    assert (
        message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    )
    (part,) = message.content
    assert part.type == "output_text" and part.annotations == []
    assert r.output_text == part.text and part.text
    usage = r.usage
    assert usage.input_tokens > 0 and usage.output_tokens == 6
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert (
        usage.input_tokens_details.cached_tokens >= 0
        and usage.output_tokens_details.reasoning_tokens == 0
    )
    # Echoed settings, as OpenAI echoes them.
    assert (r.temperature, r.metadata, r.store, r.max_output_tokens) == (0.0, {"k": "v"}, True, 6)
    assert (r.instructions, r.previous_response_id, r.tools, r.tool_choice) == (
        None,
        None,
        [],
        "auto",
    )
    assert r.parallel_tool_calls is True and r.text.format.type == "text" and r.error is None


def test_create_from_items_and_instructions(client):
    """Message items in every form map onto chat messages: ``instructions`` is a system
    message exactly as a leading developer (or system) message is."""
    items = [
        {"role": "user", "content": "hello"},  # an "easy" message: no type
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "yes", "annotations": []}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "the"},
                {"type": "input_text", "text": "cat"},
            ],
        },
    ]
    plain = client.responses.create(model="tiny", input=items, max_output_tokens=2, temperature=0)
    told = client.responses.create(
        model="tiny", input=items, instructions="Be terse.", max_output_tokens=2, temperature=0
    )
    assert told.instructions == "Be terse."
    assert told.usage.input_tokens > plain.usage.input_tokens
    for role in ("developer", "system"):
        as_item = client.responses.create(
            model="tiny",
            input=[{"role": role, "content": "Be terse."}, *items],
            max_output_tokens=2,
            temperature=0,
        )
        assert as_item.usage.input_tokens == told.usage.input_tokens, role
    # The same conversation as one text is a different (shorter) prompt.
    assert (
        client.responses.create(model="tiny", input="hello", max_output_tokens=2).usage.input_tokens
        < plain.usage.input_tokens
    )


def test_incomplete_at_max_output_tokens(client, server):
    r = client.responses.create(
        model="tiny", input="hello world", max_output_tokens=5, temperature=0
    )
    # Greedy on the tiny model runs on past 5 tokens for this prompt.
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.usage.output_tokens == 5
    events = sse_events(
        http(
            server,
            "POST",
            "/v1/responses",
            {
                "model": "tiny",
                "input": "hello world",
                "max_output_tokens": 5,
                "temperature": 0,
                "stream": True,
            },
        ).text
    )
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert final["output"][0]["content"][0]["text"] == r.output_text


def test_json_schema_text_format_is_enforced(client):
    r = client.responses.create(
        model="tiny", input="pick a colour", text={"format": COLOUR}, max_output_tokens=60
    )
    assert r.status == "completed", r
    assert json.loads(r.output_text)["colour"] in ("red", "blue")
    assert r.text.format.type == "json_schema" and r.text.format.name == "colour"
    # The SDK's parse() with a Pydantic model sends the model's schema as json_schema.
    from typing import Literal

    from pydantic import BaseModel

    class Colour(BaseModel):
        colour: Literal["red", "blue"]

    parsed = client.responses.parse(
        model="tiny", input="pick a colour", text_format=Colour, max_output_tokens=60
    )
    assert parsed.output_parsed.colour in ("red", "blue")
    # json_object: any JSON (its strings may hold anything on the random model, so only the start is checked).
    r = client.responses.create(
        model="tiny",
        input="hi",
        text={"format": {"type": "json_object"}},
        max_output_tokens=40,
        temperature=0,
    )
    assert r.output_text.lstrip().startswith(("{", "[")) and r.text.format.type == "json_object"


def test_the_path_without_v1_and_an_alias(server):
    r = http(
        server, "POST", "/responses", {"model": "tiny-alias", "input": "hi", "max_output_tokens": 2}
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny-alias"
    assert http(server, "GET", "/responses/" + r.json()["id"]).json()["id"] == r.json()["id"]


def test_logprobs_on_request(client):
    r = client.responses.create(
        model="tiny", input="hello", max_output_tokens=3, temperature=0, top_logprobs=2
    )
    logprobs = r.output[0].content[0].logprobs
    assert len(logprobs) == 3 and all(len(lp.top_logprobs) == 2 for lp in logprobs)
    assert "".join(lp.token for lp in logprobs) == r.output_text
    r = client.responses.create(
        model="tiny", input="hello", max_output_tokens=3, include=["message.output_text.logprobs"]
    )
    assert len(r.output[0].content[0].logprobs) == 3
    assert (
        client.responses.create(model="tiny", input="hello", max_output_tokens=3)
        .output[0]
        .content[0]
        .logprobs
        == []
    )


# ---- streaming ----------------------------------------------------------------------------


def test_stream_events_in_order(server):
    body = {
        "model": "tiny",
        "input": "pick a colour",
        "text": {"format": COLOUR},
        "max_output_tokens": 60,
        "stream": True,
    }
    r = http(server, "POST", "/v1/responses", body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    created, final = events[0]["response"], events[-1]["response"]
    assert (
        created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    )
    assert final["id"] == created["id"] and final["status"] == "completed"
    item_id = events[2]["item"]["id"]
    assert events[2]["item"] == {
        "type": "message",
        "id": item_id,
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert all(
        (d["item_id"], d["output_index"], d["content_index"], d["logprobs"]) == (item_id, 0, 0, [])
        for d in deltas
    )
    text = "".join(d["delta"] for d in deltas)
    assert events[-4]["text"] == text == final["output"][0]["content"][0]["text"]
    assert events[-2]["item"]["status"] == "completed" and final["output"] == [events[-2]["item"]]
    # Stored like a whole response.
    assert http(server, "GET", "/v1/responses/" + final["id"]).json() == final


def test_sdk_stream_text_equals_the_deltas(client):
    with client.responses.stream(
        model="tiny",
        input="pick a colour",
        text={"format": COLOUR},
        max_output_tokens=60,
        stream_options={"include_obfuscation": False},
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas and final.output_text == "".join(deltas)
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.usage.output_tokens >= len(deltas) and final.status == "completed"
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_stream_disconnect_frees_the_slot(server):
    body = {
        "model": "tiny",
        "input": "hello world",
        "max_output_tokens": 100000,
        "stream": True,
        "temperature": 0,
    }
    headers = {"authorization": f"Bearer {KEY}"}
    with (
        httpx.Client(timeout=30) as c,
        c.stream("POST", server.base_url + "/v1/responses", headers=headers, json=body) as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "event: response.created"
        response.close()
    deadline = time.monotonic() + 10
    while (
        json.loads(server.get("/api/status", headers=headers)[1])["running"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert json.loads(server.get("/api/status", headers=headers)[1])["running"] == 0
    metrics = server.get("/metrics", headers=headers)[1].decode()
    assert (
        'hoshikage_requests_total{endpoint="responses",model="tiny",status="cancelled"}' in metrics
    )


def test_shutdown_during_a_stream_is_response_failed(tiny_model_path):
    """SIGTERM cancels a running stream after ``shutdown_grace``: it ends with one
    ``response.failed`` event, and the server exits."""
    import threading

    config = {
        "server": {"shutdown_grace": 0.3},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 8192}],
    }
    body = {
        "model": "tiny",
        "input": "hello world",
        "max_output_tokens": 8000,
        "temperature": 0,
        "stream": True,
    }
    with running_server(config) as srv:
        with (
            httpx.Client(timeout=30) as c,
            c.stream("POST", srv.base_url + "/v1/responses", json=body) as response,
        ):
            lines = response.iter_lines()
            assert next(lines) == "event: response.created"
            received: list[str] = []
            reader = threading.Thread(target=lambda: received.extend(lines), daemon=True)
            reader.start()
            srv.terminate()
            reader.join(5)
            assert not reader.is_alive()
        events = sse_events("\n".join(["event: response.created", *received]))
        assert events[-1]["type"] == "response.failed", events[-1]
        failed = events[-1]["response"]
        assert failed["status"] == "failed" and "shutting down" in failed["error"]["message"]
        assert failed["output"][0]["status"] == "incomplete"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))


# ---- stored responses ---------------------------------------------------------------------


def test_retrieve_then_delete_then_404(client, server):
    r = client.responses.create(model="tiny", input="hello", max_output_tokens=3, temperature=0)
    again = client.responses.retrieve(r.id)
    assert again.model_dump() == r.model_dump()
    deleted = http(server, "DELETE", "/v1/responses/" + r.id)
    assert deleted.status_code == 200 and deleted.json() == {
        "id": r.id,
        "object": "response",
        "deleted": True,
    }
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    error = assert_openai_error(http(server, "GET", "/v1/responses/" + r.id), 404)
    assert r.id in error["message"]
    assert_openai_error(http(server, "DELETE", "/v1/responses/" + r.id), 404)
    # The SDK's delete returns nothing.
    other = client.responses.create(model="tiny", input="hello", max_output_tokens=1)
    assert client.responses.delete(other.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(other.id)


def test_unknown_previous_response_id_is_404(client, server):
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.create(model="tiny", input="x", previous_response_id="resp_nope")
    assert exc.value.body["param"] == "previous_response_id"
    error = assert_openai_error(
        http(
            server,
            "POST",
            "/v1/responses",
            {"model": "tiny", "input": "x", "previous_response_id": "resp_nope"},
        ),
        404,
        param="previous_response_id",
        code="previous_response_not_found",
    )
    assert "resp_nope" in error["message"]
    # Streamed, it is a JSON error too.
    r = http(
        server,
        "POST",
        "/v1/responses",
        {"model": "tiny", "input": "x", "previous_response_id": "resp_nope", "stream": True},
    )
    assert r.headers["content-type"].startswith("application/json") and r.status_code == 404


def test_store_false_is_not_kept(client, server):
    r = client.responses.create(model="tiny", input="hello", max_output_tokens=2, store=False)
    assert r.store is False
    assert_openai_error(http(server, "GET", "/v1/responses/" + r.id), 404)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny", input="x", previous_response_id=r.id)
    with client.responses.stream(
        model="tiny", input="pick", text={"format": COLOUR}, max_output_tokens=60, store=False
    ) as stream:
        final = stream.get_final_response()
    assert_openai_error(http(server, "GET", "/v1/responses/" + final.id), 404)


def test_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(
        model="tiny", input="hello world", max_output_tokens=8, temperature=0
    )
    second = client.responses.create(
        model="tiny",
        input="the cat",
        previous_response_id=first.id,
        max_output_tokens=4,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    # The first turn's prompt sits in a slot's cache: the second reads only what is new.
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    # Exactly the stored input and output items, then the new input.
    stateless = client.responses.create(
        model="tiny",
        max_output_tokens=4,
        temperature=0,
        input=[
            {"role": "user", "content": "hello world"},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "the cat"},
        ],
    )
    assert second.usage.input_tokens == stateless.usage.input_tokens
    # It grew by the first answer (give or take the answer re-tokenised).
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 3
    # Transitively: a third turn sees both earlier ones.
    third = client.responses.create(
        model="tiny", input="red", previous_response_id=second.id, max_output_tokens=2
    )
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens - 5
    # Instructions are not carried over (OpenAI's rule): a continuation without them has
    # the prompt of the same items without them.
    told = client.responses.create(
        model="tiny",
        input="hello world",
        instructions="Be terse.",
        max_output_tokens=8,
        temperature=0,
    )
    untold = client.responses.create(
        model="tiny", input="the cat", previous_response_id=told.id, max_output_tokens=2
    )
    assert untold.instructions is None
    assert (
        untold.usage.input_tokens
        == client.responses.create(
            model="tiny",
            max_output_tokens=2,
            input=[
                {"role": "user", "content": "hello world"},
                {"role": "assistant", "content": told.output_text},
                {"role": "user", "content": "the cat"},
            ],
        ).usage.input_tokens
    )
    # Its input items are the whole context, newest first by default.
    items = client.responses.input_items.list(third.id)
    roles = [(item.type, getattr(item, "role", None)) for item in items.data]
    assert roles == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert (
        items.data[0].content[0].text == "red" and items.data[-1].content[0].text == "hello world"
    )
    assert (
        items.data[1].content[0].text == second.output_text
        and items.data[1].id == second.output[0].id
    )
    assert (
        items.first_id == items.data[0].id
        and items.last_id == items.data[-1].id
        and not items.has_more
    )
    page = client.responses.input_items.list(third.id, order="asc", limit=2)
    assert [item.id for item in page.data] == [item.id for item in reversed(items.data)][
        :2
    ] and page.has_more
    rest = client.responses.input_items.list(third.id, order="asc", after=page.last_id)
    assert [item.id for item in rest.data] == [item.id for item in reversed(items.data)][2:]


def test_store_evicts_the_least_recently_used(tiny_model_path):
    config = {
        "server": {"responses_store": 2},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 512}],
    }
    with running_server(config) as srv:
        sdk = openai.OpenAI(
            base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=60
        )

        def create():
            return sdk.responses.create(model="tiny", input="hi", max_output_tokens=1).id

        def kept(response_id):
            return srv.get("/v1/responses/" + response_id)[0] == 200

        a, b = create(), create()
        assert kept(b) and kept(a)  # a was used last: b is now the least recently used
        c = create()
        assert (kept(a), kept(b), kept(c)) == (True, False, True)
        with pytest.raises(openai.NotFoundError):
            sdk.responses.create(model="tiny", input="x", previous_response_id=b)
        # Continuing counts as a use.
        sdk.responses.create(model="tiny", input="x", previous_response_id=c, max_output_tokens=1)
        assert not kept(a) and kept(c)


# ---- tools --------------------------------------------------------------------------------


def test_function_call_round_trip(client):
    first = client.responses.create(
        model="tiny",
        input="hello world",
        tools=[LOOKUP],
        tool_choice={"type": "function", "name": "lookup"},
        max_output_tokens=100,
        temperature=0,
    )
    assert first.status == "completed", first
    (call,) = first.output
    assert call.type == "function_call" and call.name == "lookup" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id
    assert isinstance(json.loads(call.arguments)["n"], int)
    assert (
        first.tool_choice.name == "lookup"
        and first.tools[0].name == "lookup"
        and first.tools[0].strict is True
    )
    second = client.responses.create(
        model="tiny",
        previous_response_id=first.id,
        tools=[LOOKUP],
        max_output_tokens=3,
        temperature=0,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "forty two"}],
    )
    assert second.status in ("completed", "incomplete")
    # The call and its result reached the prompt: the same, sent without the store.
    stateless = client.responses.create(
        model="tiny",
        tools=[LOOKUP],
        max_output_tokens=3,
        temperature=0,
        input=[
            {"role": "user", "content": "hello world"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": "lookup",
                "arguments": call.arguments,
            },
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": [{"type": "input_text", "text": "forty two"}],
            },
        ],
    )
    assert second.usage.input_tokens == stateless.usage.input_tokens > first.usage.input_tokens
    # OpenAI's documented stateless pattern: the output objects themselves appended to the input.
    appended = client.responses.create(
        model="tiny",
        tools=[LOOKUP],
        max_output_tokens=3,
        temperature=0,
        store=False,
        input=[
            {"role": "user", "content": "hello world"},
            *first.output,
            {"type": "function_call_output", "call_id": call.call_id, "output": "forty two"},
        ],
    )
    assert appended.usage.input_tokens == second.usage.input_tokens
    kinds = [item.type for item in client.responses.input_items.list(second.id, order="asc").data]
    assert kinds == ["message", "function_call", "function_call_output"]


def test_streamed_function_call(client, server):
    body = {
        "model": "tiny",
        "input": "hello world",
        "tools": [LOOKUP],
        "tool_choice": "required",
        "max_output_tokens": 100,
        "temperature": 0,
        "stream": True,
    }
    events = sse_events(http(server, "POST", "/v1/responses", body).text)
    kinds = [e["type"] for e in events]
    n = kinds.count("response.function_call_arguments.delta")
    assert n > 1  # the arguments stream as they are generated
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * n,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, deltas, done, item_done = events[2], events[3 : 3 + n], events[3 + n], events[4 + n]
    assert (
        added["item"]["type"] == "function_call"
        and added["item"]["arguments"] == ""
        and added["output_index"] == 0
    )
    assert {d["item_id"] for d in deltas} == {done["item_id"]} == {added["item"]["id"]}
    assert isinstance(json.loads(done["arguments"])["n"], int)
    assert "".join(d["delta"] for d in deltas) == done["arguments"]
    assert (
        item_done["item"] == events[-1]["response"]["output"][0]
        and item_done["item"]["status"] == "completed"
    )
    del body["stream"]
    with client.responses.stream(**body) as stream:
        final = stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and call.parsed_arguments == json.loads(call.arguments)


def test_tool_choice_none_leaves_the_tools_out(client):
    with_tools = client.responses.create(
        model="tiny", input="hi", tools=[LOOKUP], tool_choice="none", max_output_tokens=2
    )
    plain = client.responses.create(model="tiny", input="hi", max_output_tokens=2)
    assert with_tools.usage.input_tokens == plain.usage.input_tokens
    assert [item.type for item in with_tools.output] == ["message"]


HOSTED = [
    {"type": "web_search", "external_web_access": False},
    {"type": "web_search_preview"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {
        "type": "computer_use_preview",
        "display_width": 1024,
        "display_height": 768,
        "environment": "linux",
    },
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "mcp", "server_label": "docs", "server_url": "http://x"},
    {"type": "image_generation"},
    {"type": "local_shell"},
    {"type": "apply_patch"},
]


@pytest.mark.parametrize("tool", HOSTED, ids=lambda tool: tool["type"])
def test_tools_that_cannot_run_here_are_not_offered_and_are_listed(client, tool):
    """Codex sends web_search with its own tools: the request is answered, the model is
    offered only the function (the prompt is the same as without it), and the response
    lists the one left out (``ignored_tools``) so the client can tell."""
    r = client.responses.create(
        model="tiny", input="hi", tools=[LOOKUP, tool], max_output_tokens=2, temperature=0
    )
    alone = client.responses.create(
        model="tiny", input="hi", tools=[LOOKUP], max_output_tokens=2, temperature=0
    )
    assert r.usage.input_tokens == alone.usage.input_tokens
    expected = {"index": 1, "type": tool["type"]}
    if tool["type"] == "mcp":
        expected["name"] = "docs"
    assert r.model_extra["ignored_tools"] == [expected]
    assert alone.model_extra["ignored_tools"] == []
    assert [t.type for t in r.tools] == ["function", tool["type"]]


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "web_search_preview"},
        {"type": "file_search"},
        {"type": "image_generation"},
        {"type": "code_interpreter"},
        {"type": "computer_use_preview"},
        {"type": "mcp", "server_label": "docs"},
    ],
    ids=lambda choice: choice["type"],
)
def test_a_tool_choice_naming_a_hosted_tool_is_a_400(server, choice):
    body = {**HI, "tools": [LOOKUP, {"type": "web_search"}], "tool_choice": choice}
    error = assert_openai_error(
        http(server, "POST", "/v1/responses", body), 400, param="tool_choice.type"
    )
    assert repr(choice["type"]) in error["message"] and "cannot run here" in error["message"]


#: A namespace (Codex's multi_agent_v1 shape) holding LOOKUP.
CRM = {
    "type": "namespace",
    "name": "crm",
    "description": "Customer records.",
    "tools": [{k: v for k, v in LOOKUP.items() if k != "strict"}],
}


def test_a_namespace_tool_is_called_by_its_name_and_namespace(client, server):
    """The model is offered ``crm.lookup``; the call comes back as ``name: lookup,
    namespace: crm`` (what Codex routes on), and sent back it renders as ``crm.lookup``."""
    first = client.responses.create(
        model="tiny",
        input="hello world",
        tools=[CRM, {"type": "web_search"}],
        tool_choice="required",
        max_output_tokens=100,
        temperature=0,
    )
    (call,) = first.output
    assert (call.type, call.name, call.namespace) == ("function_call", "lookup", "crm")
    assert isinstance(json.loads(call.arguments)["n"], int)

    def tokens(call_item) -> int:
        items = [
            {"role": "user", "content": "hello world"},
            call_item,
            {"type": "function_call_output", "call_id": call.call_id, "output": "42"},
        ]
        return client.responses.create(
            model="tiny", input=items, tools=[CRM], max_output_tokens=1
        ).usage.input_tokens

    sent_back = call.model_dump(exclude_none=True)
    flattened = {**sent_back, "name": "crm.lookup"}
    del flattened["namespace"]
    bare = {**flattened, "name": "lookup"}
    assert tokens(sent_back) == tokens(flattened) > tokens(bare)
    # Streamed: the item carries the namespace from its first event on.
    body = {
        "model": "tiny",
        "input": "hello world",
        "tools": [CRM],
        "tool_choice": {"type": "function", "name": "lookup", "namespace": "crm"},
        "max_output_tokens": 100,
        "temperature": 0,
        "stream": True,
    }
    events = sse_events(http(server, "POST", "/v1/responses", body).text)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert (added["item"]["name"], added["item"]["namespace"]) == ("lookup", "crm")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "lookup"


@pytest.mark.parametrize(
    "fmt, pattern",
    [
        (
            {"type": "grammar", "syntax": "regex", "definition": "[0-9]{3}-[a-z]{2}"},
            r"[0-9]{3}-[a-z]{2}",
        ),
        ({"type": "text"}, None),
        (None, None),
    ],
    ids=["regex", "text", "no-format"],
)
def test_a_custom_tool_call_is_free_text(client, server, fmt, pattern):
    """A custom tool is offered as a function of one string; its call is a
    ``custom_tool_call`` whose ``input`` is that string (a regex grammar constrains it)."""
    import re

    tool = {"type": "custom", "name": "code", "description": "Runs code."}
    if fmt is not None:
        tool["format"] = fmt
    body = {
        "model": "tiny",
        "input": "hello world",
        "tools": [tool],
        "tool_choice": {"type": "custom", "name": "code"},
        "max_output_tokens": 60,
        "temperature": 0,
    }
    r = client.responses.create(**body)
    (call,) = r.output
    assert call.type == "custom_tool_call" and call.name == "code" and call.call_id
    assert isinstance(call.input, str)
    if pattern is not None:
        assert re.fullmatch(pattern, call.input), call.input
    events = sse_events(http(server, "POST", "/v1/responses", {**body, "stream": True}).text)
    kinds = [e["type"] for e in events]
    # (Free text on random weights may run to max_output_tokens: incomplete.)
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed" if pattern else kinds[-1],
    ]
    assert events[3]["delta"] == events[4]["input"] == events[5]["item"]["input"]
    # The call and its output sent back are accepted (and stored ones continue).
    after = client.responses.create(
        model="tiny",
        previous_response_id=r.id,
        tools=[tool],
        input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "ok"}],
        max_output_tokens=1,
    )
    stateless = client.responses.create(
        model="tiny",
        tools=[tool],
        input=[
            {"role": "user", "content": "hello world"},
            call.model_dump(exclude_none=True),
            {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "ok"},
        ],
        max_output_tokens=1,
    )
    assert after.usage.input_tokens == stateless.usage.input_tokens


def test_a_lark_custom_tool_is_accepted_unconstrained(client):
    """No Lark engine here: the tool is offered as free text, the same prompt as ``text``."""

    def tokens(fmt) -> int:
        tool = {"type": "custom", "name": "patch", "format": fmt}
        r = client.responses.create(
            model="tiny", input="hi", tools=[tool], max_output_tokens=1, temperature=0
        )
        return r.usage.input_tokens

    lark = {"type": "grammar", "syntax": "lark", "definition": 'start: "x"+'}
    assert tokens(lark) == tokens({"type": "text"})


# ---- bad input ----------------------------------------------------------------------------

HI = {"model": "tiny", "input": "hi"}


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "tiny"}, None),
        ({"input": "hi"}, None),
        ({"model": "tiny", "input": 5}, "input"),
        ({"model": "tiny", "input": []}, "input"),
        ({"model": "tiny", "input": [{"type": "web_search_call", "id": "x"}]}, "input[0].type"),
        ({"model": "tiny", "input": [{"type": "item_reference"}]}, "input[0].id"),
        ({"model": "tiny", "input": [{"content": "no role"}]}, "input[0].type"),
        ({"model": "tiny", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "tiny", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
        (
            {
                "model": "tiny",
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "http://x/y.png"}],
                    }
                ],
            },
            "input[0].content[0].image_url",
        ),
        (
            {
                "model": "tiny",
                "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
            },
            "input[0].content[0].file_data",
        ),
        (
            {"model": "tiny", "input": [{"role": "user", "content": [{"type": "video"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"model": "tiny", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0]",
        ),
        (
            {"model": "tiny", "input": [{"type": "function_call_output", "call_id": "c"}]},
            "input[0]",
        ),
        ({**HI, "temperature": 3}, "temperature"),
        ({**HI, "top_p": "1"}, "top_p"),
        ({**HI, "max_output_tokens": 0}, "max_output_tokens"),
        ({**HI, "tool_choice": "required"}, "tool_choice"),
        (
            {**HI, "tools": [LOOKUP], "tool_choice": {"type": "function", "name": "other"}},
            "tool_choice.name",
        ),
        ({**HI, "tools": [LOOKUP], "tool_choice": {"type": "file_search"}}, "tool_choice.type"),
        ({**HI, "tools": [{"type": "function"}]}, "tools[0].name"),
        ({**HI, "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
        ({**HI, "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({**HI, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({**HI, "background": True, "store": False}, "background"),
        ({**HI, "conversation": "conv_1", "previous_response_id": "resp_1"}, "conversation"),
        ({**HI, "conversation": ""}, "conversation"),
        ({**HI, "conversation": {"name": "conv_1"}}, "conversation"),
        ({**HI, "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({**HI, "truncation": "most"}, "truncation"),
        ({**HI, "stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({**HI, "keep_alive": "soon"}, "keep_alive"),
        ({**HI, "client_metadata": "x"}, "client_metadata"),
        ({**HI, "moderation": 5}, "moderation"),
        ({**HI, "tools": [{"type": "namespace", "name": "ns", "tools": []}]}, "tools[0].tools"),
        (
            {**HI, "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "mcp"}]}]},
            "tools[0].tools[0].type",
        ),
        ({**HI, "tools": [{"type": "function", "name": "a.b"}]}, "tools[0].name"),
        ({**HI, "tools": [LOOKUP, LOOKUP]}, "tools[1].name"),
        (
            {**HI, "tools": [{"type": "custom", "name": "c", "format": {"type": "yaml"}}]},
            "tools[0].format.type",
        ),
        (
            {
                **HI,
                "tools": [
                    {
                        "type": "custom",
                        "name": "c",
                        "format": {"type": "grammar", "syntax": "peg", "definition": "x"},
                    }
                ],
            },
            "tools[0].format.syntax",
        ),
        (
            {**HI, "tools": [LOOKUP], "tool_choice": {"type": "custom", "name": "lookup"}},
            "tool_choice.name",
        ),
        (
            {**HI, "input": [{"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}]},
            "input[0].encrypted_content",
        ),
        (
            {**HI, "input": [{"type": "custom_tool_call", "call_id": "c", "name": "x"}]},
            "input[0]",
        ),
    ],
)
def test_bad_body_is_a_clear_400(server, body, param):
    error = assert_openai_error(http(server, "POST", "/v1/responses", body), 400)
    if param is not None:
        assert error["param"] == param, error


def test_fields_the_sdk_sends_are_accepted(client):
    r = client.responses.create(
        model="tiny",
        input="hi",
        max_output_tokens=2,
        reasoning={"effort": "low", "summary": "auto"},
        truncation="disabled",
        include=["reasoning.encrypted_content"],
        parallel_tool_calls=False,
        service_tier="auto",
        safety_identifier="u1",
        prompt_cache_key="k",
        text={"verbosity": "low"},
        max_tool_calls=3,
        extra_body={
            "keep_alive": "1m",
            "seed": 3,
            "top_k": 5,
            "client_metadata": {"x-codex-turn-metadata": "{}", "session_id": "s"},
            "background_options": {"completion_window": "soonest"},
            "prompt_cache_options": {"mode": "implicit", "prewarm": False},
            "moderation": {"model": "omni-moderation-latest"},
            "image": {"context_compression": "auto"},
        },
    )
    assert r.status in ("completed", "incomplete") and r.parallel_tool_calls is False
    assert r.reasoning.effort == "low" and r.text.verbosity == "low" and r.max_tool_calls == 3
    # A reasoning item sent back (as agents do) with no text changes nothing.
    items = [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": "hi"}]
    assert client.responses.create(
        model="tiny", input=items, max_output_tokens=2
    ).usage.input_tokens == (
        client.responses.create(model="tiny", input="hi", max_output_tokens=2).usage.input_tokens
    )


def test_keep_alive_and_metrics(client, server):
    """The keep_alive extension reaches the unload policy, and responses are counted."""
    client.responses.create(
        model="tiny", input="hi", max_output_tokens=2, extra_body={"keep_alive": 0}
    )
    deadline = time.monotonic() + 5
    while (
        client.models.retrieve("tiny").model_extra["state"] != "unloaded"
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert client.models.retrieve("tiny").model_extra["state"] == "unloaded"
    client.responses.create(
        model="tiny", input="hi", max_output_tokens=2, extra_body={"keep_alive": "5m"}
    )
    assert client.models.retrieve("tiny").model_extra["state"] == "loaded"
    http(server, "POST", "/v1/responses", {"model": "nope", "input": "hi"})
    metrics = server.get("/metrics", headers={"authorization": f"Bearer {KEY}"})[1].decode()
    assert 'hoshikage_requests_total{endpoint="responses",model="tiny",status="ok"}' in metrics
    assert 'code="model_not_found",path="/v1/responses",status="404"' in metrics


def test_responses_store_config_is_validated():
    from hoshikage_core import config as config_mod

    assert config_mod.structure({"server": {"responses_store": 0}}).server.responses_store == 0
    assert config_mod.structure({}).server.responses_store == 256
    with pytest.raises(Exception, match="responses_store"):
        config_mod.structure({"server": {"responses_store": -1}})


def test_bad_requests_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="tiny", input="hi", temperature=5)
    assert exc.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.create(model="no-such-model", input="hi")
    assert exc.value.body["code"] == "model_not_found"


def test_a_schema_without_a_grammar_names_text_format(server):
    body = {
        "model": "tiny",
        "input": "hi",
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}},
    }
    assert_openai_error(http(server, "POST", "/v1/responses", body), 400, param="text.format")


def test_context_overflow_names_input(server):
    body = {"model": "tiny", "input": "the cat sat " * 3000, "max_output_tokens": 2}
    assert_openai_error(
        http(server, "POST", "/v1/responses", body),
        400,
        param="input",
        code="context_length_exceeded",
    )
    r = http(server, "POST", "/v1/responses", {**body, "stream": True})
    assert r.headers["content-type"].startswith("application/json")


def test_input_items_errors(server, client):
    r = client.responses.create(model="tiny", input="hi", max_output_tokens=1)
    assert_openai_error(
        http(server, "GET", f"/v1/responses/{r.id}/input_items?after=msg_nope"), 400, param="after"
    )
    assert_openai_error(http(server, "GET", f"/v1/responses/{r.id}/input_items?limit=0"), 400)
    assert_openai_error(http(server, "GET", "/v1/responses/resp_nope/input_items"), 404)
    assert_openai_error(
        http(server, "GET", f"/v1/responses/{r.id}?stream=true"), 400, param="stream"
    )


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/resp_x"),
        ("DELETE", "/v1/responses/resp_x"),
        ("GET", "/v1/responses/resp_x/input_items"),
        ("POST", "/responses"),
    ],
)
def test_every_route_needs_the_key(server, method, path):
    for headers in ({"authorization": ""}, {"authorization": "Bearer wrong"}):
        r = http(server, method, path, HI if method == "POST" else None, headers=headers)
        assert_openai_error(r, 401, type="authentication_error")


# ---- the stream, without a server ----------------------------------------------------------


def builder(**fields):
    from hoshikage_api.responses.format import ResponseBuilder
    from hoshikage_api.responses.schemas import CreateResponse

    return ResponseBuilder(CreateResponse(model="m", input="x", **fields), logprobs=False)


def test_text_then_tool_calls_are_separate_output_items():
    from hoshikage_core.protocol import Chunk

    calls = (
        {"id": "call_a", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "b", "arguments": {"y": 2}}},
    )
    for parallel, expected in (
        (None, ["message", "function_call", "function_call"]),
        (False, ["message", "function_call"]),
    ):
        b = builder(parallel_tool_calls=parallel)
        events = sse_events(
            b"".join(
                [
                    b.items(0, Chunk(text="Let me look.")),
                    b.items(
                        0,
                        Chunk(
                            finish_reason="tool_calls",
                            tool_calls=calls,
                            prompt_tokens=9,
                            completion_tokens=20,
                        ),
                    ),
                ]
            ).decode()
        )
        final = events[-1]["response"]
        assert [item["type"] for item in final["output"]] == expected
        assert [
            e["output_index"] for e in events if e["type"] == "response.output_item.added"
        ] == list(range(len(expected)))
        assert (
            final["output"][1]["call_id"] == "call_a"
            and final["output"][1]["arguments"] == '{"x": 1}'
        )
        assert final["usage"]["input_tokens"] == 9 and final["usage"]["total_tokens"] == 29
        if parallel is None:
            assert json.loads(final["output"][2]["arguments"]) == {"y": 2}


def test_nothing_generated_is_one_empty_message():
    from hoshikage_core.protocol import Chunk

    b = builder()
    events = sse_events(
        b"".join(
            b.events(Chunk(finish_reason="stop", prompt_tokens=3, completion_tokens=0))
        ).decode()
    )
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_the_store_is_bounded_and_lru(tmp_path):
    from hoshikage_api.responses.store import ResponseStore, Stored

    def stored(response_id):
        response = builder().response("completed")
        response.id = response_id
        return Stored(response, ())

    store = ResponseStore(2, path=tmp_path / "a.sqlite3")
    store.put(stored("a"))
    store.put(stored("b"))
    assert store.get("a") is not None
    store.put(stored("c"))
    assert (store.get("a") is not None, store.get("b"), store.get("c") is not None) == (
        True,
        None,
        True,
    )
    assert store.delete("a") and not store.delete("a") and len(store) == 1
    nothing = ResponseStore(0, path=tmp_path / "b.sqlite3")
    nothing.put(stored("a"))
    assert nothing.get("a") is None


def test_the_store_follows_a_reloaded_size(monkeypatch, tmp_path):
    """``responses_store`` applies on reload: the app's store takes the running config's
    size whenever it is used, and the next store evicts down to it."""
    from types import SimpleNamespace

    from hoshikage_api.responses.store import Stored, store_of
    from litestar.datastructures import State

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    server = SimpleNamespace(responses_store=3, responses_store_bytes=1 << 20)
    runtime = SimpleNamespace(config=SimpleNamespace(server=server))
    request = SimpleNamespace(app=SimpleNamespace(state=State({"runtime": runtime})))

    def stored(response_id):
        response = builder().response("completed")
        response.id = response_id
        return Stored(response, ())

    for name in "abc":
        store_of(request).put(stored(name))
    assert len(store_of(request)) == 3
    server.responses_store = 1  # what a reload does to the running config
    store_of(request).put(stored("d"))
    assert len(store_of(request)) == 1 and store_of(request).get("d") is not None


# ---- a real model -------------------------------------------------------------------------


@pytest.mark.gemma
@pytest.mark.timeout(300)
def test_gemma_conversation_with_previous_response_id(gemma_model_path):
    """Gemma 3 270M answers, then continues from its stored answer: the second turn's prompt
    holds the first (read from the cache up to the first answer), and a streamed third
    turn's text equals its deltas. Instructions are not carried over, so each turn sends
    them again, as agents do."""
    config = {"models": [{"name": "gemma", "path": str(gemma_model_path), "n_ctx": 1024}]}
    with running_server(config) as srv:
        sdk = openai.OpenAI(
            base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=120
        )
        told = {"model": "gemma", "instructions": "You are a helpful assistant.", "temperature": 0}
        first = sdk.responses.create(
            **told, input="My name is Ada. Say hello to me.", max_output_tokens=24
        )
        assert first.output_text.strip(), first
        second = sdk.responses.create(
            **told, previous_response_id=first.id, input="What is my name?", max_output_tokens=16
        )
        assert second.output_text.strip()
        assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
        assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
        with sdk.responses.stream(
            **told, previous_response_id=second.id, input="Thank you.", max_output_tokens=12
        ) as stream:
            events = list(stream)
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert events[-1].type in ("response.completed", "response.incomplete")
        last = sdk.responses.retrieve(events[-1].response.id)
        assert last.output_text == "".join(deltas) and deltas
        assert last.usage.input_tokens > second.usage.input_tokens
        # A forced function call, answered through the store.
        weather = {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"],
            },
        }
        called = sdk.responses.create(
            model="gemma",
            input="What is the weather in Paris?",
            tools=[weather],
            tool_choice={"type": "function", "name": "get_weather"},
            max_output_tokens=40,
            temperature=0,
        )
        (call,) = called.output
        assert call.type == "function_call" and isinstance(
            json.loads(call.arguments)["city"], str
        ), called
        answered = sdk.responses.create(
            model="gemma",
            previous_response_id=called.id,
            tools=[weather],
            max_output_tokens=24,
            temperature=0,
            input=[
                {
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": "Sunny, 24 degrees.",
                }
            ],
        )
        assert answered.usage.input_tokens > called.usage.input_tokens
        # Text, or a call again (streamed as it was written, it stays a call even where
        # what follows it goes wrong: docs/backend-llamacpp.md, "Tool calls streamed").
        assert answered.output_text.strip() or any(
            i.type == "function_call" for i in answered.output
        )


# ---- in progress, background, cancel --------------------------------------------------------


def test_a_response_still_generating_is_in_progress_and_a_background_one_can_be_cancelled(
    tiny_model_path,
):
    """GET of a response still generating answers ``in_progress`` (it used to be a 404);
    ``background: true`` answers at once and runs on; ``POST .../cancel`` stops it, and it is
    kept as ``cancelled``. Through the official client."""
    import openai

    from tests.support.server import running_server, wait_for

    config = {
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 8192, "parallel": 2}]
    }
    long = {"model": "tiny", "input": "hi", "max_output_tokens": 6000, "temperature": 0}
    with running_server(config) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x")
        started = client.responses.create(**long, background=True)
        assert started.status == "in_progress" and started.background
        got = client.responses.retrieve(started.id)
        assert got.status == "in_progress"
        cancelled = client.responses.cancel(started.id)
        assert cancelled.status == "cancelled"
        assert client.responses.retrieve(started.id).status == "cancelled"
        wait_for(lambda: server.status()["running"] == 0, 10, "the slot to be released")

        done = client.responses.create(
            model="tiny", input="hi", max_output_tokens=4, background=True
        )
        finished = wait_for(
            lambda: (r := client.responses.retrieve(done.id)).status != "in_progress" and r,
            30,
            "the background response to finish",
        )
        assert finished.status == "incomplete" and finished.output_text
        assert client.responses.cancel(done.id).status == "incomplete"  # finished: as it is

        # A response that waits for its answer is in_progress to another client meanwhile.
        with client.responses.stream(**long) as stream:
            first = next(iter(stream))
            response_id = first.response.id
            assert client.responses.retrieve(response_id).status == "in_progress"
            with pytest.raises(openai.BadRequestError, match="background"):
                client.responses.cancel(response_id)
        with pytest.raises(openai.NotFoundError):
            client.responses.cancel("resp_unknown")


def test_a_streamed_background_response_outlives_its_client_and_streams_again(tiny_model_path):
    """``background: true`` with ``stream: true``: the client that created it may leave,
    the response generates on to its end and is stored, and ``GET ...?stream=true
    &starting_after=N`` replays its events after ``N`` (and follows them while it runs),
    with the official client's ``retrieve(stream=True)``."""
    import openai

    from tests.support.server import running_server, wait_for

    config = {
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 8192, "parallel": 2}]
    }
    body = {"model": "tiny", "input": "hi", "max_output_tokens": 40, "temperature": 0}
    with running_server(config) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x")
        seen = []
        with client.responses.create(**body, background=True, stream=True) as events:
            for event in events:
                seen.append(event)
                if event.type == "response.output_text.delta":
                    break  # the client leaves in the middle of the answer
        response_id = seen[0].response.id
        assert seen[0].type == "response.created" and seen[0].response.background
        finished = wait_for(
            lambda: (r := client.responses.retrieve(response_id)).status != "in_progress" and r,
            30,
            "the background response to finish without its client",
        )
        assert finished.status in ("completed", "incomplete")
        assert finished.usage.output_tokens == 40

        last = seen[-1].sequence_number
        rest = list(client.responses.retrieve(response_id, stream=True, starting_after=last))
        numbers = [e.sequence_number for e in seen + rest]
        assert numbers == list(range(len(numbers)))  # nothing lost, nothing twice
        assert rest[-1].type == f"response.{finished.status}"
        text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
        assert text == finished.output_text
        again = list(client.responses.retrieve(response_id, stream=True))  # from the start
        assert [e.sequence_number for e in again] == numbers

        # A follower of one still running sees it end when it is cancelled.
        running = client.responses.create(
            **{**body, "max_output_tokens": 6000}, background=True, stream=True
        )
        first = next(iter(running))
        running.close()
        follower = client.responses.retrieve(first.response.id, stream=True, starting_after=0)
        next(iter(follower))
        assert client.responses.cancel(first.response.id).status == "cancelled"
        list(follower)  # ends
        assert client.responses.retrieve(first.response.id).status == "cancelled"

        with pytest.raises(openai.BadRequestError, match="stream"):
            plain = client.responses.create(model="tiny", input="hi", max_output_tokens=2)
            client.responses.retrieve(plain.id, stream=True)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve("resp_unknown", stream=True)
        with pytest.raises(openai.BadRequestError, match="starting_after"):
            client.responses.retrieve(response_id, starting_after=3)
        with pytest.raises(openai.NotFoundError, match="model"):
            client.responses.create(model="nope", input="hi", background=True, stream=True)


@pytest.mark.parametrize("keyed", [False, True])
def test_prompt_cache_key_keeps_a_conversation_on_its_own_slot(tiny_model_path, keyed):
    """``prompt_cache_key`` reaches the engine as a slot-affinity hint: conversation A's prompt
    changes wholly (an agent compacted it). Without keys it takes the least recently used
    slot, B's, and B's next turn is read again; with them, A takes its own slot back and
    B's next turn finds its prefix cached."""
    config = {
        "models": [{"name": "tiny", "path": str(tiny_model_path), "parallel": 2, "cache_ram": 0}]
    }
    with running_server(config) as srv:
        sdk = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)

        def turn(text: str, key: str):
            extra = {"prompt_cache_key": key} if keyed else {}
            return sdk.responses.create(
                model="tiny", input=text, max_output_tokens=2, temperature=0, **extra
            ).usage

        b = "hello world red blue green " * 10
        turn(b, "b")
        turn("the cat sat on the mat " * 10, "a")
        turn("one two yes no data " * 10, "a")  # A, compacted
        again = turn(b + "yes", "b")
    cached = again.input_tokens_details.cached_tokens
    if keyed:
        assert cached > again.input_tokens // 2, again  # B's whole first prompt
    else:
        assert cached < again.input_tokens // 2, again  # the template's header at most


def test_input_tokens_are_counted_as_a_response_reads_them(client, server):
    """``client.responses.input_tokens.count``: the ``usage.input_tokens`` of the same request,
    continuations and tools included, and a count (not an error) over the context."""
    fields = {"model": "tiny", "instructions": "Be terse.", "tools": [LOOKUP]}
    first = client.responses.create(input="hello world", max_output_tokens=4, **fields)
    counted = client.responses.input_tokens.count(input="hello world", **fields)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == first.usage.input_tokens
    following = {"previous_response_id": first.id, "input": "the cat", **fields}
    assert (
        client.responses.input_tokens.count(**following).input_tokens
        == client.responses.create(max_output_tokens=2, **following).usage.input_tokens
    )
    long = client.responses.input_tokens.count(model="tiny", input="the cat " * 3000)
    assert long.input_tokens > 4096  # the context: counted all the same
    assert_openai_error(
        http(server, "POST", "/v1/responses/input_tokens", {"model": "tiny"}), 400, param="input"
    )
    assert_openai_error(
        http(server, "POST", "/v1/responses/input_tokens", {"model": "nope", "input": "x"}),
        404,
        code="model_not_found",
    )
    assert_openai_error(
        http(server, "POST", "/responses/input_tokens", {**HI, "previous_response_id": "resp_x"}),
        404,
        code="previous_response_not_found",
    )
