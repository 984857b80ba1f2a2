"""OpenAI's Conversations API and the Responses API's ``conversation``, end to end: the
official ``openai`` client's ``client.conversations`` against a real ``hoshikage serve``
with the real llama.cpp backend (the tiny model, its answers forced by a grammar), and the
official OpenAI Agents SDK's own session (``OpenAIConversationsSession``) and
``conversation_id`` runs, through a steering proxy, with the Qwen3 fixture calling a tool.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from tests.api.helpers import assert_openai_error  # noqa: E402
from tests.support.clients import gbnf_literal, recording_proxy  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

KEY = "test-key"
#: The answer every response of these tests gives (a grammar forces it).
ANSWER = "Noted."
FORCED = {"grammar": f"root ::= {gbnf_literal(ANSWER)}"}


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    config = {
        "server": {"api_key": KEY},
        "models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 2048}],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def http(server, method: str, path: str, body=None) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    content = None if body is None else json.dumps(body)
    return httpx.request(
        method, server.base_url + path, content=content, headers=headers, timeout=60
    )


def texts(items) -> list[tuple[str, str]]:
    """(role, text) of each message item."""
    return [(item.role, item.content[0].text) for item in items if item.type == "message"]


def test_a_conversation_is_created_read_changed_and_deleted(client, server):
    conversation = client.conversations.create(
        items=[
            {"role": "developer", "content": "Be brief."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        metadata={"topic": "demo"},
    )
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "demo"}
    assert client.conversations.retrieve(conversation.id) == conversation
    updated = client.conversations.update(conversation.id, metadata={"topic": "other"})
    assert updated.metadata == {"topic": "other"} and updated.created_at == conversation.created_at

    added = client.conversations.items.create(
        conversation.id,
        items=[{"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
    )
    assert [item.role for item in added.data] == ["assistant", "user"]
    assert added.first_id == added.data[0].id and added.last_id == added.data[1].id
    assert added.data[0].content[0].type == "output_text"

    newest_first = client.conversations.items.list(conversation.id)
    assert texts(newest_first.data) == [
        ("user", "bye"),
        ("assistant", "hello"),
        ("user", "hi"),
        ("developer", "Be brief."),
    ]
    assert all(item.id and item.status == "completed" for item in newest_first.data)
    # Pages of one, oldest first: the SDK follows ``has_more`` and ``after``.
    page = client.conversations.items.list(conversation.id, order="asc", limit=1)
    assert len(page.data) == 1 and page.has_more
    assert [item.id for item in page] == [item.id for item in reversed(newest_first.data)]

    second = newest_first.data[2]
    assert client.conversations.items.retrieve(second.id, conversation_id=conversation.id) == second
    after_delete = client.conversations.items.delete(second.id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id
    assert texts(client.conversations.items.list(conversation.id, order="asc").data) == [
        ("developer", "Be brief."),
        ("assistant", "hello"),
        ("user", "bye"),
    ]

    deleted = client.conversations.delete(conversation.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (
        conversation.id,
        True,
        "conversation.deleted",
    )
    base = f"/v1/conversations/{conversation.id}"
    for method, path, body in [
        ("GET", base, None),
        ("POST", base, {"metadata": {}}),
        ("DELETE", base, None),
        ("GET", base + "/items", None),
        ("POST", base + "/items", {"items": [{"role": "user", "content": "x"}]}),
        ("GET", f"{base}/items/{second.id}", None),
        ("DELETE", f"{base}/items/{second.id}", None),
    ]:
        assert_openai_error(http(server, method, path, body), 404, code="conversation_not_found")


def test_a_response_in_a_conversation_reads_it_and_adds_its_turn(client):
    conversation = client.conversations.create(
        items=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    first = client.responses.create(
        model="tiny",
        conversation=conversation.id,
        input="what next?",
        max_output_tokens=8,
        extra_body=FORCED,
    )
    assert first.conversation.id == conversation.id and first.output_text == ANSWER
    # The conversation's items came first: the prompt is that of the same items as input.
    stateless = client.responses.create(
        model="tiny",
        max_output_tokens=8,
        extra_body=FORCED,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": "what next?"},
        ],
    )
    assert stateless.conversation is None
    assert first.usage.input_tokens == stateless.usage.input_tokens
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert texts(items) == [
        ("developer", "Be brief."),
        ("user", "hi"),
        ("user", "what next?"),
        ("assistant", ANSWER),
    ]
    assert items[-1].id == first.output[0].id

    # The object form, and ``store: false``: the conversation still grows.
    second = client.responses.create(
        model="tiny",
        conversation={"id": conversation.id},
        input=[{"role": "user", "content": "and then?"}],
        store=False,
        max_output_tokens=8,
        extra_body=FORCED,
    )
    assert second.conversation.id == conversation.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert texts(client.conversations.items.list(conversation.id, order="asc").data)[-2:] == [
        ("user", "and then?"),
        ("assistant", ANSWER),
    ]
    # A streamed one too.
    with client.responses.stream(
        model="tiny",
        conversation=conversation.id,
        input="last?",
        max_output_tokens=8,
        extra_body=FORCED,
    ) as stream:
        streamed = stream.get_final_response()
    assert streamed.conversation.id == conversation.id
    assert len(client.conversations.items.list(conversation.id, limit=100).data) == 8

    # Its input tokens are counted as a response in it reads them; counting adds nothing.
    counted = client.responses.input_tokens.count(
        model="tiny", conversation=conversation.id, input="more?"
    )
    assert counted.input_tokens == (
        client.responses.create(
            model="tiny",
            input=[*listed_input(client, conversation.id), {"role": "user", "content": "more?"}],
            max_output_tokens=1,
        ).usage.input_tokens
    )
    assert len(client.conversations.items.list(conversation.id, limit=100).data) == 8
    # A request that fails adds nothing.
    with pytest.raises(openai.BadRequestError) as failed:
        client.responses.create(
            model="tiny", conversation=conversation.id, input="x " * 3000, max_output_tokens=8
        )
    assert failed.value.body["code"] == "context_length_exceeded"
    assert len(client.conversations.items.list(conversation.id, limit=100).data) == 8


def listed_input(client, conversation: str) -> list[dict]:
    """The conversation's items, oldest first, as a response's ``input``."""
    items = client.conversations.items.list(conversation, order="asc", limit=100).data
    return [item.model_dump(exclude_none=True) for item in items]


def test_bad_conversation_requests_are_clear_errors(client, server):
    conversation = client.conversations.create(items=[{"role": "user", "content": "hi"}])
    (item,) = client.conversations.items.list(conversation.id).data
    base = f"/v1/conversations/{conversation.id}"
    user = {"role": "user", "content": "x"}
    for method, path, body, status, param in [
        ("POST", "/v1/conversations", {"items": [{"type": "bogus"}]}, 400, "items[0].type"),
        ("POST", "/v1/conversations", {"items": [user] * 21}, 400, "items"),
        ("POST", "/v1/conversations", {"metadata": {f"k{i}": "v" for i in range(17)}}, 400, None),
        ("POST", "/v1/conversations", {"items": [{"role": "user"}]}, 400, "items[0]"),
        ("POST", base, {}, 400, None),
        ("POST", base + "/items", {"items": []}, 200, None),
        ("POST", base + "/items", {"items": [{**user, "id": item.id}]}, 400, "items[0].id"),
        ("POST", base + "/items", {"items": [{**user, "id": "m"}] * 2}, 400, "items[1].id"),
        ("GET", base + "/items?after=msg_nope", None, 400, "after"),
        ("GET", base + "/items?limit=0", None, 400, None),
        ("GET", base + "/items/msg_nope", None, 404, None),
        ("DELETE", base + "/items/msg_nope", None, 404, None),
        (
            "POST",
            "/v1/responses",
            {"model": "tiny", "input": "x", "conversation": "conv_nope"},
            404,
            "conversation",
        ),
        (
            "POST",
            "/v1/responses",
            {"model": "tiny", "input": [{**user, "id": item.id}], "conversation": conversation.id},
            400,
            "input[0].id",
        ),
    ]:
        response = http(server, method, path, body)
        if status == 200:
            assert response.status_code == 200, response.text
        else:
            assert_openai_error(response, status, param=param)
    # Nothing was added by the refused requests.
    assert [i.id for i in client.conversations.items.list(conversation.id).data] == [item.id]


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/conversations"),
        ("GET", "/v1/conversations/conv_x"),
        ("POST", "/v1/conversations/conv_x"),
        ("DELETE", "/v1/conversations/conv_x"),
        ("GET", "/v1/conversations/conv_x/items"),
        ("POST", "/v1/conversations/conv_x/items"),
        ("GET", "/conversations/conv_x/items/msg_x"),
        ("DELETE", "/conversations/conv_x/items/msg_x"),
    ],
)
def test_every_route_needs_the_key(server, method, path):
    for key in ("", "Bearer wrong"):
        r = httpx.request(
            method,
            server.base_url + path,
            json={} if method == "POST" else None,
            headers={"authorization": key},
            timeout=10,
        )
        assert_openai_error(r, 401, type="authentication_error")


def test_conversations_survive_a_restart(tiny_model_path, tmp_path):
    config = {"models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 2048}]}
    env = {"XDG_DATA_HOME": str(tmp_path)}
    with running_server(config, env=env) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
        conversation = client.conversations.create(metadata={"k": "v"})
        client.responses.create(
            model="tiny", conversation=conversation.id, input="hi", extra_body=FORCED
        )
    with running_server(config, env=env) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
        assert client.conversations.retrieve(conversation.id).metadata == {"k": "v"}
        assert texts(client.conversations.items.list(conversation.id, order="asc").data) == [
            ("user", "hi"),
            ("assistant", ANSWER),
        ]


def test_the_conversation_store_is_bounded_and_lru(tmp_path):
    from hoshikage_api.responses import schemas as s
    from hoshikage_api.responses.conversation_store import ConversationStore

    def message(text: str) -> s.MessageItem:
        return s.MessageItem(role="user", content=text, id=f"msg_{text[:8]}", status="completed")

    store = ConversationStore(2, max_bytes=10_000, path=tmp_path / "c.sqlite3")
    a = store.create([message("a")], None)
    b = store.create([], {"k": "v"})
    assert store.items(a.id) == (message("a"),)  # a use: b is now the least recent
    c = store.create([message("c")], None)
    assert (store.get(a.id) is not None, store.get(b.id), store.get(c.id) is not None) == (
        True,
        None,
        True,
    )
    # Over the byte budget: the least recently used goes, never the one just written.
    store.add(a.id, [message("x" * 6000)])
    store.add(c.id, [message("y" * 6000)])
    assert store.get(a.id) is None and store.items(c.id)[-1] == message("y" * 6000)
    assert store.bytes < 10_000 and len(store) == 1
    assert store.delete(c.id) and not store.delete(c.id) and store.bytes == 0
    # The same file, opened again, holds what was committed.
    d = store.create([message("d")], None)
    again = ConversationStore(2, path=tmp_path / "c.sqlite3")
    assert again.items(d.id) == (message("d"),) and again.bytes == store.bytes


# ---- the OpenAI Agents SDK ----------------------------------------------------------------

SECRET = "SECRET-9931"
NL = "\n"


def _steer(path: str, body) -> dict | None:
    """Qwen3's own output for the agent's turns: a ``get_secret`` call, then, once the
    tool's result is the last input, the answer with it."""
    if not isinstance(body, dict) or "input" not in body:
        return None
    last = json.dumps(body["input"][-1:]) if isinstance(body["input"], list) else body["input"]
    head = f'"<think>" {gbnf_literal(NL + "ok" + NL)} "</think>"'
    if SECRET in last:
        return {"grammar": f"root ::= {head} {gbnf_literal(NL * 2 + 'It is ' + SECRET)}"}
    call = json.dumps({"name": "get_secret", "arguments": {}})
    return {
        "grammar": f"root ::= {head} {gbnf_literal(f'{NL}<tool_call>{NL}{call}{NL}</tool_call>')}"
    }


@pytest.fixture(scope="module")
def qwen3_server(family_model, tmp_path_factory):
    path = family_model("qwen35", "Qwen-Qwen3-0.6B")
    config = {"models": [{"name": "qwen3", "path": str(path), "n_ctx": 4096}]}
    env = {"XDG_DATA_HOME": str(tmp_path_factory.mktemp("data"))}
    with running_server(config, env=env, startup_timeout=60) as srv:
        yield srv


def test_the_agents_sdk_keeps_its_session_in_a_conversation(qwen3_server):
    agents = pytest.importorskip("agents")
    from agents.memory import OpenAIConversationsSession

    calls = []

    @agents.function_tool
    def get_secret() -> str:
        """Return the secret."""
        calls.append(1)
        return SECRET

    async def session_runs(base_url: str):
        client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0)
        model = agents.OpenAIResponsesModel("qwen3", client)
        agent = agents.Agent(name="a", instructions="Use tools.", tools=[get_secret], model=model)
        session = OpenAIConversationsSession(openai_client=client)
        first = await agents.Runner.run(agent, "What is the secret?", session=session)
        second = await agents.Runner.run(agent, "Once more?", session=session)
        items = await session.get_items()
        conversation = session.session_id
        popped = await session.pop_item()
        left = await session.get_items()
        await session.clear_session()
        gone = None
        try:
            await client.conversations.retrieve(conversation)
        except openai.NotFoundError as exc:
            gone = exc
        # Server-managed: the run names the conversation, the server adds each turn.
        server_side = await client.conversations.create()
        third = await agents.Runner.run(agent, "The secret?", conversation_id=server_side.id)
        fourth = await agents.Runner.run(agent, "Again?", conversation_id=server_side.id)
        listed = [i async for i in client.conversations.items.list(server_side.id, order="asc")]
        return first, second, items, popped, left, gone, third, fourth, listed, server_side.id

    with recording_proxy(qwen3_server.base_url, _steer) as proxy:
        agents.set_tracing_disabled(True)
        first, second, items, popped, left, gone, third, fourth, listed, managed_id = asyncio.run(
            session_runs(proxy.base_url)
        )
    # Every request succeeded but the one that checks the cleared session is gone.
    (failure,) = proxy.failures()
    assert failure.startswith("GET /v1/conversations/conv_") and "status 404" in failure
    assert [r.final_output for r in (first, second, third, fourth)] == [f"It is {SECRET}"] * 4
    assert len(calls) == 4
    turn = ["message", "reasoning", "function_call", "function_call_output", "reasoning", "message"]
    assert [item["type"] for item in items] == turn * 2
    assert popped == items[-1] and len(left) == len(items) - 1
    assert gone is not None
    assert [item.type for item in listed] == turn * 2
    # The session's second run sent the first turn back as its input; the server-managed
    # second run sent only its new message: the first turn is in the conversation above.
    bodies = proxy.requests("/v1/responses")
    session, managed = bodies[:4], bodies[4:]
    assert "What is the secret?" in json.dumps(session[2]["input"])
    assert [b.get("conversation") for b in managed] == [managed_id] * 4
    assert "The secret?" not in json.dumps(managed[2]["input"])
