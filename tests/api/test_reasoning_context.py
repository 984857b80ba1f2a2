"""Reasoning sent back, and asked of a model that cannot think, through the official clients.

* Responses: a ``reasoning`` item in ``input`` (as Codex sends it) becomes the next assistant
  message's ``reasoning_content``, and the Qwen3 template decides: it keeps the reasoning of
  the turn still in progress (after the last user message) and drops earlier turns'.
* A forced call (``tool_choice`` required / a named tool / Anthropic's ``any``) on random
  weights is still a valid call of the schema: the family's grammar alone writes it.
* ``think`` on a model without a thinking mode is Ollama's 400; ``reasoning_effort`` and
  Anthropic's ``thinking`` are ignored there (the answer simply has no reasoning).
"""

from __future__ import annotations

import pytest

anthropic = pytest.importorskip("anthropic")
ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(300)

KEY = "test-key"
THOUGHT = "The user wants the weather in Kyoto; I should call get_weather with the city."
TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def server(family_model):
    config = {
        "server": {"api_key": KEY},
        "unload": {"max_loaded": 2},
        "models": [
            {
                "name": "qwen3",
                "path": str(family_model("qwen35", "Qwen-Qwen3-0.6B")),
                "n_ctx": 2048,
            },
            {
                "name": "qwen25",
                "path": str(family_model("qwen35", "Qwen-Qwen2.5-7B-Instruct")),
                "n_ctx": 2048,
            },
        ],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


def input_tokens(oai, items) -> int:
    return oai.responses.create(
        model="qwen3", input=items, tools=[TOOL], max_output_tokens=1
    ).usage.input_tokens


def reasoning(text: str) -> dict:
    return {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


USER = {"role": "user", "content": "Weather in Kyoto?"}
CALL = {
    "type": "function_call",
    "call_id": "c1",
    "name": "get_weather",
    "arguments": '{"city": "Kyoto"}',
}
RESULT = {"type": "function_call_output", "call_id": "c1", "output": "sunny"}


def test_a_reasoning_item_goes_back_where_the_template_keeps_it(oai):
    """Before a call of the turn in progress: Qwen3's template writes it (the prompt grows
    by the reasoning's tokens); before an answer followed by a new question: it drops it."""
    without = input_tokens(oai, [USER, CALL, RESULT])
    with_reasoning = input_tokens(oai, [USER, reasoning(THOUGHT), CALL, RESULT])
    assert with_reasoning > without + 10
    # Summary text is the fallback when no reasoning_text is sent.
    summary = {
        "type": "reasoning",
        "id": "rs_2",
        "summary": [{"type": "summary_text", "text": THOUGHT}],
    }
    assert input_tokens(oai, [USER, summary, CALL, RESULT]) == with_reasoning
    answered = [
        USER,
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "Thanks!"},
    ]
    old = [USER, reasoning(THOUGHT), answered[1], answered[2]]
    assert input_tokens(oai, old) == input_tokens(oai, answered)


def test_a_stored_responses_reasoning_continues_it(oai):
    """previous_response_id: the stored output's reasoning item is part of the context
    (here nothing follows it, so it is dropped and the continuation still renders)."""
    first = oai.responses.create(
        model="qwen3",
        input="hi",
        max_output_tokens=8,
        extra_body={
            "grammar": 'root ::= <think> "Greet" "." </think> "\\n\\nHello" "!"',
            "temperature": 0,
        },
    )
    assert [item.type for item in first.output] == ["reasoning", "message"]
    items = oai.responses.input_items.list(first.id)
    assert items.data
    second = oai.responses.create(
        model="qwen3", previous_response_id=first.id, input="again", max_output_tokens=1
    )
    assert second.usage.input_tokens > first.usage.input_tokens


def test_ollama_think_on_a_model_without_thinking_is_ollamas_400(server):
    client = ollama.Client(host=server.base_url, headers={"Authorization": f"Bearer {KEY}"})
    messages = [{"role": "user", "content": "hi"}]
    for think in (True, "high"):
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="qwen25", messages=messages, think=think, options={"num_predict": 1})
        assert info.value.status_code == 400
        assert info.value.error == '"qwen25" does not support thinking'
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="qwen25", prompt="hi", think=True, options={"num_predict": 1})
    assert info.value.status_code == 400
    # think false is fine, and a thinking model takes think true.
    assert client.chat(
        model="qwen25", messages=messages, think=False, options={"num_predict": 1}
    ).done
    assert client.chat(
        model="qwen3", messages=messages, think=True, options={"num_predict": 1}
    ).done
    assert "thinking" in client.show("qwen3").capabilities
    assert "thinking" not in client.show("qwen25").capabilities


def test_reasoning_effort_and_anthropic_thinking_are_ignored_without_a_thinking_mode(oai, server):
    chat = oai.chat.completions.create(
        model="qwen25",
        messages=[{"role": "user", "content": "hi"}],
        reasoning_effort="high",
        max_tokens=2,
    )
    assert getattr(chat.choices[0].message, "reasoning_content", None) is None
    response = oai.responses.create(
        model="qwen25", input="hi", reasoning={"effort": "high"}, max_output_tokens=2
    )
    assert [item.type for item in response.output] == ["message"]
    claude = anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)
    message = claude.messages.create(
        model="qwen25",
        max_tokens=1100,
        messages=[{"role": "user", "content": "hi"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"grammar": 'root ::= "Hello" "!"'},
    )
    assert [block.type for block in message.content] == ["text"]


CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["Kyoto", "Nara"]},
                    "days": {"type": "integer"},
                },
                "required": ["city", "days"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
    },
]


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_a_forced_call_through_the_openai_client_is_valid(oai, choice):
    import json

    for stream in (False, True):
        kwargs = dict(
            model="qwen3",
            messages=[{"role": "user", "content": "Weather in Kyoto?"}],
            tools=CHAT_TOOLS,
            tool_choice=choice,
            reasoning_effort="none",
            max_tokens=120,
            temperature=0,
        )
        if not stream:
            choice_ = oai.chat.completions.create(**kwargs).choices[0]
            assert choice_.finish_reason == "tool_calls"
            (call,) = choice_.message.tool_calls
            name, arguments = call.function.name, call.function.arguments
        else:
            name, arguments = None, ""
            for chunk in oai.chat.completions.create(**kwargs, stream=True):
                for c in chunk.choices:
                    for delta in c.delta.tool_calls or ():
                        name = delta.function.name or name
                        arguments += delta.function.arguments or ""
        args = json.loads(arguments)
        if name == "get_weather" or isinstance(choice, dict):
            assert (
                name == "get_weather"
                and args["city"] in ("Kyoto", "Nara")
                and isinstance(args["days"], int)
            )
        else:
            assert name == "ping" and isinstance(args, dict)


def test_anthropic_tool_choice_any_is_a_valid_tool_use(server):
    claude = anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)
    tool = CHAT_TOOLS[0]["function"]
    message = claude.messages.create(
        model="qwen3",
        max_tokens=120,
        messages=[{"role": "user", "content": "Weather in Kyoto?"}],
        tools=[{"name": tool["name"], "input_schema": tool["parameters"]}],
        tool_choice={"type": "any"},
        thinking={"type": "disabled"},
        extra_body={"temperature": 0},
    )
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert message.stop_reason == "tool_use" and use.name == "get_weather"
    assert use.input["city"] in ("Kyoto", "Nara") and isinstance(use.input["days"], int)


def test_the_ollama_surfaces_thinking_signs_are_the_backends():
    from hoshikage_api.ollama.models import THINKING_SIGNS
    from hoshikage_llamacpp.dialects.reasoning import _SIGNS

    assert THINKING_SIGNS == tuple(sign for sign, _ in _SIGNS)


# ---- encrypted_content: reasoning carried by a client that stores nothing ----------------

THINK_THEN_CALL = (
    'root ::= <think> "The user wants the weather in Kyoto." </think> "\\n\\n" '
    '<tool_call> "\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Kyoto\\"}}\\n" '
    "</tool_call>"
)


def test_encrypted_reasoning_comes_back_without_a_store(oai, server):
    """Codex's way (``store: false``, ``include: ["reasoning.encrypted_content"]``): the
    reasoning item carries a sealed copy of its text; sent back with that alone (Codex drops
    the ``reasoning_text``), the reasoning is in the prompt again, exactly as if its text had
    been sent. A token edited anywhere is refused, always with the same message."""
    import httpx

    first = oai.responses.create(
        model="qwen3",
        input=[USER],
        tools=[TOOL],
        store=False,
        include=["reasoning.encrypted_content"],
        max_output_tokens=80,
        extra_body={"grammar": THINK_THEN_CALL, "temperature": 0},
    )
    reasoning_item, call = first.output
    assert reasoning_item.type == "reasoning" and call.type == "function_call"
    text = reasoning_item.content[0].text
    assert text == "The user wants the weather in Kyoto."
    token = reasoning_item.encrypted_content
    assert token and text not in token
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    sent_back = {
        "type": "reasoning",
        "id": reasoning_item.id,
        "summary": [],
        "encrypted_content": token,
    }
    call_item = call.model_dump(exclude_none=True)
    with_token = input_tokens(oai, [USER, sent_back, call_item, result])
    with_text = input_tokens(oai, [USER, reasoning(text), call_item, result])
    without = input_tokens(oai, [USER, call_item, result])
    assert with_token == with_text > without
    # Without the include, no token.
    plain = oai.responses.create(
        model="qwen3",
        input=[USER],
        store=False,
        max_output_tokens=80,
        extra_body={"grammar": THINK_THEN_CALL, "temperature": 0},
    )
    assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None
    # Tampered tokens: one answer, whatever was changed.
    body = {"model": "qwen3", "input": [USER, sent_back, call_item, result], "max_output_tokens": 1}
    messages = set()
    for bad in (
        token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"),
        token[:10],
        "x" + token,
        "hk1.!!",
    ):
        r = httpx.post(
            server.base_url + "/v1/responses",
            json={
                **body,
                "input": [USER, {**sent_back, "encrypted_content": bad}, call_item, result],
            },
            headers={"authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "input[1].encrypted_content"
        assert error["code"] == "invalid_encrypted_content"
        messages.add(error["message"])
    assert len(messages) == 1


def test_a_summary_asked_for_is_the_reasoning_itself(oai, server):
    """``reasoning.summary`` (Codex sends ``auto``): the reasoning item's summary is its own
    text (a local model writes no summary), streamed once the reasoning is done; sent back
    with both, the reasoning goes into the prompt once."""
    import json as _json

    import httpx

    grammar = 'root ::= <think> "Greet" " them" "." </think> "\\n\\nHello" "!"'
    body = {
        "model": "qwen3",
        "input": "hi",
        "reasoning": {"summary": "auto"},
        "max_output_tokens": 20,
        "grammar": grammar,
        "temperature": 0,
    }
    with oai.responses.stream(
        **{k: v for k, v in body.items() if k != "grammar"}, extra_body={"grammar": grammar}
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    reasoning_item = final.output[0]
    assert reasoning_item.type == "reasoning"
    assert [(p.type, p.text) for p in reasoning_item.summary] == [("summary_text", "Greet them.")]
    assert final.reasoning.summary == "auto"
    assert kinds.index("response.reasoning_summary_part.added") > kinds.index(
        "response.reasoning_text.done"
    )
    assert kinds.count("response.reasoning_summary_text.delta") == 1
    # Without the setting: no summary.
    plain = httpx.post(
        server.base_url + "/v1/responses",
        json={**body, "reasoning": None},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=60,
    ).json()
    assert plain["output"][0]["summary"] == []
    both = _json.loads(reasoning_item.model_dump_json(exclude_none=True))
    assert input_tokens(oai, [USER, both, CALL, RESULT]) == input_tokens(
        oai, [USER, reasoning("Greet them."), CALL, RESULT]
    )
