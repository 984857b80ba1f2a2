"""The Responses tools as the model is offered them (hoshikage_api.responses.tools), without a
model: names, what each name stands for, what is left out, and the choice's rules."""

from __future__ import annotations

import msgspec
import pytest
from hoshikage_api.kernel.errors import ApiError
from hoshikage_api.responses import schemas as s
from hoshikage_api.responses.tools import choose, custom_arguments, custom_input, tools_of

NAMESPACE = {
    "type": "namespace",
    "name": "crm",
    "description": "Customer records.",
    "tools": [
        {"type": "function", "name": "lookup", "parameters": {"type": "object"}},
        {
            "type": "custom",
            "name": "query",
            "format": {"type": "grammar", "syntax": "regex", "definition": "[a-z]+"},
        },
    ],
}


def request(**fields) -> s.CreateResponse:
    return msgspec.convert({"model": "m", "input": "hi", **fields}, s.CreateResponse)


def test_a_namespaces_tools_are_offered_as_dotted_names_and_map_back():
    tools = tools_of(request(tools=[NAMESPACE, {"type": "custom", "name": "sh"}]))
    names = [f["function"]["name"] for f in tools.functions]
    assert names == ["crm.lookup", "crm.query", "sh"]
    assert (tools.target("crm.lookup").name, tools.target("crm.lookup").namespace) == (
        "lookup",
        "crm",
    )
    assert tools.target("crm.query").kind == "custom"
    query = tools.functions[1]["function"]
    assert query["strict"] is True
    assert query["parameters"]["properties"]["input"]["pattern"] == "^([a-z]+)$"
    assert "strict" not in tools.functions[2]["function"]  # free text: nothing to enforce
    # A name the model made up is a plain function of that name.
    assert tools.target("other").kind == "function" and tools.target("other").namespace is None


def test_tools_that_cannot_run_here_are_left_out_and_listed():
    tools = tools_of(
        request(
            tools=[
                {"type": "web_search", "external_web_access": False},
                {"type": "function", "name": "f"},
                {"type": "mcp", "server_label": "docs", "server_url": "http://x"},
                {"type": "apply_patch"},
            ]
        )
    )
    assert [f["function"]["name"] for f in tools.functions] == ["f"]
    assert list(tools.ignored) == [
        {"index": 0, "type": "web_search"},
        {"index": 2, "type": "mcp", "name": "docs"},
        {"index": 3, "type": "apply_patch"},
    ]


@pytest.mark.parametrize(
    "choice, allowed, forced",
    [
        ({"type": "function", "name": "lookup", "namespace": "crm"}, 3, "crm.lookup"),
        ({"type": "function", "name": "crm.lookup"}, 3, "crm.lookup"),
        ({"type": "custom", "name": "query", "namespace": "crm"}, 3, "crm.query"),
        ({"type": "custom", "name": "sh"}, 3, "sh"),
    ],
)
def test_a_choice_names_a_tool_as_the_client_declared_it(choice, allowed, forced):
    data = request(tools=[NAMESPACE, {"type": "custom", "name": "sh"}], tool_choice=choice)
    functions, tool_choice = choose(data, tools_of(data))
    assert len(functions) == allowed and tool_choice["function"]["name"] == forced


def test_allowed_tools_keep_only_those():
    data = request(
        tools=[NAMESPACE, {"type": "function", "name": "f"}],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "lookup", "namespace": "crm"}],
        },
    )
    functions, mode = choose(data, tools_of(data))
    assert [f["function"]["name"] for f in functions] == ["crm.lookup"] and mode == "required"


@pytest.mark.parametrize(
    "choice, param",
    [
        ({"type": "custom", "name": "lookup", "namespace": "crm"}, "tool_choice.name"),
        ({"type": "function", "name": "query", "namespace": "crm"}, "tool_choice.name"),
        ({"type": "web_search_preview"}, "tool_choice.type"),
        ({"type": "mcp", "server_label": "docs"}, "tool_choice.type"),
        (
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]},
            "tool_choice.tools[0].type",
        ),
    ],
)
def test_a_choice_of_a_tool_not_there_or_not_runnable_is_a_400(choice, param):
    data = request(tools=[NAMESPACE], tool_choice=choice)
    with pytest.raises(ApiError) as info:
        choose(data, tools_of(data))
    assert info.value.status == 400 and info.value.param == param


def test_a_custom_calls_input_round_trips_through_its_arguments():
    for text in ("", "*** Begin Patch\n+x\n*** End Patch", 'quotes " and \\ and ünïcode'):
        assert custom_input(custom_arguments(text)) == text
    assert custom_input("not json") == "not json"  # what the model wrote, kept
    assert custom_input('{"other": 1}') == '{"other": 1}'
