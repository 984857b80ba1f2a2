"""Replays of what the real agent programs sent (tests/clients/fixtures, recorded by the
client tests from the pinned versions), without the programs: every recorded request is sent
again, with the grammar that steered it, to a server with the same tiny models, and must be
answered as it was, with success. Each request, and each event of each answer, also goes
through the official SDK's own types (``anthropic``'s and ``openai``'s TypedDicts and
pydantic models): what the programs send is what the SDKs describe, and what we answer is
what they parse."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")

from tests.support.clients import Exchange  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(600)

FIXTURES = sorted((Path(__file__).parents[1] / "clients" / "fixtures").glob("*.json"))


def exchanges():
    for path in FIXTURES:
        data = json.loads(path.read_text())
        for i, x in enumerate(data["exchanges"]):
            if x["body"] is not None:
                yield pytest.param(x, id=f"{path.stem}-{i}-{x['path'].split('?')[0]}")


@pytest.fixture(scope="module")
def server(family_model):
    """The models the recordings were made with (tests/clients/conftest.py)."""
    from tests.clients.conftest import serving

    with running_server(serving(family_model), startup_timeout=60) as srv:
        yield srv


def _events(body: bytes) -> list[dict]:
    """The JSON data of each server-sent event."""
    out = []
    for line in body.decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


def _validate_request(path: str, body: dict) -> None:
    from pydantic import TypeAdapter

    if path.startswith("/v1/messages"):
        from anthropic.types.beta import message_create_params

        TypeAdapter(message_create_params.MessageCreateParamsStreaming).validate_python(body)
    elif path.startswith("/v1/chat/completions"):
        from openai.types.chat import completion_create_params

        TypeAdapter(completion_create_params.CompletionCreateParamsStreaming).validate_python(body)


def _validate_answer(path: str, body: bytes) -> int:
    """Each event of a streamed answer through the SDK's models; how many there were."""
    from pydantic import TypeAdapter

    events = _events(body)
    if path.startswith("/v1/messages"):
        from anthropic.types.beta import BetaRawMessageStreamEvent

        adapter = TypeAdapter(BetaRawMessageStreamEvent)
        for event in events:
            if event["type"] != "ping":  # the SDK's stream skips pings before its types
                adapter.validate_python(event)
    elif path.startswith("/v1/chat/completions"):
        from openai.types.chat import ChatCompletionChunk

        for event in events:
            ChatCompletionChunk.model_validate(event)
    return len(events)


@pytest.mark.parametrize("recorded", list(exchanges()))
def test_a_recorded_request_is_answered_as_it_was(server, recorded):
    path, body = recorded["path"], recorded["body"]
    _validate_request(path, body)
    sent = json.dumps({**body, **recorded["steered"]}).encode()
    with httpx.Client(base_url=server.base_url, timeout=300) as client:
        r = client.request(
            recorded["method"], path, content=sent, headers={"content-type": "application/json"}
        )
    exchange = Exchange(
        recorded["method"], path, {}, sent, r.status_code, dict(r.headers), r.content
    )
    assert exchange.error() is None and r.status_code == recorded["status"], exchange.error()
    if body.get("stream"):
        assert _validate_answer(path, r.content) > 2


def test_every_pinned_program_has_its_recording():
    from tests.clients.conftest import fixture_path
    from tests.support.clients import PINS

    recorded = {p for p in PINS if fixture_path(p).exists()}
    # Codex's recordings come with its own client tests.
    assert recorded >= {"@anthropic-ai/claude-code", "opencode-ai", "@qwen-code/qwen-code"}
