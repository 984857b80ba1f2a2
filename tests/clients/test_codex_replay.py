"""Codex's recorded requests (fixtures/codex/, written by test_codex.py), replayed fast
without Codex or node:

* every ``/v1/responses`` body validates against the ``openai`` SDK's own request types
  (``ResponseCreateParamsStreaming``, each input item as ``ResponseInputItemParam``), and the
  only field Codex sends beyond them is ``client_metadata``;
* every request, replayed in order against a real server, is answered with success; the
  Responses turns go through the SDK (its streaming event types parse every event, and the
  final response is the SDK's ``Response``), steered as in the session, and the second
  turn's reasoning item carries a token sealed by this server's first turn.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pydantic = pytest.importorskip("pydantic")

from tests.clients.codex import FAMILIES, SECRET, THOUGHT_1, fixture_path, serve, steer_for  # noqa: E402

pytestmark = pytest.mark.timeout(300)

RECORDINGS = [fixture_path(mode, model) for mode in ("responses", "oss") for model in FAMILIES]


def recorded(path) -> list[dict]:
    return json.loads(path.read_text())["exchanges"]


def turns(requests: list[dict]) -> list[dict]:
    return [r["body"] for r in requests if r["path"].rstrip("/").endswith("/responses")]


def test_the_pinned_version_has_recordings_of_both_modes_and_models():
    for path in RECORDINGS:
        assert path.exists(), f"{path}: re-record with HOSHIKAGE_RECORD_FIXTURES=1"


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_codex_requests_are_the_sdks_own_types(path):
    from openai.types.responses import ResponseInputItemParam, ToolParam
    from openai.types.responses.response_create_params import (
        ResponseCreateParamsBase,
        ResponseCreateParamsStreaming,
    )

    params = pydantic.TypeAdapter(ResponseCreateParamsStreaming)
    item = pydantic.TypeAdapter(ResponseInputItemParam)
    tool = pydantic.TypeAdapter(ToolParam)
    known = set(ResponseCreateParamsBase.__annotations__) | {"stream"}
    for body in turns(recorded(path)):
        params.validate_python(body)
        # (The params type holds these as Iterables, which pydantic checks only lazily.)
        for entry in body["input"]:
            item.validate_python(entry)
        for entry in body["tools"]:
            tool.validate_python(entry)
        with pytest.raises(pydantic.ValidationError):
            tool.validate_python({"type": "bogus"})
        assert set(body) - known == {"client_metadata"}, set(body) - known
        kinds = {tool["type"] for tool in body["tools"]}
        assert {"function", "namespace", "web_search"} <= kinds


@pytest.fixture(scope="module")
def server(family_model):
    with serve(family_model) as srv:
        yield srv


def _split(body: dict) -> tuple[dict, dict]:
    """The fields ``responses.create`` takes as arguments, and the rest (its extra_body)."""
    from openai.types.responses.response_create_params import ResponseCreateParamsBase

    known = set(ResponseCreateParamsBase.__annotations__) | {"stream"}
    return {k: v for k, v in body.items() if k in known}, {
        k: v for k, v in body.items() if k not in known
    }


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_codex_requests_replayed_through_the_sdk(server, path):
    steer = steer_for(path.stem.split("-", 1)[1].rsplit("@", 1)[0])
    from openai.types.responses import Response

    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    sealed: dict[str, str] = {}
    finals = []
    for request in recorded(path):
        if not request["path"].rstrip("/").endswith("/responses"):
            r = httpx.request(
                request["method"], server.base_url + request["path"], json=request.get("body")
            )
            assert r.status_code == request["status"] == 200, (request, r.text)
            if request["path"] == "/api/pull":
                assert json.loads(r.text.splitlines()[-1]) == {"status": "success"}
            continue
        body = json.loads(json.dumps(request["body"]))  # a copy, tokens sealed anew below
        for entry in body["input"]:
            if entry.get("type") == "reasoning" and entry.get("encrypted_content") in sealed:
                entry["encrypted_content"] = sealed[entry["encrypted_content"]]
        args, extra = _split(body)
        assert request["steered"] == steer(request["path"], request["body"])
        extra.update(request["steered"])
        events = list(client.responses.create(**args, extra_body=extra))
        assert events[-1].type == "response.completed", events[-1]
        final = Response.model_validate(events[-1].response.model_dump())
        finals.append(final)
        assert final.model_extra["ignored_tools"] == [
            {"index": i, "type": "web_search"}
            for i, tool in enumerate(body["tools"])
            if tool["type"] == "web_search"
        ]
        for item in final.output:
            if item.type == "reasoning":
                n = len(sealed) + 1
                sealed[f"SEALED-{n}"] = item.encrypted_content
    first, second = finals
    assert [item.type for item in first.output] == ["reasoning", "function_call"]
    assert first.output[0].content[0].text == THOUGHT_1
    assert first.output[1].name == "exec_command"
    assert [item.type for item in second.output] == ["reasoning", "message"]
    assert second.output_text == f"The note says {SECRET}."
