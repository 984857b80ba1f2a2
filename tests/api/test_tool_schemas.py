"""Tool schemas never fail a request whose calls no grammar holds, and a bound too large to
matter is dropped from the grammar, not refused.

Claude Code offers a ``Workflow`` tool whose ``script`` has ``maxLength: 524288`` with
``tool_choice`` auto: written into a grammar that bound alone would be megabytes. Only a
constrained call (``tool_choice`` required or named, a ``strict`` tool) builds a grammar, and
only there may a schema it cannot enforce (a lower bound of a billion items) be a 400, in
the surface's own error shape, naming ``server.max_grammar_bytes``."""

from __future__ import annotations

import json

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

#: Claude Code 2.1.332's Workflow tool, cut to the property that matters.
WORKFLOW = {
    "name": "Workflow",
    "description": "Run a workflow script.",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"script": {"type": "string", "maxLength": 524288}},
        "additionalProperties": False,
    },
}
#: A lower bound no grammar can hold.
BOMB = {
    "name": "bomb",
    "input_schema": {
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "string"}, "minItems": 10**9}},
        "required": ["xs"],
    },
}
USER = [{"role": "user", "content": "Run it."}]


@pytest.fixture(scope="module")
def server(family_model):
    qwen3 = family_model("qwen35", "Qwen-Qwen3-0.6B")
    config = {"models": [{"name": "qwen3", "path": str(qwen3), "n_ctx": 2048}]}
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def _function(tool, strict=False):
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    return {"type": "function", "function": {**function, **({"strict": True} if strict else {})}}


@pytest.mark.parametrize("tool", [WORKFLOW, BOMB], ids=["vast-upper-bound", "vast-lower-bound"])
def test_an_unconstrained_request_never_fails_on_a_schema(claude, oai, tool):
    message = claude.messages.create(
        model="qwen3", max_tokens=8, messages=USER, tools=[tool], tool_choice={"type": "auto"}
    )
    assert message.type == "message"
    chat = oai.chat.completions.create(
        model="qwen3", max_tokens=8, messages=USER, tools=[_function(tool)]
    )
    assert chat.choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_a_vast_upper_bound_is_dropped_from_a_constrained_call(claude, oai):
    """Forced (named, and ``any``) and strict: each builds its grammar without the bound."""
    for choice in ({"type": "tool", "name": "Workflow"}, {"type": "any"}):
        message = claude.messages.create(
            model="qwen3", max_tokens=40, messages=USER, tools=[WORKFLOW], tool_choice=choice
        )
        assert message.stop_reason in ("tool_use", "max_tokens")
    chat = oai.chat.completions.create(
        model="qwen3", max_tokens=40, messages=USER, tools=[_function(WORKFLOW, strict=True)]
    )
    assert chat.choices[0].finish_reason in ("length", "stop", "tool_calls")
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": WORKFLOW["input_schema"]}}
    chat = oai.chat.completions.create(
        model="qwen3", max_tokens=40, messages=USER, response_format=fmt
    )
    assert chat.choices[0].finish_reason in ("length", "stop")


def test_a_constrained_call_that_cannot_be_enforced_is_a_400_naming_the_key(claude, oai):
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="qwen3", max_tokens=8, messages=USER, tools=[BOMB], tool_choice={"type": "any"}
        )
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "server.max_grammar_bytes" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(
            model="qwen3", max_tokens=8, messages=USER, tools=[_function(BOMB, strict=True)]
        )
    error = info.value.response.json()["error"]
    assert "server.max_grammar_bytes" in error["message"] and error["param"] == "tools"


def test_without_vast_bounds_keeps_values_and_lower_bounds():
    from hoshikage_llamacpp.grammar.schema import without_vast_bounds

    schema = {
        "type": "object",
        "properties": {
            "maxLength": {"type": "string", "maxLength": 10, "minLength": 5000},
            "s": {"type": "string", "maxLength": 524288, "default": {"maxLength": 10**9}},
            "xs": {"type": "array", "maxItems": 9000, "enum": [{"maxItems": 10**9}]},
        },
    }
    out = without_vast_bounds(schema, 4096)
    assert out["properties"]["maxLength"] == {"type": "string", "maxLength": 10, "minLength": 5000}
    assert out["properties"]["s"] == {"type": "string", "default": {"maxLength": 10**9}}
    assert out["properties"]["xs"] == {"type": "array", "enum": [{"maxItems": 10**9}]}
    assert without_vast_bounds(schema, None) is schema
    assert json.dumps(without_vast_bounds(schema, 10**6)) == json.dumps(schema)
