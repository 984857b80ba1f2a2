"""The Responses API's ``item_reference`` inputs, end to end: the official ``openai`` client
against a real ``hoshikage serve`` with the real llama.cpp backend (the tiny model, its
answers forced by a grammar). A reference names an item by its ``id``: an output or input
item of a stored response, or an item of a conversation. The server is the oracle: a
request with references reads exactly the prompt of the same request with the items
themselves. (The Vercel AI SDK's OpenAI provider sends its earlier steps so:
tests/clients/test_ai_sdk.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")

from tests.support.clients import gbnf_literal  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ANSWER = "Noted."
FORCED = {"grammar": f"root ::= {gbnf_literal(ANSWER)}"}


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {"models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 2048}]}
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=60)


def prompt_tokens(client, items) -> int:
    reply = client.responses.create(
        model="tiny", input=items, max_output_tokens=16, extra_body=FORCED
    )
    return reply.usage.input_tokens


def ref(item_id: str) -> dict:
    return {"type": "item_reference", "id": item_id}


def test_references_to_a_stored_responses_items_read_those_items(client):
    first = client.responses.create(model="tiny", input="hello there", extra_body=FORCED)
    (said,) = first.output
    (asked,) = client.responses.input_items.list(first.id).data
    plain = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "and then?"},
    ]
    referenced = [ref(asked.id), ref(said.id), {"role": "user", "content": "and then?"}]
    assert prompt_tokens(client, referenced) == prompt_tokens(client, plain)
    # Streamed, the same; and what the response was generated from lists the items.
    with client.responses.stream(
        model="tiny", input=referenced, max_output_tokens=16, extra_body=FORCED
    ) as stream:
        streamed = stream.get_final_response()
    assert streamed.usage.input_tokens == prompt_tokens(client, plain)
    listed = client.responses.input_items.list(streamed.id, order="asc").data
    assert [item.id for item in listed[:2]] == [asked.id, said.id]


def test_a_function_call_sent_earlier_is_referenced(client):
    """An input item of a stored response (here a call and its result the client sent) is
    referenced as well as an output item."""
    tools = [{"type": "function", "name": "clock", "parameters": {"type": "object"}}]
    call = {"type": "function_call", "call_id": "call_1", "name": "clock", "arguments": "{}"}
    result = {"type": "function_call_output", "call_id": "call_1", "output": "noon"}
    plain = [{"role": "user", "content": "time?"}, call, result]
    first = client.responses.create(model="tiny", input=plain, tools=tools, extra_body=FORCED)
    items = client.responses.input_items.list(first.id, order="asc").data
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]
    referenced = [ref(item.id) for item in items]
    counts = [
        client.responses.create(
            model="tiny", input=inputs, tools=tools, max_output_tokens=16, extra_body=FORCED
        ).usage.input_tokens
        for inputs in (plain, referenced)
    ]
    assert counts[0] == counts[1]


def test_references_to_a_conversations_items(client):
    conversation = client.conversations.create(
        items=[{"role": "user", "content": "from a conversation"}]
    )
    (item,) = client.conversations.items.list(conversation.id).data
    plain = [{"role": "user", "content": "from a conversation"}]
    assert prompt_tokens(client, [ref(item.id)]) == prompt_tokens(client, plain)
    # Added to another conversation by reference: a copy of the item.
    other = client.conversations.create()
    added = client.conversations.items.create(other.id, items=[ref(item.id)])
    assert [(i.id, i.content[0].text) for i in added.data] == [(item.id, "from a conversation")]


def test_an_item_not_stored_is_openais_404(client):
    unstored = client.responses.create(model="tiny", input="hi", store=False, extra_body=FORCED)
    deleted = client.responses.create(model="tiny", input="hi", extra_body=FORCED)
    client.responses.delete(deleted.id)
    for item_id in (unstored.output[0].id, deleted.output[0].id, "msg_unknown"):
        with pytest.raises(openai.NotFoundError) as missing:
            prompt_tokens(client, [ref(item_id), {"role": "user", "content": "hi"}])
        error = missing.value.body
        assert error["message"].startswith(f"Item with id '{item_id}' not found.")
        assert error["param"] == "input" and error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad:
        prompt_tokens(client, [{"type": "item_reference"}])
    assert bad.value.body["param"] == "input[0].id"
    assert (
        client.responses.create(model="tiny", input="hi", extra_body=FORCED).status == "completed"
    )
