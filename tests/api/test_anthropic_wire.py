"""The Anthropic Messages wire as current clients send it (``anthropic`` 2.17's types, and
what Claude Code 2.1 sends): ``system`` turns inside ``messages``, adaptive thinking with
``display: "omitted"`` (the reasoning carried by a signature this server can verify),
``output_config.effort``, ``context_management`` edits applied to the prompt,
``defer_loading`` tools loaded by a ``tool_reference``, ``?beta=true``, ``metadata``,
``cache_control`` on every block, usage split by the prompt cache, ``max_tokens: 128000``.

The translator's output (the core's chat messages and tools) is checked directly; the same
requests then go through the SDK to a server with a tiny Qwen3 fixture (its real tokenizer
and template), whose output a ``grammar`` fixes."""

from __future__ import annotations

import json

import msgspec
import pytest

anthropic = pytest.importorskip("anthropic")

from hoshikage_api.anthropic import schemas as s  # noqa: E402
from hoshikage_api.anthropic import translate  # noqa: E402
from hoshikage_api.anthropic.signature import restore, sign  # noqa: E402
from hoshikage_api.kernel.errors import ApiError  # noqa: E402

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

EPHEMERAL = {"type": "ephemeral"}
THINK = 'root ::= <think> "hmm" </think> "ok"'
BASH = {
    "name": "Bash",
    "description": "Run a command.",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    "cache_control": EPHEMERAL,
}
LATER = {
    "name": "Later",
    "description": "A tool loaded on demand.",
    "input_schema": {"type": "object", "properties": {}},
    "defer_loading": True,
}


def request(**body) -> s.MessagesRequest:
    body = {"model": "m", "max_tokens": 128000, **body}
    return msgspec.json.decode(json.dumps(body), type=s.MessagesRequest, strict=True)


def turn(role, *blocks):
    return {"role": role, "content": list(blocks)}


def text(t, **extra):
    return {"type": "text", "text": t, **extra}


def thinking(t, signature=None):
    return {"type": "thinking", "thinking": t, "signature": signature or sign(t)}


def use(i, name="Bash", **input):
    return {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": input}


def result(i, content="out"):
    return {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": content}


def test_system_turns_are_rendered_where_they_stand():
    data = request(
        system=[text("billing", cache_control=EPHEMERAL), text("You are an agent.")],
        messages=[
            turn("user", text("hi", cache_control=EPHEMERAL)),
            turn("system", text("# Environment"), text("cwd: /work")),
            {"role": "system", "content": "reminder"},
            turn("user", text("go")),
        ],
        metadata={"user_id": '{"session_id": "x"}'},
    )
    assert [(m["role"], m["content"]) for m in translate.messages(data)] == [
        ("system", "billing\nYou are an agent."),
        ("user", "hi"),
        ("system", "# Environment\ncwd: /work"),
        ("system", "reminder"),
        ("user", "go"),
    ]


def test_an_omitted_thinking_comes_back_through_its_signature_and_only_ours():
    assert restore(sign("deep thought")) == "deep thought"
    forged = sign("deep thought")[:-2] + "AA"
    assert restore(forged) is None and restore("EqQBCkYIBxgCKkA") is None
    data = request(
        messages=[
            turn("user", text("q")),
            turn("assistant", thinking("", sign("plan A")), use(1, command="ls")),
            turn("user", result(1)),
            turn("assistant", thinking("", forged), text("done")),
            turn("user", text("again")),
        ]
    )
    out = translate.messages(data)
    assert out[1]["reasoning_content"] == "plan A"
    assert "reasoning_content" not in out[3]  # a signature not ours restores nothing


def test_clear_thinking_keeps_the_last_turns():
    messages = [
        turn("user", text("a")),
        turn("assistant", thinking("t1"), text("x")),
        turn("user", text("b")),
        turn("assistant", thinking("t2"), text("y")),
        turn("user", text("c")),
        turn("assistant", thinking("t3"), text("z")),
        turn("user", text("d")),
    ]

    def kept(edit):
        data = request(messages=messages, context_management={"edits": [edit]})
        return [m.get("reasoning_content") for m in translate.messages(data)[1::2]]

    clear = {"type": "clear_thinking_20251015"}
    assert kept(clear) == [None, None, "t3"]  # Anthropic's default: the last turn's
    assert kept({**clear, "keep": {"type": "thinking_turns", "value": 2}}) == [None, "t2", "t3"]
    assert kept({**clear, "keep": "all"}) == ["t1", "t2", "t3"]  # as Claude Code sends it
    assert kept({**clear, "keep": {"type": "all"}}) == ["t1", "t2", "t3"]


def test_clear_tool_uses_replaces_the_oldest_results_past_the_trigger():
    messages = [turn("user", text("start"))]
    for i in range(5):
        name = "Read" if i == 0 else "Bash"
        messages += [
            turn("assistant", use(i, name, path="x" * 50)),
            turn("user", result(i, "y" * 400)),
        ]
    edit = {
        "type": "clear_tool_uses_20250919",
        "trigger": {"type": "input_tokens", "value": 100},
        "keep": {"type": "tool_uses", "value": 2},
        "clear_tool_inputs": ["Bash"],
        "exclude_tools": ["Read"],
    }
    data = request(messages=messages, context_management={"edits": [edit]})
    out = translate.messages(data)
    results = [m["content"] for m in out if m["role"] == "tool"]
    cleared = "[This tool result was cleared to save context.]"
    assert results == ["y" * 400, cleared, cleared, "y" * 400, "y" * 400]
    arguments = [json.loads(m["tool_calls"][0]["function"]["arguments"]) for m in out[1::2]]
    assert arguments[:3] == [{"path": "x" * 50}, {}, {}] and arguments[4] == {"path": "x" * 50}
    # Under the trigger, or unable to clear enough: nothing changes.
    for change in (
        {"trigger": {"type": "input_tokens", "value": 10**6}},
        {"clear_at_least": {"type": "input_tokens", "value": 10**6}},
    ):
        data = request(messages=messages, context_management={"edits": [{**edit, **change}]})
        assert [m["content"] for m in translate.messages(data) if m["role"] == "tool"] == [
            "y" * 400
        ] * 5


def test_an_edit_we_cannot_apply_is_a_400_naming_it():
    for edit, param in (
        ({"type": "compact_20260112"}, "context_management.edits[0].type"),
        ({"type": "clear_thinking_20251015", "keep": 3}, "context_management.edits[0].keep"),
        (
            {"type": "clear_tool_uses_20250919", "exclude_tools": 5},
            "context_management.edits[0].exclude_tools",
        ),
        (
            {"type": "clear_tool_uses_20250919", "clear_tool_inputs": "yes"},
            "context_management.edits[0].clear_tool_inputs",
        ),
        (
            {"type": "clear_tool_uses_20250919", "trigger": {"type": "tool_uses", "value": 1}},
            "context_management.edits[0].trigger",
        ),
    ):
        with pytest.raises(ApiError) as info:
            translate.messages(
                request(messages=[turn("user", text("a"))], context_management={"edits": [edit]})
            )
        assert info.value.status == 400 and info.value.param == param


def test_deferred_tools_join_once_a_tool_reference_loads_them():
    ref = {"type": "tool_reference", "tool_name": "Later"}
    search = {"name": "ToolSearch", "input_schema": {"type": "object"}}
    first = request(messages=[turn("user", text("a"))], tools=[BASH, LATER, search])
    assert [t["function"]["name"] for t in translate._tools(first)] == ["Bash", "ToolSearch"]
    later = request(
        messages=[
            turn("user", text("a")),
            turn("assistant", use(1, "ToolSearch", query="later")),
            turn("user", {"type": "tool_result", "tool_use_id": "toolu_1", "content": [ref]}),
        ],
        tools=[BASH, LATER, search],
    )
    assert [t["function"]["name"] for t in translate._tools(later)] == [
        "Bash",
        "Later",
        "ToolSearch",
    ]
    assert translate.messages(later)[-1]["content"] == "Tool loaded: Later"


def test_effort_and_adaptive_thinking_reach_the_template_switches():
    def reasoning(**body):
        return translate._request(request(messages=[turn("user", text("a"))], **body)).reasoning

    assert reasoning(thinking={"type": "adaptive", "display": "omitted"}) is True
    assert reasoning(thinking={"type": "adaptive"}, output_config={"effort": "max"}) == "high"
    assert reasoning(output_config={"effort": "low"}) == "low"
    assert reasoning(thinking={"type": "disabled"}, output_config={"effort": "high"}) is False
    with pytest.raises(ApiError):
        reasoning(thinking={"type": "adaptive", "display": "verbose"})


@pytest.fixture(scope="module")
def server(family_model):
    qwen3 = family_model("qwen35", "Qwen-Qwen3-0.6B")
    with running_server({"models": [{"name": "qwen3", "path": str(qwen3), "n_ctx": 2048}]}) as srv:
        yield srv


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)


def carried(signature: str) -> str:
    """The text a signature of the server carries (its key is the server's own)."""
    import base64

    payload = signature.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


def claude_code_body(messages):
    """What Claude Code 2.1 sends besides its messages (tools cut to one)."""
    return {
        "model": "qwen3",
        "max_tokens": 128000,
        "system": [
            text("x-anthropic-billing-header: cc_version=2.1"),
            text("You are an agent.", cache_control=EPHEMERAL),
        ],
        "messages": messages,
        "tools": [BASH, LATER],
        "metadata": {"user_id": '{"device_id": "d", "session_id": "s"}'},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "extra_body": {"grammar": THINK},
    }


def test_claude_codes_request_through_the_beta_client_keeps_its_reasoning(claude):
    first = [
        turn("user", text("hi", cache_control=EPHEMERAL)),
        turn("system", text("# Environment")),
    ]
    body = claude_code_body(first)
    with claude.beta.messages.stream(
        **body, betas=["context-management-2025-06-27", "effort-2025-11-24"]
    ) as stream:
        events = [e.type for e in stream]
        message = stream.get_final_message()
    assert "thinking" not in [getattr(getattr(e, "delta", None), "type", None) for e in events]
    block, answer = message.content
    assert block.type == "thinking" and block.thinking == "" and carried(block.signature) == "hmm"
    assert answer.text == "ok" and message.stop_reason == "end_turn"
    # Not streamed, the same; sent again, the prompt is found in the prompt cache.
    # (an explicit timeout: the SDK refuses a non-streamed max_tokens this large without one)
    again = claude.beta.messages.create(**body, betas=["context-management-2025-06-27"], timeout=60)
    assert again.content[0].signature and again.content[0].thinking == ""
    assert again.usage.cache_read_input_tokens > 0 and again.usage.cache_creation_input_tokens == 0
    total = again.usage.input_tokens + again.usage.cache_read_input_tokens
    assert (
        total
        == claude.messages.count_tokens(
            model="qwen3", system=body["system"], messages=first, tools=body["tools"]
        ).input_tokens
    )

    # The next turn hands the block back: its reasoning is in the prompt (the template
    # writes the reasoning of the turns after the last user message), unless tampered with.
    def prompt_with(signature):
        messages = [
            *first,
            turn(
                "assistant",
                {"type": "thinking", "thinking": "", "signature": signature},
                use(1, command="ls"),
            ),
            turn("user", result(1)),
        ]
        return claude.messages.count_tokens(model="qwen3", messages=messages).input_tokens

    assert prompt_with(block.signature) > prompt_with(block.signature[:-2] + "AA")


def test_a_too_long_prompt_is_the_error_claude_code_compacts_on(claude):
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="qwen3",
            max_tokens=128000,
            messages=[{"role": "user", "content": "cat " * 3000}],
            timeout=60,
        )
    body = info.value.response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt is too long: ")
    assert body["error"]["message"].endswith(" tokens > 2048 maximum")


def test_max_tokens_zero_warms_the_prompt_cache_and_answers_nothing(claude):
    """As Anthropic's ``max_tokens: 0``: the prompt is read (and cached), nothing comes back."""
    messages = [{"role": "user", "content": "warm me up, please"}]
    warm = claude.messages.create(model="qwen3", max_tokens=0, messages=messages)
    assert warm.content == [] and warm.stop_reason == "max_tokens"
    assert warm.usage.output_tokens == 0 and warm.usage.input_tokens > 0
    with claude.messages.stream(model="qwen3", max_tokens=0, messages=messages) as stream:
        events = [e.type for e in stream]
        streamed = stream.get_final_message()
    assert events == ["message_start", "message_delta", "message_stop"]
    assert streamed.content == [] and streamed.stop_reason == "max_tokens"
    assert streamed.usage.cache_read_input_tokens > 0  # the first one left it in the cache


def test_what_we_cannot_do_is_a_400_naming_it_and_the_rest_is_accepted(claude):
    user = [{"role": "user", "content": "hi"}]
    server = {"type": "url", "url": "https://mcp.example/sse", "name": "x"}
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.beta.messages.create(
            model="qwen3",
            max_tokens=4,
            messages=user,
            mcp_servers=[server],
            betas=["mcp-client-2025-04-04"],
        )
    body = info.value.response.json()
    assert body["type"] == "error" and "'mcp_servers'" in body["error"]["message"]
    # Accepted and deliberately ignored (docs/api-spec.md).
    message = claude.messages.create(
        model="qwen3",
        max_tokens=4,
        messages=user,
        extra_body={
            "service_tier": "auto",
            "speed": "fast",
            "inference_geo": "us",
            "diagnostics": {"previous_message_id": "msg_1"},
            "container": "c1",
            "cache_control": {"type": "ephemeral"},
            "mcp_servers": [],
            "grammar": 'root ::= "ok"',
        },
    )
    assert message.content[0].text == "ok"


def test_count_tokens_counts_a_prompt_longer_than_the_context(claude):
    """Anthropic counts a prompt of any length; Claude Code measures a tool's output so."""
    long = [{"role": "user", "content": "cat " * 3000}]
    count = claude.messages.count_tokens(model="qwen3", messages=long).input_tokens
    assert count > 2048
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="qwen3", max_tokens=8, messages=long)
    assert info.value.response.json()["error"]["message"] == (
        f"prompt is too long: {count} tokens > 2048 maximum"
    )


def test_search_results_read_as_text_in_a_turn_and_in_a_tool_result():
    found = {
        "type": "search_result",
        "source": "https://docs.example/a",
        "title": "A page",
        "content": [text("first"), text("second")],
        "citations": {"enabled": True},
    }
    data = request(
        messages=[
            turn("user", found, text("so?")),
            turn("assistant", use(1, "Search", q="a")),
            turn("user", {"type": "tool_result", "tool_use_id": "toolu_1", "content": [found]}),
        ]
    )
    out = translate.messages(data)
    page = "A page\nhttps://docs.example/a\nfirst\nsecond"
    assert out[0] == {"role": "user", "content": page + "\nso?"}
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": page}
